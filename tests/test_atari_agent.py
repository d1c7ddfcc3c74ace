"""Atari through the same trainer: Double DQN + Nature CNN + layer norm, evaluation, frames vs steps."""

from __future__ import annotations

import numpy as np

from plasticity_runner import load_sweep
from plasticity_runner.envs.atari import human_normalized_score
from plasticity_runner.trainer import train

from .conftest import make_cfg

ATARI_TINY = [
    "experiment=atari_ln",
    "total_steps=12",
    "log_every_steps=6",
    "probe.every_steps=6",
    "probe.steps=3",
    "probe.num_inputs=32",
    "probe.batch_size=8",
    "probe.num_targets=2",
    "agent.learning_starts=64",
    "agent.batch_size=8",
    "agent.target_update_steps=5",
    "env.eval_every_steps=12",
    "env.eval_episodes=2",
    "env.max_episode_frames=400",
    "diagnostics.curvature.enabled=false",
    "diagnostics.gradcov.enabled=false",
    "torch_threads=1",
    "progress=none",
    "device=cpu",
]


def test_atari_layer_norm_run(tmp_path):
    cfg = make_cfg(ATARI_TINY, tiny=False)
    assert cfg.architecture.name == "nature_cnn" and cfg.agent.double_dqn and cfg.intervention.layer_norm is not None
    train(cfg, tmp_path)
    df = load_sweep(tmp_path)
    assert df["interventions"].unique().tolist() == ["layer_norm"] and df["env.game"].unique().tolist() == ["pong"]
    m = lambda phase, name: df[(df.phase == phase) & (df.metric == name)].set_index("step").value  # noqa: E731
    # frames vs steps: (ceil(64 / 1) prefill + step * 4 agent steps) * 1 env, frames = 4 x that
    assert m("train", "env_steps").to_dict() == {6: 64 + 24, 12: 64 + 48}
    assert m("train", "frames").to_dict() == {6: 4 * 88, 12: 4 * 112}
    ret = m("eval", "episode_return")[12]
    assert np.isclose(m("eval", "human_normalized_score")[12], human_normalized_score("pong", ret))
    assert np.isclose(human_normalized_score("pong", ret), (ret - (-20.7)) / (14.6 - (-20.7)))
    assert m("probe", "probe_loss").index.tolist() == [0, 6, 12]
