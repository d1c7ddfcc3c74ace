"""IMPALA's deep residual CNN (``nets/impala_cnn.py``) against oracles: parameter counts and sides
worked out by hand, the network written out with torch.nn.functional, unit-level surgery that must
leave the output unchanged, and real runs through pauses with the default diagnostics on the
classification MDP and on MinAtar. The generic tests (every intervention on every body, width
multiplier, probe grid) pick it up from its registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner.cli import compose_config
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.nets import build_network
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_trainer import values

TINY_IMPALA = OmegaConf.create(dict(name="impala_cnn", channels=[2, 3, 3], blocks_per_stack=2, hidden=8))


def conv3x3(c_in: int, c_out: int) -> int:
    """Parameters of a 3x3 conv with bias."""
    return c_in * c_out * 9 + c_out


@pytest.mark.parametrize(
    "shape,actions,sides,expected",
    [
        ((4, 84, 84), 18, [42, 21, 11], 1_093_858),  # Atari
        ((1, 8, 8), 10, [4, 2, 1], 108_330),  # digits
        ((4, 10, 10), 6, [5, 3, 2], 132_310),  # MinAtar (4 channels: breakout)
    ],
)
def test_parameter_count_and_sides_by_hand(shape, actions, sides, expected):
    net = build_network(compose_config(["architecture=impala_cnn"]).architecture, shape, actions)
    c = shape[0]
    by_hand = (
        conv3x3(c, 16)
        + 4 * conv3x3(16, 16)  # stack 1: its conv, two blocks of two convs
        + conv3x3(16, 32)
        + 4 * conv3x3(32, 32)  # stack 2
        + conv3x3(32, 32)
        + 4 * conv3x3(32, 32)  # stack 3
        + 32 * sides[-1] ** 2 * 256
        + 256  # fully-connected layer of 256
        + 256 * actions
        + actions  # scalar head
    )
    assert by_hand == expected
    assert sum(p.numel() for p in net.parameters()) == expected
    outs = []
    for stack in net.body.stacks:
        stack.register_forward_hook(lambda m, i, o: outs.append(tuple(o.shape[1:])))
    x = torch.rand(2, *shape)
    assert net(x).shape == (2, actions) and net.body.feature_dim == 256
    assert outs == [(16, sides[0], sides[0]), (32, sides[1], sides[1]), (32, sides[2], sides[2])]


def written_out(body: nn.Module, x: torch.Tensor, crelu: bool, layer_norm: bool = False) -> torch.Tensor:
    """The network of the paper's figure 3 (right) with the body's parameters, op by op; with
    ``layer_norm``, a layer norm (the body's affine parameters) after every conv, before the pool
    and before the residual addition, and after the hidden layer, before its activation."""
    act = (lambda t: torch.cat([F.relu(t), F.relu(-t)], 1)) if crelu else F.relu

    def norm(t: torch.Tensor, m: nn.Module) -> torch.Tensor:
        return F.layer_norm(t, m.normalized_shape, m.weight, m.bias, m.eps) if layer_norm else t

    for stack in body.stacks:
        x = norm(F.conv2d(x, stack.conv.weight, stack.conv.bias, padding=1), stack.norm)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for block in stack.blocks:
            y = norm(F.conv2d(act(x), block.conv1.weight, block.conv1.bias, padding=1), block.norm1)
            x = x + norm(F.conv2d(act(y), block.conv2.weight, block.conv2.bias, padding=1), block.norm2)
    x = act(x).flatten(1)
    return act(norm(F.linear(x, body.fc.weight, body.fc.bias), body.fc_norm))


@pytest.mark.parametrize("activation", [None, "crelu"])
def test_forward_equals_the_network_written_out(activation):
    torch.manual_seed(0)
    body = build_network(TINY_IMPALA, (3, 9, 7), 4, activation=activation).body
    x = torch.randn(5, 3, 9, 7)
    torch.testing.assert_close(body(x), written_out(body, x, activation == "crelu"))
    if activation == "crelu":  # every ReLU became CReLU, and the layer after each reads twice the channels
        assert not any(isinstance(m, nn.ReLU) for m in body.modules())
        assert body.feature_dim == 16 and body.fc.in_features == 2 * 3 * 2 * 1  # sides 9x7 -> 5x4 -> 3x2 -> 2x1
        assert body.stacks[1].blocks[0].conv1.in_channels == 6 and body.stacks[1].blocks[0].conv2.in_channels == 6


def test_layer_norm_follows_every_conv_and_the_hidden_layer():
    torch.manual_seed(0)
    body = build_network(TINY_IMPALA, (1, 8, 8), 3, layer_norm=True).body
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in body.modules() if isinstance(m, nn.LayerNorm)]
    assert len(convs) == 3 * (1 + 2 * 2) and len(norms) == len(convs) + 1
    # (C, H, W) of each conv output: stack convs before the pool, block convs after it
    assert norms[0].normalized_shape == (2, 8, 8) and norms[1].normalized_shape == (2, 4, 4)
    assert norms[5].normalized_shape == (3, 4, 4) and norms[-2].normalized_shape == (3, 1, 1)
    assert norms[-1].normalized_shape == (8,)
    with torch.no_grad():  # affine parameters away from their init, so that each norm's place shows
        for m in norms:
            m.weight.normal_(1.0, 0.5)
            m.bias.normal_(0.0, 0.5)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(body(x), written_out(body, x, crelu=False, layer_norm=True))


@pytest.mark.parametrize("activation", [None, "crelu"])
def test_unit_groups_name_the_layers_that_write_and_read_each_unit(activation):
    """The oracle: with a unit's outgoing columns zeroed, changing its incoming parameters moves
    only that unit's activation and leaves the network's output unchanged."""
    torch.manual_seed(0)
    net = build_network(TINY_IMPALA, (1, 8, 8), 3, activation=activation)
    groups = net.unit_groups()
    blocks = [f"body.stacks.{i}.blocks.{j}.act2" for i in range(3) for j in range(2)]
    assert [g.name for g in groups] == blocks + ["body.fc_act"]
    assert [g.num_units for g in groups] == [2, 2, 3, 3, 3, 3, 8]
    assert groups[-1].outgoing == list(net.head.output_layers())
    x = torch.randn(6, 1, 8, 8)
    e = 2 if activation == "crelu" else 1
    for g in groups:
        u = g.num_units - 1
        acts = []
        hook = g.activation.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
        with torch.no_grad():
            for reader in g.outgoing:
                reader.weight[:, [k * g.num_units + u for k in range(e)]] = 0.0
            before = net(x)
            g.incoming[0].weight[u] += 0.1
            g.incoming[0].bias[u] += 100.0  # the unit is alive on every input afterwards: its activation moves
            after = net(x)
        hook.remove()
        torch.testing.assert_close(after, before, rtol=0, atol=0)
        moved = (
            (acts[0] - acts[1]).abs().flatten(2).sum(-1).sum(0)
            if acts[0].dim() == 4
            else (acts[0] - acts[1]).abs().sum(0)
        )
        channels = [k * g.num_units + u for k in range(e)]
        assert moved[channels].sum() > 0, g.name
        assert moved[[c for c in range(len(moved)) if c not in channels]].sum() == 0, g.name


@pytest.mark.parametrize(
    "override,key",
    [
        ("architecture.channels=[2,0,3]", "architecture.channels"),
        ("architecture.channels=[]", "architecture.channels"),
        ("architecture.blocks_per_stack=0", "architecture.blocks_per_stack"),
        ("architecture.hidden=-1", "architecture.hidden"),
        ("architecture.width_multiplier=0", "architecture.width_multiplier"),
    ],
)
def test_range_checks_name_the_key(override, key):
    validate(compose_config(["architecture=impala_cnn"]))
    with pytest.raises(ConfigError) as exc:
        validate(compose_config(["architecture=impala_cnn", override]))
    assert exc.value.key == key


ACTIVATIONS = [f"stacks.{i}.blocks.{j}.act{k}" for i in range(3) for j in range(2) for k in (1, 2)] + ["act", "fc_act"]


@pytest.mark.parametrize("env", [[], ["env=minatar"]], ids=["classification", "minatar"])
def test_a_real_run_through_pauses_with_the_default_diagnostics(env, tmp_path):
    base = [o for o in TINY if not o.startswith("architecture.")]
    cfg = make_cfg(
        base + env + ["architecture=impala_cnn", "architecture.channels=[2,3,3]", "architecture.hidden=8"], tiny=False
    )
    assert cfg.architecture.name == "impala_cnn"
    assert train(cfg, tmp_path)["status"] == "complete"
    df = values(tmp_path)
    assert sorted(set(df[df.phase == "probe"].step)) == [0, 20, 40]  # the pauses
    names = set(zip(df.phase, df.metric))
    for phase, metric in [
        ("probe", "probe_loss"),
        ("curvature", "hessian_top_eig"),
        ("gradcov", "gradcov_neg_frac"),
        ("dynamics", "grad_norm_eval"),
        ("stats", "feature_stable_rank"),
    ]:
        assert (phase, metric) in names, (phase, metric)
    for name in ACTIVATIONS:  # every activation module of the body is measured
        assert ("stats", f"dormant_frac_tau0.025/body.{name}") in names, name
    assert not any(
        m.startswith("dormant_frac_tau0.025/body.") and m.split("/")[1][5:] not in ACTIVATIONS for _, m in names
    )
    assert np.isfinite(df[df.phase == "probe"].value).all() and not np.isinf(df.value).any()
