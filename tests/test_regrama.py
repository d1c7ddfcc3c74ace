"""ReGraMa (``interventions/regrama.py``, ``units.gradient_scores``) against a loop over units: each
unit's score is the mean |gradient| of its incoming weight row over the layer's mean of those;
units at or under tau are recycled as ReDo recycles (fresh incoming row and bias from the recorded
seed, outgoing columns zeroed, their optimizer-state entries zeroed); metrics count them."""

from __future__ import annotations

import pytest
import torch

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions.units import gradient_scores

from .conftest import make_cfg
from .test_interventions import agent_with, rebuild_fresh


def loop_scores(grad: torch.Tensor) -> list[float]:
    rows = [sum(abs(float(v)) for v in grad[i].flatten()) / grad[i].numel() for i in range(grad.shape[0])]
    mean = sum(rows) / len(rows)
    return [r / mean for r in rows]


def test_scores_by_a_loop_over_units():
    state = agent_with(["regrama"], extra=["intervention.regrama.every_steps=1000"], steps=2)
    for g in state.agent.online.unit_groups():
        grad = g.incoming[0].weight.grad
        assert grad is not None
        torch.testing.assert_close(gradient_scores(g), torch.tensor(loop_scores(grad)), rtol=1e-5, atol=1e-7)


def test_dormant_units_are_recycled_as_redo_recycles():
    tau = 0.9
    state = agent_with(
        ["regrama"], extra=["intervention.regrama.every_steps=1000", f"intervention.regrama.tau={tau}"], steps=2
    )
    agent, regrama = state.agent, state.agent.interventions[0]
    net = agent.online
    groups = net.unit_groups()
    expected = {g.name: [i for i, s in enumerate(loop_scores(g.incoming[0].weight.grad)) if s <= tau] for g in groups}
    assert any(expected.values())
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    found = regrama.recycle(agent.networks, agent.networks.last_batch.o_tm1, 3)
    assert found == sum(len(v) for v in expected.values())
    fresh = dict(rebuild_fresh(state, regrama.last_fresh_seed).named_parameters())
    names = {id(m): n for n, m in net.named_modules()}
    oracle = {n: t.clone() for n, t in before.items()}
    for g in groups:  # in group order, as ReDo's surgery: fresh incoming rows, then zeroed outgoing columns
        layer, reader = names[id(g.incoming[0])], names[id(g.outgoing[0])]
        for i in expected[g.name]:
            oracle[f"{layer}.weight"][i] = fresh[f"{layer}.weight"][i]
            oracle[f"{layer}.bias"][i] = fresh[f"{layer}.bias"][i]
            oracle[f"{reader}.weight"][:, i] = 0.0  # MLP: unit i is column i of the reader
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), oracle[n], rtol=0, atol=0, msg=n)
    for g in groups:  # the optimizer state of the recycled rows is zeroed, the rest kept
        w = g.incoming[0].weight
        for i in range(g.num_units):
            assert (float(agent.optimizer.state[w]["exp_avg"][i].abs().sum()) == 0.0) == (i in expected[g.name]), (
                g.name,
                i,
            )
    metrics = regrama.metrics()
    assert metrics["regrama_dormant"] == found and metrics["regrama_recycled_total"] == found
    assert metrics["regrama_dormant_fraction"] == pytest.approx(found / sum(g.num_units for g in groups))


def test_bad_values_name_their_keys():
    with pytest.raises(ConfigError, match="intervention.regrama.every_steps"):
        validate(make_cfg(["intervention=[regrama]", "intervention.regrama.every_steps=0"]))
