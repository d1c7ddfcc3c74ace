"""GraMa dormancy (``probes/grama.py``) against a loop over units: the gradient of the training
loss on copies, each unit's mean |gradient| over its incoming weights, over its layer's mean, the
fraction at or under tau; training's networks untouched; a real run writes it at its pauses."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity_runner.metrics import load_run
from plasticity_runner.probes.base import copied_networks
from plasticity_runner.probes.grama import GRAMA_DORMANT, grama_dormancy
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_interventions import agent_with


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_fractions_by_a_loop_over_units(tau):
    state = agent_with([], steps=3)
    agent = state.agent
    batch = state.replay.sample(32, torch.Generator().manual_seed(0))
    before = copy.deepcopy(agent.online.state_dict())
    got = grama_dormancy(agent, batch, tau, seed=7)
    # the oracle: the same loss's gradient on another copy, then a loop over the units of each layer
    copies = copied_networks(agent.networks)
    agent.loss(batch, copies).backward()
    dormant = total = 0
    for g in copies.online.unit_groups():
        grad = g.incoming[0].weight.grad
        rows = [float(grad[i].abs().sum()) / grad[i].numel() for i in range(grad.shape[0])]
        mean = sum(rows) / len(rows)
        n = sum(1 for r in rows if r / mean <= tau)
        assert got[f"{GRAMA_DORMANT}/{g.name}"] == pytest.approx(n / len(rows))
        dormant, total = dormant + n, total + len(rows)
    assert got[GRAMA_DORMANT] == pytest.approx(dormant / total)
    assert 0 < got[GRAMA_DORMANT] < 1  # tau 0.5 and 1 split these units
    for k, v in agent.online.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_a_run_writes_it_at_every_pause(tmp_path):
    train(make_cfg(["total_steps=20", "probe.every_steps=10", "diagnostics.grama.num_inputs=32"]), tmp_path)
    rows = load_run(tmp_path).query("metric == @GRAMA_DORMANT")
    assert sorted(rows.step.tolist()) == [0, 10, 20] and set(rows.phase) == {"stats"}
