"""C-CHAIN (``interventions/c_chain.py``) against a hand computation: at step t + 1 the penalty is
``coeff * mean (Q_theta_t(x) - Q_theta_{t-1}(x))^2`` over the reference observations and every
action, ``theta_{t-1}`` one update back, ``X_ref`` drawn from the replay by stream
``c_chain/reference``; no penalty before the first step; a diagnostic's loss on copies changes
nothing; the reference is independent of the training batch."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions.c_chain import CChain
from plasticity_runner.probes.base import copied_networks
from plasticity_runner.seeding import generator

from .conftest import make_cfg
from .test_interventions import agent_with, learn


def test_penalty_is_the_churn_of_the_last_update_by_hand():
    state = agent_with(
        ["c_chain"], extra=["intervention.c_chain.coeff=3.0", "intervention.c_chain.num_reference=5"], steps=0
    )
    agent, chain = state.agent, state.agent.interventions[0]
    assert isinstance(chain, CChain)
    assert chain.loss_penalty(agent.networks) is None  # no earlier network before the first step
    nets = [copy.deepcopy(agent.online)]  # theta_0
    for _ in range(3):
        learn(state, 1)
        nets.append(copy.deepcopy(agent.online))  # theta_1, theta_2, theta_3
    # the reference observations of the next step: the third draw of stream c_chain/reference (one per step)
    gen = generator(torch.device("cpu"), int(state.agent.networks.seed), "c_chain/reference")
    for _ in range(3):
        x_ref = state.replay.sample_obs(5, gen)
    torch.testing.assert_close(chain.reference, x_ref, rtol=0, atol=0)
    with torch.no_grad():
        expected = 3.0 * ((nets[3](x_ref) - nets[2](x_ref)) ** 2).mean()  # theta_t vs theta_{t-1}
        penalty = chain.loss_penalty(agent.networks)
    torch.testing.assert_close(penalty, expected)
    assert penalty.item() > 0


def test_the_gradient_pulls_towards_the_previous_outputs_and_a_diagnostic_changes_nothing():
    state = agent_with(["c_chain"], steps=2)
    agent, chain = state.agent, state.agent.interventions[0]
    before = [t.clone() for t in chain.latest], chain.reference.clone(), chain.generator.get_state()
    copies = copied_networks(agent.networks)
    penalty = chain.loss_penalty(copies)  # as a diagnostic computes a loss on copies
    penalty.backward()
    x = chain.reference
    with torch.no_grad():
        previous = chain.previous(x)  # theta_{t-1}'s outputs, a constant
    out = copies.online(x)
    manual = torch.autograd.grad(
        float(chain.cfg.coeff) * ((out - previous) ** 2).mean(), list(copies.online.parameters())
    )
    for p, g in zip(copies.online.parameters(), manual):
        torch.testing.assert_close(p.grad, g)
    for t, s in zip(chain.latest, before[0]):
        torch.testing.assert_close(t, s, rtol=0, atol=0)
    torch.testing.assert_close(chain.reference, before[1], rtol=0, atol=0)
    assert torch.equal(chain.generator.get_state(), before[2])


def test_bad_values_name_their_keys():
    with pytest.raises(ConfigError, match="intervention.c_chain.coeff"):
        validate(make_cfg(["intervention=[c_chain]", "intervention.c_chain.coeff=-1"]))
    with pytest.raises(ConfigError, match="intervention.c_chain.num_reference"):
        validate(make_cfg(["intervention=[c_chain]", "intervention.c_chain.num_reference=0"]))
