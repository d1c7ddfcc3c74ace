"""Hare & Tortoise (``interventions/hare_tortoise.py``) against a loop computing the EMA: after
every optimizer step ``tortoise = ema * tortoise + (1 - ema) * theta`` (from the network as
built), and every ``every_steps`` steps the online network (the hare) takes the tortoise's values;
the optimizer state is kept, or forgotten with ``reset_optimizer_state``; the tortoise survives a
checkpoint; bad values name their keys."""

from __future__ import annotations

import pytest
import torch

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.trainer import build_train_state

from .conftest import make_cfg
from .test_interventions import agent_with, cfg_with


def run(extra: list[str], steps: int, check=None):
    state = agent_with(["hare_tortoise"], extra=extra, steps=0)
    agent = state.agent
    for step in range(1, steps + 1):
        batch = state.replay.sample(16, state.replay_generator)
        state.step = step
        agent.learn(batch, step, run_hooks=False)
        theta = [p.detach().clone() for p in agent.online.parameters()]  # the hare after its update
        kept = {
            id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in agent.optimizer.state.items()
        }
        agent.after_step(step)
        if check:
            check(step, theta, kept, state)
    return state


@pytest.mark.parametrize("reset_state", [False, True])
def test_tortoise_is_the_ema_and_the_hare_is_reset_to_it(reset_state):
    ema, every = 0.75, 3
    extra = [
        f"intervention.hare_tortoise.ema={ema}",
        f"intervention.hare_tortoise.every_steps={every}",
        f"intervention.hare_tortoise.reset_optimizer_state={str(reset_state).lower()}",
    ]
    oracle: list[torch.Tensor] = []

    def check(step, theta, kept, state):
        agent, ht = state.agent, state.agent.interventions[0]
        if not oracle:  # theta_0: the network as built, which the tortoise started from
            oracle.extend(t.double() for t in built)
        for i, p in enumerate(theta):  # the loop: tortoise <- ema * tortoise + (1 - ema) * theta_t
            oracle[i] = ema * oracle[i] + (1 - ema) * p.double()
        for mine, t in zip(ht.tortoise, oracle):
            torch.testing.assert_close(mine.double(), t, rtol=1e-6, atol=1e-7)
        params = list(agent.online.parameters())
        if step % every == 0:
            for p, t in zip(params, oracle):
                torch.testing.assert_close(p.double(), t, rtol=1e-6, atol=1e-7)
            if reset_state:
                assert len(agent.optimizer.state) == 0
            else:
                for p in params:
                    for k, v in kept[id(p)].items():
                        torch.testing.assert_close(agent.optimizer.state[p][k], v, rtol=0, atol=0)
        else:
            for p, t in zip(params, theta):
                torch.testing.assert_close(p, t, rtol=0, atol=0)

    built = [
        p.detach().clone()
        for p in build_train_state(
            cfg_with(["hare_tortoise"], extra=extra), torch.device("cpu")
        ).agent.online.parameters()
    ]
    state = run(extra, 7, check)
    assert state.agent.interventions[0].resets == 2


def test_the_tortoise_survives_a_checkpoint():
    extra = ["intervention.hare_tortoise.ema=0.5", "intervention.hare_tortoise.every_steps=100"]
    state = run(extra, 3)
    restored = build_train_state(cfg_with(["hare_tortoise"], extra=extra), torch.device("cpu"))
    restored.load_state_dict(state.state_dict())
    for a, b in zip(restored.agent.interventions[0].tortoise, state.agent.interventions[0].tortoise):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(
        not torch.equal(a, p)
        for a, p in zip(restored.agent.interventions[0].tortoise, restored.agent.online.parameters())
    )


@pytest.mark.parametrize("override, key", [("ema=1.0", "ema"), ("ema=-0.1", "ema"), ("every_steps=0", "every_steps")])
def test_bad_values_name_their_keys(override, key):
    with pytest.raises(ConfigError, match=f"intervention.hare_tortoise.{key}"):
        validate(make_cfg(["intervention=[hare_tortoise]", f"intervention.hare_tortoise.{override}"]))
