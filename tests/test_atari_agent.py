"""Atari through the same trainer: DQN Zoo's Double DQN + Nature CNN + layer norm, evaluation, frames vs steps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from plasticity_runner import load_sweep
from plasticity_runner.agents.dqn import DQNAgent, frame_clock
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.envs.atari import human_normalized_score
from plasticity_runner.evaluation import evaluate, evaluate_agent
from plasticity_runner.nets import build_network
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
    "agent.target_update_frames=80",  # 5 training steps of 16 frames; the prefill is 256 frames
    "env.eval_every_steps=12",
    "env.eval_frames=1600",
    "env.max_episode_frames=400",
    "diagnostics.curvature.enabled=false",
    "diagnostics.gradcov.enabled=false",
    "torch_threads=1",
    "progress=none",
    "device=cpu",
]


def test_atari_layer_norm_run(tmp_path, monkeypatch):
    cfg = make_cfg(ATARI_TINY, tiny=False)
    assert cfg.architecture.name == "nature_cnn" and cfg.agent.double_dqn and cfg.intervention.layer_norm is not None
    copies = []
    update_target = DQNAgent.update_target
    monkeypatch.setattr(DQNAgent, "update_target", lambda self, step: (copies.append(step), update_target(self, step)))
    train(cfg, tmp_path)
    # DQN Zoo's frame counter: 256 prefill frames + 16 per step passes a multiple of 80 at 320, 400, 480 ->
    # steps 4, 9 (and 14, beyond the run)
    assert copies == [4, 9]
    df = load_sweep(tmp_path)
    assert df["interventions"].unique().tolist() == ["layer_norm"] and df["env.game"].unique().tolist() == ["pong"]
    m = lambda phase, name: df[(df.phase == phase) & (df.metric == name)].set_index("step").value  # noqa: E731
    # frames vs steps: (ceil(64 / 1) prefill + step * 4 agent steps) * 1 env, frames = 4 x that
    assert m("train", "env_steps").to_dict() == {6: 64 + 24, 12: 64 + 48}
    assert m("train", "frames").to_dict() == {6: 4 * 88, 12: 4 * 112}
    ret = m("eval", "episode_return")[12]
    assert np.isclose(m("eval", "human_normalized_score")[12], human_normalized_score("pong", ret))
    assert np.isclose(human_normalized_score("pong", ret), (ret - (-20.7)) / (14.6 - (-20.7)))
    # 1600 frames = 400 agent steps, games truncated at 400 frames (100 agent steps + the reset step)
    assert m("eval", "num_episodes")[12] == 3
    assert m("probe", "probe_loss").index.tolist() == [0, 6, 12]


# ------------------------------------------------------------------ the presets and env=atari


def test_env_atari_alone_is_dqn_zoos_double_dqn():
    cfg = make_cfg(["env=atari"], tiny=False)
    assert (cfg.architecture.name, cfg.architecture.shared_bias, cfg.optimizer.name) == ("nature_cnn", True, "rmsprop")
    a = cfg.agent
    assert (a.name, a.double_dqn, a.batch_size, a.update_every_env_steps) == ("dqn_zoo_double_q", True, 32, 4)
    assert (a.replay_capacity, a.learning_starts, a.target_update_steps, a.target_update_frames) == (
        1_000_000,
        50_000,
        None,
        120_000,
    )
    assert (a.epsilon_end, a.epsilon_decay_steps, a.epsilon_decay_frames) == (0.01, None, 4_000_000)
    assert (a.td_loss_scale, a.td_error_clip) == (0.5, 1 / 32)
    assert (cfg.env.eval_protocol.value, cfg.env.eval_frames, cfg.env.eval_epsilon) == ("frames", 500_000, 0.01)
    validate(cfg)
    clock = frame_clock(cfg)
    assert (clock.prefill_frames, clock.frames_per_step) == (200_000, 16)  # 50k transitions x 4; 4 agent steps x 4


def test_env_atari_defaults_stay_overridable():
    cfg = make_cfg(["env=atari", "architecture=mlp", "agent.batch_size=64", "optimizer=adam"], tiny=False)
    assert (cfg.architecture.name, cfg.agent.batch_size, cfg.optimizer.name) == ("mlp", 64, "adam")
    cfg = make_cfg(["env=atari", "agent=dqn"], tiny=False)
    assert (cfg.agent.name, cfg.agent.batch_size, cfg.agent.target_update_frames) == ("dqn", 512, None)
    assert make_cfg([], tiny=False).architecture.name == "mlp"  # the default env chooses nothing


def test_atari_ln_is_dqn_zoo_with_appendix_a3():
    cfg = make_cfg(["experiment=atari_ln"], tiny=False)
    a = cfg.agent
    assert (a.name, cfg.architecture.shared_bias, cfg.intervention.layer_norm is not None) == (
        "dqn_zoo_double_q",
        True,
        True,
    )
    assert (a.replay_capacity, a.epsilon_end, a.learning_starts) == (100_000, 0.1, 5000)  # A.3 (+ DQN Zoo's 5%)
    assert (a.target_update_frames, a.epsilon_decay_frames, a.td_error_clip, a.td_loss_scale) == (
        120_000,
        4_000_000,
        1 / 32,
        0.5,
    )
    assert cfg.total_steps * 16 == 200_000_000 and cfg.env.eval_protocol.value == "frames"
    validate(cfg)
    with pytest.raises(ConfigError, match="set exactly one of agent.target_update_steps"):
        validate(make_cfg(["experiment=atari_ln", "agent.target_update_steps=10"], tiny=False))
    with pytest.raises(ConfigError, match="env.eval_frames"):
        validate(make_cfg(["experiment=atari_ln", "env.eval_frames=1001"], tiny=False))


# ------------------------------------------------------------------------------ the network


def test_shared_bias_head():
    cfg = make_cfg(["env=atari"], tiny=False).architecture
    torch.manual_seed(0)
    net = build_network(cfg, (4, 84, 84), 6)
    head = net.head
    assert head.linear.bias is None and head.shared_bias.shape == (1,)
    assert abs(float(head.shared_bias.detach())) <= 512**-0.5  # DQN Zoo's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    x = torch.rand(3, 4, 84, 84)
    features = net.features(x)
    assert torch.allclose(net(x), features @ head.linear.weight.T + head.shared_bias, atol=1e-6)
    with torch.no_grad():
        head.shared_bias += 1.0  # one bias moves every action's value alike
    assert torch.allclose(net(x), features @ head.linear.weight.T + head.shared_bias, atol=1e-6)
    per_action = build_network(make_cfg(["architecture=nature_cnn"], tiny=False).architecture, (4, 84, 84), 6)
    count = lambda n: sum(p.numel() for p in n.parameters())  # noqa: E731
    assert count(per_action) - count(net) == 6 - 1
    with pytest.raises(ValueError, match="architecture.shared_bias"):
        build_network(cfg, (4, 84, 84), 6, head="two_hot")


# --------------------------------------------------------------------------- evaluation protocols


class ScriptedGames:
    """An evaluation env whose games end at scripted steps: copy i's games are ``script[i]``, a list
    of (length in agent steps, reward per step); rewards are the raw game rewards."""

    def __init__(self, script, num_envs, frame_skip=4):
        self.script, self.num_envs, self.game = script, num_envs, None
        self.cfg = type("Cfg", (), {"frame_skip": frame_skip})()
        self.steps_taken = 0

    def make_eval_env(self, num_envs, stream):
        assert num_envs == self.num_envs
        self.pos = [[0, 0] for _ in range(num_envs)]  # (game index, step within the game)
        return self

    def reset(self):
        return torch.zeros(self.num_envs, 2)

    def step(self, actions):
        self.steps_taken += 1
        rewards, envs, returns = [], [], []
        for i, (g, t) in enumerate(self.pos):
            length, r = self.script[i][g] if g < len(self.script[i]) else (10**9, 0.0)
            rewards.append(r)
            if t + 1 == length:
                envs.append(i)
                returns.append(r * length)
                self.pos[i] = [g + 1, 0]
            else:
                self.pos[i] = [g, t + 1]
        info = {
            "episode_envs": torch.tensor(envs, dtype=torch.int64),
            "episode_returns": torch.tensor(returns, dtype=torch.float64),
        }
        return SimpleNamespace(obs=torch.zeros(self.num_envs, 2), reward=torch.tensor(rewards), info=info)

    def close(self):
        pass


class Greedy:
    def act(self, obs, epsilon, generator):
        return torch.zeros(obs.shape[0], dtype=torch.int64)


def env_cfg(**kw):
    return SimpleNamespace(**{"eval_epsilon": 0.0, "num_envs": 2, "eval_episodes": 2, **kw})


def test_eval_protocol_frames_counts_completed_games_in_the_budget():
    # 2 copies x 4 frames per agent step: 80 frames = 10 agent steps per copy. Copy 0: games of 3
    # steps (reward 1 each) and 5 steps (reward 2) end in the budget, a third is cut; copy 1: one game
    # of 12 steps, cut. DQN Zoo's mean over completed games: (3 + 10) / 2.
    env = ScriptedGames([[(3, 1.0), (5, 2.0), (4, 7.0)], [(12, 1.0)]], num_envs=2)
    out = evaluate_agent(env, Greedy(), env_cfg(eval_protocol="frames", eval_frames=80), seed=0, stream=1)
    assert env.steps_taken == 10 and out["num_episodes"] == 2 and out["episode_return"] == 6.5
    # no game completed: the unfinished games' returns so far (copy 0: 10 x 1, copy 1: 10 x 3)
    env = ScriptedGames([[(50, 1.0)], [(50, 3.0)]], num_envs=2)
    out = evaluate_agent(env, Greedy(), env_cfg(eval_protocol="frames", eval_frames=80), seed=0, stream=1)
    assert out["num_episodes"] == 0 and out["episode_return"] == 20.0


def test_eval_protocol_episodes_keeps_the_first_game_of_each_copy():
    env = ScriptedGames([[(3, 1.0), (5, 2.0)], [(12, 1.0)]], num_envs=2)
    out = evaluate_agent(env, Greedy(), env_cfg(eval_protocol="episodes"), seed=0, stream=1)
    assert out["num_episodes"] == 2 and out["episode_return"] == (3 + 12) / 2
    env = ScriptedGames([[(3, 1.0), (5, 2.0)], [(12, 1.0)]], num_envs=2)
    assert evaluate(env, Greedy(), 2, 0.0, seed=0, stream=1).tolist() == [3.0, 12.0]


# ------------------------------------------- the shared bias with the probes and the interventions


def test_gradient_covariance_counts_the_shared_bias_once():
    """The shared bias's per-sample gradient is the sum over actions: against single-sample backward passes."""
    from plasticity_runner.probes.gradcov import gradient_gram, perturbation_sample_losses

    from .test_gradcov import loop_gram

    torch.manual_seed(0)
    arch = SimpleNamespace(name="mlp", width=8, num_layers=2, shared_bias=True)
    net = build_network(arch, (3,), 4).double().eval()
    inputs = torch.randn(12, 3, dtype=torch.float64)
    losses = perturbation_sample_losses(net, inputs, eps_seed=5)
    y = losses.samples[1]
    expected = loop_gram(net, lambda i: ((net(inputs[i : i + 1])[0] - y[i]) ** 2).mean(), 12)
    for factorise in (True, False):
        torch.testing.assert_close(gradient_gram(losses, chunk_size=5, factorise_linear=factorise), expected)


@pytest.mark.parametrize(
    "names",
    [
        [
            "crelu",
            "layer_norm",
            "spectral_norm",
            "weight_decay",
            "shrink_perturb",
            "reset_last_layer",
            "redo",
            "reset_optimizer",
        ],
        ["redo", "plasticity_injection", "reset_optimizer"],
    ],
    ids=["all_but_injection_and_two_hot", "with_injection"],
)
def test_interventions_with_dqn_zoos_network_and_loss(names, monkeypatch):
    from . import test_interventions as ti

    monkeypatch.setitem(
        ti.ARCH_OVERRIDES,
        "dqn_zoo",
        [
            "architecture=nature_cnn_shared_bias",
            "architecture.hidden=8",
            "agent.td_loss_scale=0.5",
            "agent.td_error_clip=0.03125",
        ],
    )
    ti.run_with_probe(names, "dqn_zoo")
