"""Network bodies: observation -> penultimate features. Appendix A.2 of the paper.

Every body module registers its architecture (``registry.register("architecture", ...)``): its
config schema, ``build(arch_cfg, obs_shape, layer_norm, activation=None)``, its range checks, its
place in the report's order, and its test sizes. A body exposes ``feature_dim`` and
``unit_groups()`` (``layers.UnitGroup``). Hidden activations are separate modules (``nn.ReLU``, or
``layers.CReLU`` with ``activation="crelu"``) so that diagnostics can hook them (dead units). This
file holds the MLP and the paper's CNN; ``resnet.py``, ``vit.py``, ``nature_cnn.py``,
``minatar_cnn.py`` and ``impala_cnn.py`` the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import registry
from .layers import SequentialBody, dense_layers, expansion, make_activation, maybe_norm
from .scaling import body_width, check_sizes


@dataclass
class MLPConfig:
    name: str = "mlp"
    width: int = 512
    num_layers: int = 2
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: int = 64
    hidden: int = 256
    conv_stride: int = 1
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


class MLPBody(SequentialBody):
    """Two fully-connected hidden layers of ``width`` units with ReLU (A.2: width 512).

    With CReLU each hidden layer still has ``width`` pre-activation units; the next layer (and the
    head) reads ``2 * width`` inputs.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        width: int,
        num_layers: int = 2,
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        dense, self.feature_dim = dense_layers(math.prod(obs_shape), width, num_layers, layer_norm, activation)
        self.net = nn.Sequential(nn.Flatten(), *dense)


class CNNBody(SequentialBody):
    """The paper's CNN (A.2): conv 5x5x64, conv 3x3x64, then two fully-connected layers of 256.

    The paper leaves stride and padding open: we use stride ``conv_stride`` (default 1) and 'same'
    padding, as Haiku's ``Conv2D`` defaults do. Layer norm (when on) normalises each conv output
    over (C, H, W) and each hidden fully-connected output over its units.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        channels: int = 64,
        hidden: int = 256,
        conv_stride: int = 1,
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        c, h, w = obs_shape
        layers: list[nn.Module] = []
        for k in (5, 3):
            layers.append(nn.Conv2d(c, channels, k, stride=conv_stride, padding=k // 2))
            h, w = (h + 2 * (k // 2) - k) // conv_stride + 1, (w + 2 * (k // 2) - k) // conv_stride + 1
            act = make_activation(activation, "relu", dim=1)
            layers += [*maybe_norm(layer_norm, (channels, h, w)), act]
            c = channels * expansion(act)
        dense, self.feature_dim = dense_layers(c * h * w, hidden, 2, layer_norm, activation)
        self.net = nn.Sequential(*layers, nn.Flatten(), *dense)


def build_mlp(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> MLPBody:
    return MLPBody(obs_shape, body_width(cfg, cfg.width), cfg.num_layers, layer_norm, activation)


def build_cnn(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> CNNBody:
    return CNNBody(
        obs_shape, body_width(cfg, cfg.channels), body_width(cfg, cfg.hidden), cfg.conv_stride, layer_norm, activation
    )


registry.register(
    "architecture",
    "mlp",
    MLPConfig,
    build=build_mlp,
    order=1,
    check=lambda cfg, key: check_sizes(cfg, key, "width", "num_layers"),
    tiny=dict(width=8, num_layers=2),
    test_overrides=["architecture.width=16"],
)
registry.register(
    "architecture",
    "cnn",
    CNNConfig,
    build=build_cnn,
    order=2,
    check=lambda cfg, key: check_sizes(cfg, key, "channels", "hidden", "conv_stride"),
    tiny=dict(channels=3, hidden=8, conv_stride=1),
    test_overrides=["architecture.channels=3", "architecture.hidden=8"],
)
