"""The replay ratio (``agent.replay_ratio``: K optimizer updates per environment step, each on its
own sampled batch) against a hand count: after s training steps (updates) the environment has
been stepped ceil(s / K) times, in the first step of every K; s batches were sampled and s
optimizer steps taken; target copies and the logged ``env_steps`` follow; refused combinations
name the key."""

from __future__ import annotations

import pytest
import torch

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import load_run
from plasticity_runner.trainer import build_train_state, env_steps_done, finish_step, learn_step, prefill, train

from .conftest import make_cfg

CPU = torch.device("cpu")


def counted_run(ratio: int, steps: int, target_every: int):
    cfg = make_cfg([f"agent.replay_ratio={ratio}", f"agent.target_update_steps={target_every}", "agent.batch_size=16"])
    state = build_train_state(cfg, CPU)
    prefill(state, int(cfg.agent.learning_starts))
    counts = {"env": [], "sample": 0, "update": 0, "target": 0}
    env_step, sample = state.env.step, state.replay.sample
    opt_step, update_target = state.agent.optimizer.step, state.agent.update_target

    def count_env(actions):
        counts["env"].append(state.step + 1)  # the training step this env step belongs to
        return env_step(actions)

    def count_sample(*args, **kwargs):
        counts["sample"] += 1
        return sample(*args, **kwargs)

    def count_update(*args, **kwargs):
        counts["update"] += 1
        return opt_step(*args, **kwargs)

    def count_target(step):
        counts["target"] += 1
        return update_target(step)

    state.env.step, state.replay.sample = count_env, count_sample
    state.agent.optimizer.step, state.agent.update_target = count_update, count_target
    size0 = state.replay.size
    for _ in range(steps):
        learn_step(state, cfg.agent, 0.5)
        finish_step(state, cfg.agent)
    return cfg, state, counts, size0


@pytest.mark.parametrize("ratio", [1, 3, 4])
def test_updates_samples_and_env_steps_by_hand(ratio):
    cfg, state, counts, size0 = counted_run(ratio, steps=12, target_every=5)
    acting_steps = [s for s in range(1, 13) if (s - 1) % ratio == 0]  # 1, 1+K, 1+2K, ... (hand count)
    assert counts["env"] == acting_steps
    assert len(acting_steps) == -(-12 // ratio) == env_steps_done(12, cfg.agent)
    assert counts["sample"] == 12 and counts["update"] == 12  # one batch and one update per step
    assert counts["target"] == 12 // 5  # target copies count updates
    assert state.replay.size - size0 == len(acting_steps) * int(cfg.env.num_envs)


def test_a_run_logs_env_steps_and_reward_per_env_step(tmp_path):
    cfg = make_cfg(["agent.replay_ratio=4", "total_steps=40", "log_every_steps=10", "probe.every_steps=20"])
    train(cfg, tmp_path)
    rows = load_run(tmp_path).query("phase == 'train' and metric == 'env_steps'").sort_values("step")
    n, prefill_steps = int(cfg.env.num_envs), -(-int(cfg.agent.learning_starts) // int(cfg.env.num_envs))
    assert rows.value.tolist() == [(prefill_steps + -(-s // 4)) * n for s in (10, 20, 30, 40)]  # 3, 5, 8, 10 env steps
    reward = load_run(tmp_path).query("phase == 'train' and metric == 'reward_mean'").value
    assert ((reward >= 0) & (reward <= 1)).all()  # a mean per env step (classification rewards are 0 / 1)


@pytest.mark.parametrize(
    "overrides", [["agent.replay_ratio=2", "agent.update_every_env_steps=2"], ["agent.replay_ratio=0"]]
)
def test_bad_combinations_name_the_key(overrides):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(overrides))
    assert "agent.replay_ratio" in str(info.value)
