"""The Nature DQN network (Mnih et al. 2015), the Atari network of section 6.3 / A.3.

conv 8x8x32 stride 4, conv 4x4x64 stride 2, conv 3x3x64 stride 1 (no padding), a fully-connected
layer of ``hidden`` (512) units, ReLU after each. With ``layer_norm`` a layer norm follows each
conv (over C, H, W) and the hidden fully-connected layer (A.3: "after each hidden layer").

Small inputs: the unpadded conv stack needs a side of at least 36 to leave one output position,
so smaller observations (digits 8x8, MNIST 28x28, CIFAR-10 32x32) are zero-padded at the bottom
and right to 36x36 (a choice of ours; the network was designed for 84x84).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import UnitGroup, expansion, make_activation, pad_to, sequential_unit_groups

MIN_SIDE = 36  # smallest input side the three unpadded convs map to at least 1x1
CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride)
CONV_CHANNELS = tuple(c for c, _, _ in CONVS)  # scaled by architecture.width_multiplier (nets/scaling.py)


class NatureCNNBody(nn.Module):
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
            layers += [*([nn.LayerNorm((channels, h, w))] if layer_norm else []), act]
            c = channels * expansion(act)
        act = make_activation(activation, "relu", dim=1)
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), *([nn.LayerNorm(hidden)] if layer_norm else []), act]
        self.net = nn.Sequential(*layers)
        self.feature_dim = hidden * expansion(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pad_to(x, *self.padded_hw))

    def unit_groups(self) -> list[UnitGroup]:
        return sequential_unit_groups(self.net, "net")
