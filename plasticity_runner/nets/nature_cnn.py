"""The Nature DQN network (Mnih et al. 2015), the Atari network of section 6.3 / A.3.

conv 8x8x32 stride 4, conv 4x4x64 stride 2, conv 3x3x64 stride 1 (no padding), a fully-connected
layer of ``hidden`` (512) units, ReLU after each. With ``layer_norm`` a layer norm follows each
conv (over C, H, W) and the hidden fully-connected layer (A.3: "after each hidden layer").

Small inputs: the unpadded conv stack needs a side of at least 36 to leave one output position,
so smaller observations (digits 8x8, MNIST 28x28, CIFAR-10 32x32) are zero-padded at the bottom
and right to 36x36 (a choice of ours; the network was designed for 84x84).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from .layers import SequentialBody, dense_layers, expansion, make_activation, maybe_norm, pad_to
from .scaling import body_width, check_sizes

MIN_SIDE = 36  # smallest input side the three unpadded convs map to at least 1x1
CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride)
CONV_CHANNELS = tuple(c for c, _, _ in CONVS)  # scaled by architecture.width_multiplier (nets/scaling.py)


@dataclass
class NatureCNNConfig:
    """``configs/architecture/nature_cnn_shared_bias.yaml`` is this architecture with ``shared_bias``."""

    name: str = "nature_cnn"
    hidden: int = 512
    shared_bias: bool = False  # one output bias for all actions (DQN Zoo's Double DQN; nets.build_network)
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


class NatureCNNBody(SequentialBody):
    def __init__(
        self,
        obs_shape: tuple[int, ...],
        hidden: int = 512,
        layer_norm: bool = False,
        activation: str | None = None,
        conv_channels: tuple[int, ...] = CONV_CHANNELS,
    ):
        super().__init__()
        c, h, w = obs_shape
        self.padded_hw = (max(h, MIN_SIDE), max(w, MIN_SIDE))
        h, w = self.padded_hw
        layers: list[nn.Module] = []
        for channels, (_, k, s) in zip(conv_channels, CONVS):
            layers.append(nn.Conv2d(c, channels, k, stride=s))
            h, w = (h - k) // s + 1, (w - k) // s + 1
            act = make_activation(activation, "relu", dim=1)
            layers += [*maybe_norm(layer_norm, (channels, h, w)), act]
            c = channels * expansion(act)
        dense, self.feature_dim = dense_layers(c * h * w, hidden, 1, layer_norm, activation)
        self.net = nn.Sequential(*layers, nn.Flatten(), *dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pad_to(x, *self.padded_hw))


def build(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> NatureCNNBody:
    channels = tuple(body_width(cfg, c) for c in CONV_CHANNELS)
    return NatureCNNBody(obs_shape, body_width(cfg, cfg.hidden), layer_norm, activation, conv_channels=channels)


registry.register(
    "architecture",
    "nature_cnn",
    NatureCNNConfig,
    build=build,
    order=5,
    check=lambda cfg, key: check_sizes(cfg, key, "hidden"),
    tiny=dict(hidden=8),
    test_overrides=["architecture.hidden=8"],
)
