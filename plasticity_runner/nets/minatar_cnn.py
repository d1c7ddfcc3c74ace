"""The MinAtar paper's network (Young & Tian 2019, and its ``examples/dqn.py``).

One conv of ``channels`` (16) 3x3 filters, stride 1, no padding (10x10 -> 8x8), then a
fully-connected layer of ``hidden`` (128) units, ReLU after each: a quarter of the Nature DQN's
widths (64 filters, 512 units). With ``layer_norm`` a layer norm follows the conv (over C, H, W)
and the hidden fully-connected layer, before the activation (as every body here). Inputs need a
side of at least 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import registry
from .layers import SequentialBody, dense_layers, expansion, make_activation, maybe_norm
from .scaling import body_width, check_sizes


@dataclass
class MinAtarCNNConfig:
    name: str = "minatar_cnn"
    channels: int = 16
    hidden: int = 128
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


class MinAtarCNNBody(SequentialBody):
    def __init__(
        self,
        obs_shape: tuple[int, ...],
        channels: int = 16,
        hidden: int = 128,
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        c, h, w = obs_shape
        if h < 3 or w < 3:
            raise ValueError(f"architecture=minatar_cnn: its 3x3 conv needs inputs of side >= 3, got {obs_shape}")
        h, w = h - 2, w - 2
        act = make_activation(activation, "relu", dim=1)
        layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, stride=1)]
        layers += [*maybe_norm(layer_norm, (channels, h, w)), act, nn.Flatten()]
        dense, self.feature_dim = dense_layers(channels * expansion(act) * h * w, hidden, 1, layer_norm, activation)
        self.net = nn.Sequential(*layers, *dense)


def build(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> MinAtarCNNBody:
    return MinAtarCNNBody(obs_shape, body_width(cfg, cfg.channels), body_width(cfg, cfg.hidden), layer_norm, activation)


registry.register(
    "architecture",
    "minatar_cnn",
    MinAtarCNNConfig,
    build=build,
    order=6,
    check=lambda cfg, key: check_sizes(cfg, key, "channels", "hidden"),
    tiny=dict(channels=3, hidden=8),
    test_overrides=["architecture.channels=3", "architecture.hidden=8"],
)
