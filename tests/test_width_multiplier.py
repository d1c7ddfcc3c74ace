"""``architecture.width_multiplier`` (figure 5): 1 builds today's networks bit for bit, 2 doubles every
width the body scales, and validation refuses what cannot be built."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner import registry
from plasticity_runner.cli import compose_config
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.nets import build_network
from plasticity_runner.nets.bodies import CNNBody, MLPBody
from plasticity_runner.nets.minatar_cnn import MinAtarCNNBody
from plasticity_runner.nets.nature_cnn import NatureCNNBody
from plasticity_runner.nets.resnet import ResNet18Body
from plasticity_runner.nets.scaling import scaled
from plasticity_runner.nets.vit import ViTBody

SHAPE = {
    "mlp": (1, 8, 8),
    "cnn": (1, 8, 8),
    "resnet18": (3, 8, 8),
    "vit": (1, 8, 8),
    "nature_cnn": (1, 8, 8),
    "minatar_cnn": (4, 10, 10),
}
# the architectures that predate width_multiplier at small sizes, and today's body built from them
# directly (the oracle: the constructors as they were called before width_multiplier existed)
SMALL = {
    "mlp": (dict(width=12, num_layers=2), lambda s, ln: MLPBody(s, 12, 2, ln)),
    "cnn": (dict(channels=4, hidden=12, conv_stride=1), lambda s, ln: CNNBody(s, 4, 12, 1, ln)),
    "resnet18": (dict(width=2, stem="auto"), lambda s, ln: ResNet18Body(s, 2, "auto", ln)),
    "vit": (
        dict(patch_size=3, dim=8, ff_dim=16, num_blocks=1, num_heads=2, dropout=0.1, pool="cls"),
        lambda s, ln: ViTBody(s, 3, 8, 16, 1, 2, 0.1, "cls", ln),
    ),
    "nature_cnn": (dict(hidden=12), lambda s, ln: NatureCNNBody(s, 12, ln)),
    "minatar_cnn": (dict(channels=4, hidden=12), lambda s, ln: MinAtarCNNBody(s, 4, 12, ln)),
}


ARCHITECTURES = registry.parts("architecture")  # every body, at its registered test sizes (``tiny``)


def arch(name: str, **overrides):
    return OmegaConf.create({"name": name, **SMALL[name][0], **overrides})


def tiny_arch(name: str, **overrides):
    return OmegaConf.create({"name": name, **ARCHITECTURES[name].spec.tiny, **overrides})


def test_the_bit_for_bit_cases_are_registered_bodies():
    assert set(SMALL) <= set(ARCHITECTURES)


def test_scaled():
    assert scaled(64, 1) == 64 and scaled(64, 1.0) == 64
    assert scaled(64, 2) == 128 and scaled(64, 0.5) == 32 and scaled(16, 12) == 192
    assert scaled(3, 0.1) == 1  # never below one unit
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="width_multiplier"):
            scaled(64, bad)


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("name", list(SMALL))
def test_width_multiplier_1_builds_todays_network_bit_for_bit(name, layer_norm):
    torch.manual_seed(0)
    today = SMALL[name][1](SHAPE[name], layer_norm).state_dict()
    for cfg in (arch(name), arch(name, width_multiplier=1), arch(name, width_multiplier=1.0)):
        torch.manual_seed(0)
        body = build_network(cfg, SHAPE[name], 3, layer_norm=layer_norm).body.state_dict()
        assert list(body) == list(today)
        for key in today:
            assert torch.equal(body[key], today[key]), key


def _widths(module: nn.Module) -> list[int]:
    """Output widths of every conv and linear layer of a body, in order."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append(m.out_channels)
        elif isinstance(m, nn.Linear):
            out.append(m.out_features)
    return out


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_width_multiplier_2_doubles_every_scaled_width(name):
    one = _widths(build_network(tiny_arch(name), (1, 8, 8), 3).body)
    two = _widths(build_network(tiny_arch(name, width_multiplier=2), (1, 8, 8), 3).body)
    assert two == [2 * w for w in one], (one, two)  # vit: embedding, attention, feed-forward all scale


def test_the_paper_cnn_at_multiplier_2_has_128_channels_and_512_units():
    body = build_network(
        compose_config(["architecture=cnn", "architecture.width_multiplier=2"]).architecture, (1, 8, 8), 10
    ).body
    assert _widths(body) == [128, 128, 512, 512]


def test_validation_refuses_nonpositive_multipliers_and_vit_widths_heads_do_not_divide():
    for value in (0, -1):
        with pytest.raises(ConfigError, match="width_multiplier"):
            validate(compose_config([f"architecture.width_multiplier={value}"]))
    with pytest.raises(ConfigError, match="num_heads"):  # 256 x 1.01 = 259 is no multiple of 4 heads
        validate(compose_config(["architecture=vit", "architecture.width_multiplier=1.01"]))
    validate(compose_config(["architecture=vit", "architecture.width_multiplier=0.5"]))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_scaled_network_through_a_real_pause(arch, tmp_path):
    """A multiplier other than 1 on every body, through a pause with every diagnostic on (tiny sizes)."""
    from .test_pause_grid import one_pause

    one_pause(arch, ("layer_norm",), tmp_path, ["architecture.width_multiplier=2"])
