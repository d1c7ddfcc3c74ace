"""Deep Fourier features (``interventions/fourier.py``, ``nets.layers.Fourier``): the MLP's forward
written out with ``torch.nn.functional`` (``cat([sin z, cos z])`` after each hidden layer, the next
layer reading twice the units); hand-counted parameters; the CNN's conv activations concatenated
along the channels; ReDo's unit groups read both halves; refused with crelu, naming both."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from plasticity_runner.config import ConfigError
from plasticity_runner.interventions import build_interventions, network_options
from plasticity_runner.interventions.units import group_activations, outgoing_columns
from plasticity_runner.nets import build_network
from plasticity_runner.nets.layers import Fourier

from .conftest import make_cfg


def mlp(width=3, layers=2, **options):
    cfg = OmegaConf.create({"name": "mlp", "width": width, "num_layers": layers, "width_multiplier": 1.0})
    torch.manual_seed(0)
    return build_network(cfg, (4,), 2, **options)


def test_the_intervention_selects_the_fourier_activation():
    chosen = build_interventions(make_cfg(["intervention=[fourier]"]).intervention)
    assert network_options(chosen) == {"activation": "fourier"}


def test_mlp_forward_written_out_and_parameters_counted():
    net = mlp(activation="fourier")
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(3, 4), (3, 6), (2, 6)]  # fan-in doubles after each activation
    assert sum(p.numel() for p in net.parameters()) == (4 * 3 + 3) + (6 * 3 + 3) + (6 * 2 + 2)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    h = x
    for m in linears[:-1]:
        z = F.linear(h, m.weight, m.bias)
        h = torch.cat([torch.sin(z), torch.cos(z)], dim=1)
    expected = F.linear(h, linears[-1].weight, linears[-1].bias)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


def test_conv_activation_concatenates_channels_and_unit_groups_read_both_halves():
    z = torch.randn(2, 3, 4, 4)
    out = Fourier(dim=1)(z)
    torch.testing.assert_close(out[:, :3], torch.sin(z), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3:], torch.cos(z), rtol=0, atol=0)
    net = mlp(activation="fourier")
    groups = group_activations(net, torch.randn(5, 4))
    g, act = groups[0]
    assert act.shape == (5, 6) and g.num_units == 3
    # unit 1's outgoing columns: its sin copy (column 1) and its cos copy (column 1 + 3)
    assert outgoing_columns(g, g.outgoing[0], act, torch.tensor([1])).tolist() == [1, 4]


def test_crelu_and_fourier_are_refused_naming_both():
    with pytest.raises(ConfigError) as info:
        build_interventions(make_cfg(["intervention=[crelu,fourier]"]).intervention)
    assert "crelu" in str(info.value) and "fourier" in str(info.value)
