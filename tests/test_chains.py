"""Continual chains (``env.schedule``): switches at the right training steps, ``train/segment``, pauses
at switches, each segment's task as the plain environment plays it, and resume mid-segment."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner.envs.classification import ClassificationMDP
from plasticity_runner.envs.minatar import MinAtarVectorEnv
from plasticity_runner.metrics import load_sweep
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill, train

from .conftest import make_cfg
from .test_minatar import MINATAR_TINY
from .test_resume import assert_crash_then_restart_equals_uninterrupted

CPU = torch.device("cpu")
MINATAR_CHAIN = "env.schedule=[{game:breakout,steps:15},{game:seaquest,steps:10},{game:asterix,steps:10}]"
DIGITS_CHAIN = (
    "env.schedule=[{task:true_label,steps:15},{task:random_label,label_seed:3,steps:10},{permutation_seed:5,steps:10}]"
)


def test_minatar_chain_switches_after_the_step_that_closes_a_segment():
    cfg = make_cfg(MINATAR_TINY + [MINATAR_CHAIN], tiny=False)
    state = build_train_state(cfg, CPU)
    assert state.env.obs_shape == (10, 10, 10) and state.env.num_actions == 6  # seaquest's channels, all 6 actions
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    games = []
    for _ in range(40):
        learn_step(state, agent_cfg, 0.5)
        finish_step(state, agent_cfg)
        games.append(state.env.minatar_game)  # the game the next step will play
    assert games[:14] == ["breakout"] * 14 and games[14:24] == ["seaquest"] * 10 and games[24:] == ["asterix"] * 16
    # asterix has 4 channels: the chain's other 6 stay zero
    assert state.obs.shape == (1, 10, 10, 10) and not state.obs[:, 4:].any()


def test_train_segment_and_pauses_around_each_switch(tmp_path):
    cfg = make_cfg(
        MINATAR_TINY + [MINATAR_CHAIN, "env.pause_at_switch=true", "log_every_steps=5", "checkpoint.enabled=false"],
        tiny=False,
    )
    assert train(cfg, tmp_path)["status"] == "complete"
    df = load_sweep(tmp_path)
    seg = df[(df.phase == "train") & (df.metric == "segment")].set_index("step").value
    assert seg.to_dict() == {5: 0, 10: 0, 15: 0, 16: 1, 20: 1, 25: 1, 26: 2, 30: 2, 35: 2, 40: 2}
    assert sorted(df[(df.phase == "probe") & (df.metric == "probe_loss")].step) == [0, 15, 16, 20, 25, 26, 40]


def test_classification_segments_are_the_plain_tasks():
    base = dict(
        dataset="digits", data_dir="data", download=False, num_envs=4, num_images=None, label_seed=0, task="true_label"
    )
    sched = [
        {"task": "true_label", "steps": 3},
        {"task": "random_label", "label_seed": 3, "steps": 3},
        {"permutation_seed": 5, "steps": 3},
    ]
    chain = ClassificationMDP(OmegaConf.create({**base, "schedule": sched}), CPU, seed=1)
    plain_env = ClassificationMDP(OmegaConf.create(base), CPU, seed=1)
    # segment 0 is the plain MDP draw for draw
    assert torch.equal(chain.reset(), plain_env.reset())
    for a in range(3):
        r1, r2 = chain.step(torch.full((4,), a)), plain_env.step(torch.full((4,), a))
        assert torch.equal(r1.obs, r2.obs) and torch.equal(r1.reward, r2.reward)
    replay = chain.make_replay(64)
    replay.add(r1.record)
    unpermuted = replay.lookup(replay.o_tm1[:4]).clone()
    chain.switch(1)
    relabelled = ClassificationMDP(OmegaConf.create({**base, "task": "random_label", "label_seed": 3}), CPU, seed=1)
    assert torch.equal(chain.labels, relabelled.labels)
    chain.switch(2)
    assert torch.equal(chain.labels, plain_env.labels)  # true labels again ...
    obs = chain.reset()
    idx = chain.obs_idx % len(chain.images)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(obs.flatten(1), chain.images[idx].flatten(1)[:, perm])  # ... on permuted pixels
    assert not torch.equal(obs, chain.images[idx])
    assert torch.equal(replay.lookup(replay.o_tm1[:4]), unpermuted)  # old transitions keep their inputs


@pytest.mark.parametrize("schedule, step", [(MINATAR_CHAIN, 33), (DIGITS_CHAIN, 33)])
def test_chain_resumes_mid_segment_bit_identically(tmp_path, monkeypatch, schedule, step):
    """Checkpoints at 0 and 20 (mid-segment 1); a crash at 33 resumes from 20, through the switch at 25."""
    overrides = (MINATAR_TINY if "game" in schedule else []) + [schedule, "env.num_envs=2"]
    tiny = "game" not in schedule
    reference = assert_crash_then_restart_equals_uninterrupted(
        lambda: make_cfg(overrides, tiny=tiny), tmp_path, monkeypatch, step
    )
    assert set(reference[reference.metric == "segment"].value) == {0, 1, 2}


@pytest.mark.parametrize(
    "schedule, message",
    [
        ([{"game": "breakout", "steps": 0}], r"env.schedule.0.steps"),
        ([{"game": "breakout", "steps": 5}, {"game": "pong", "steps": 5}], r"env.schedule.1.game"),
        ([{"game": "breakout", "steps": 5, "speed": 2}], r"env.schedule.0"),
    ],
)
def test_bad_minatar_schedules_name_the_segment(schedule, message):
    with pytest.raises(ValueError, match=message):
        MinAtarVectorEnv(OmegaConf.create({"name": "minatar", "schedule": schedule}), CPU, 0)


def test_bad_schedules_are_config_errors_naming_the_key():
    from plasticity_runner.config import ConfigError, validate

    cases = [
        (["env.schedule=[{task:true_label,steps:5},{task:shuffled,steps:5}]"], "env.schedule.1.task"),
        (["env.schedule=[{task:true_label,steps:5},{label_seed:x,steps:5}]"], "env.schedule.1.label_seed"),
        (MINATAR_TINY + ["env.schedule=[{game:breakout,steps:-1}]"], "env.schedule.0.steps"),
        (MINATAR_TINY + ["env.game=pong"], "env.game"),
    ]
    for overrides, key in cases:
        with pytest.raises(ConfigError) as info:
            validate(make_cfg(overrides, tiny=False))
        assert info.value.key == key
