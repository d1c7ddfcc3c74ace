"""Network bodies: observation -> penultimate features. Appendix A.2 of the paper.

Every body is built from ``(cfg, obs_shape, layer_norm)`` and exposes ``feature_dim``. Hidden
activations are separate ``nn.ReLU`` modules so that diagnostics can hook them (dead units).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _maybe_ln(enabled: bool, shape) -> list[nn.Module]:
    return [nn.LayerNorm(shape)] if enabled else []


class MLPBody(nn.Module):
    """Two fully-connected hidden layers of ``width`` units with ReLU (A.2: width 512)."""

    def __init__(self, obs_shape: tuple[int, ...], width: int, num_layers: int = 2, layer_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(obs_shape)
        for _ in range(num_layers):
            layers += [nn.Linear(fan_in, width), *_maybe_ln(layer_norm, width), nn.ReLU()]
            fan_in = width
        self.net = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNNBody(nn.Module):
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
    ):
        super().__init__()
        c, h, w = obs_shape
        layers: list[nn.Module] = []
        for k in (5, 3):
            layers.append(nn.Conv2d(c, channels, k, stride=conv_stride, padding=k // 2))
            h, w = (h + 2 * (k // 2) - k) // conv_stride + 1, (w + 2 * (k // 2) - k) // conv_stride + 1
            layers += [*_maybe_ln(layer_norm, (channels, h, w)), nn.ReLU()]
            c = channels
        layers.append(nn.Flatten())
        fan_in = c * h * w
        for _ in range(2):
            layers += [nn.Linear(fan_in, hidden), *_maybe_ln(layer_norm, hidden), nn.ReLU()]
            fan_in = hidden
        self.net = nn.Sequential(*layers)
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
