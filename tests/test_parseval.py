"""Parseval regularisation (``interventions/parseval.py``) against a hand computation: the penalty
``coeff * sum_l (w_ref / n_l)^2 ||W W^T - s I||_F^2`` of a tiny two-layer body and its gradient
``4 coeff (w_ref / n_l)^2 (W W^T - s I) W`` written out in numpy; the head is left out; a conv
kernel is read as ``[out, in*kh*kw]``; the agent's loss is the TD loss plus exactly that."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions.base import Networks
from plasticity_runner.interventions.parseval import Parseval, regularised_layers
from plasticity_runner.nets import QNetwork
from plasticity_runner.nets.heads import ScalarHead

from .conftest import make_cfg
from .test_interventions import agent_with


def tiny() -> QNetwork:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU())
    return QNetwork(body, ScalarHead(2, 2))


def hand(w: np.ndarray, s: float, factor: float) -> tuple[float, np.ndarray]:
    """``factor * ||W W^T - s I||^2`` and its gradient, written out entry by entry."""
    n = w.shape[0]
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            m[i, j] = sum(w[i, k] * w[j, k] for k in range(w.shape[1])) - (s if i == j else 0.0)
    return factor * float((m**2).sum()), factor * 4.0 * m @ w


def test_penalty_and_gradient_by_hand():
    net = tiny()
    cfg = OmegaConf.create({"coeff": 0.3, "scale": 2.0, "reference_width": 4.0})
    networks = Networks(net, net, torch.optim.SGD(net.parameters(), lr=0.1))
    penalty = Parseval(cfg).loss_penalty(networks)
    penalty.backward()
    total = 0.0
    for layer in (net.body[0], net.body[2]):
        w = layer.weight.detach().double().numpy()
        value, grad = hand(w, 2.0, (4.0 / w.shape[0]) ** 2)
        total += value
        np.testing.assert_allclose(layer.weight.grad.double().numpy(), 0.3 * grad, rtol=1e-5, atol=1e-7)
        assert layer.bias.grad is None  # no biases
    assert penalty.item() == pytest.approx(0.3 * total, rel=1e-6)
    assert net.head.linear.weight.grad is None  # the head is not regularised


def test_conv_kernel_is_read_as_rows_and_reference_width_zero_means_no_factor():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 2)
    net = QNetwork(nn.Sequential(conv, nn.ReLU(), nn.Flatten()), ScalarHead(3, 2))
    assert regularised_layers(net) == [conv]
    cfg = OmegaConf.create({"coeff": 1.0, "scale": 1.0, "reference_width": 0.0})
    penalty = Parseval(cfg).loss_penalty(Networks(net, net, torch.optim.SGD(net.parameters(), lr=0.1)))
    value, _ = hand(conv.weight.detach().double().reshape(3, 8).numpy(), 1.0, 1.0)
    assert penalty.item() == pytest.approx(value, rel=1e-6)


def test_agent_loss_is_td_loss_plus_the_penalty():
    state = agent_with(["parseval"], steps=1)
    agent = state.agent
    batch = state.replay.sample(16, torch.Generator().manual_seed(0))
    assert agent.loss_names == ("td_loss", "penalty/parseval", "loss_total")  # logged under its own name
    with torch.no_grad():
        terms = agent.loss_terms(batch)
        penalty = agent.interventions[0].loss_penalty(agent.networks)
    torch.testing.assert_close(terms[1], penalty)
    torch.testing.assert_close(terms[2], terms[0] + terms[1])
    assert penalty.item() > 0


def test_a_negative_coefficient_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="intervention.parseval.coeff"):
        validate(make_cfg(["intervention=[parseval]", "intervention.parseval.coeff=-1"]))
