"""SAM (``interventions/sam.py``) against a hand-written two-pass step: the gradient ``g`` at
``theta``, ``eps = rho g / ||g||`` (one norm over every parameter), the gradient at ``theta + eps``
on the same batch, and the base optimizer's step from ``theta`` with it; the base optimizer's
state sees only that gradient; BatchNorm's running statistics move once per step; the agent's
``learn`` wires it (the TD loss it returns is the loss at ``theta``)."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions.base import Networks
from plasticity_runner.interventions.sam import SAM

from .conftest import make_cfg
from .test_interventions import agent_with


def loss_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((net(x) - y) ** 2).mean()


def hand_sam_gradient(net: nn.Module, x, y, rho: float) -> list[torch.Tensor]:
    """The oracle: two passes on a copy, by hand."""
    net = copy.deepcopy(net)
    params = list(net.parameters())
    g = torch.autograd.grad(loss_of(net, x, y), params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / norm)
    return list(torch.autograd.grad(loss_of(net, x, y), params))


def tiny(norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4), *([nn.BatchNorm1d(4)] if norm else []), nn.Tanh(), nn.Linear(4, 2)]
    return nn.Sequential(*layers)


def sam_step(net, optimizer, x, y, rho):
    """What ``DQNAgent.learn`` does around the hook."""
    loss = loss_of(net, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()

    def recompute():
        optimizer.zero_grad(set_to_none=True)
        again = loss_of(net, x, y)
        again.backward()
        return again.detach()

    SAM(OmegaConf.create({"rho": rho})).before_step(Networks(net, net, optimizer), recompute)
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_one_sam_step_equals_the_hand_two_pass_step(kind):
    net = tiny()
    x, y = (
        torch.randn(5, 3, generator=torch.Generator().manual_seed(1)),
        torch.randn(5, 2, generator=torch.Generator().manual_seed(2)),
    )
    theta = [p.detach().clone() for p in net.parameters()]
    g_sam = hand_sam_gradient(net, x, y, rho=0.3)
    lr = 0.1
    optimizer = torch.optim.SGD(net.parameters(), lr=lr) if kind == "sgd" else torch.optim.Adam(net.parameters(), lr=lr)
    sam_step(net, optimizer, x, y, rho=0.3)
    for p, t, g in zip(net.parameters(), theta, g_sam):
        if kind == "sgd":
            torch.testing.assert_close(p, t - lr * g)  # the step from theta, with the gradient at theta + eps
        else:  # Adam's first step: m = (1 - b1) g_SAM, v = (1 - b2) g_SAM^2 (it never saw g)
            state = optimizer.state[p]
            torch.testing.assert_close(state["exp_avg"], 0.1 * g)
            torch.testing.assert_close(state["exp_avg_sq"], 0.001 * g * g)
            torch.testing.assert_close(p, t - lr * g / (g.abs() + 1e-8), atol=1e-6, rtol=1e-5)


def test_rho_zero_is_the_plain_step_and_batchnorm_statistics_move_once():
    net, plain = tiny(norm=True), tiny(norm=True)
    net.train(), plain.train()
    x, y = (
        torch.randn(6, 3, generator=torch.Generator().manual_seed(3)),
        torch.randn(6, 2, generator=torch.Generator().manual_seed(4)),
    )
    opt, opt_plain = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(plain.parameters(), lr=0.1)
    sam_step(net, opt, x, y, rho=0.0)
    loss = loss_of(plain, x, y)
    loss.backward()
    opt_plain.step()
    for a, b in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(net.buffers(), plain.buffers()):  # one forward's worth of running statistics
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_agent_steps_on_the_gradient_at_the_ascent_point():
    rho = 0.5
    state = agent_with(["sam"], extra=["optimizer=sgd", "optimizer.lr=0.01", f"intervention.sam.rho={rho}"], steps=1)
    agent = state.agent
    batch = state.replay.sample(16, torch.Generator().manual_seed(5))
    online = agent.online
    theta = [p.detach().clone() for p in online.parameters()]
    probe = copy.deepcopy(agent.networks)
    params = list(probe.online.parameters())
    agent.interventions, saved = [], agent.interventions
    loss0 = agent.loss(batch, probe)
    g = torch.autograd.grad(loss0, params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / norm)
    g_sam = torch.autograd.grad(agent.loss(batch, probe), params)
    agent.interventions = saved
    returned = agent.learn(batch, 2)
    torch.testing.assert_close(returned[-1], loss0.detach())  # the total loss at theta (loss_terms: td, total)
    for p, t, gs in zip(online.parameters(), theta, g_sam):
        torch.testing.assert_close(p, t - 0.01 * gs)


def test_a_negative_rho_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="intervention.sam.rho"):
        validate(make_cfg(["intervention=[sam]", "intervention.sam.rho=-0.1"]))
