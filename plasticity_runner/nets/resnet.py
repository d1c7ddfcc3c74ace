"""ResNet-18 (He et al. 2016), the paper's third architecture (A.2: "a standard resnet18").

Four stages of two basic blocks (3x3 conv, norm, ReLU, 3x3 conv, norm, add the shortcut, ReLU),
``width * (1, 2, 4, 8)`` channels, stride 2 at the start of stages 2-4 with a 1x1 conv shortcut,
then global average pooling: ``feature_dim = 8 * width`` (512 at the standard width 64).

Adaptation to small inputs (the paper names none): the ImageNet stem (7x7 stride-2 conv and a
3x3 stride-2 max-pool) would shrink an 8x8 digit to 2x2 before the first block, so inputs with
side <= 32 (digits, MNIST, CIFAR-10) use the CIFAR stem of He et al. (one 3x3 stride-1 conv, no
pool); larger inputs (Atari's 84x84) use the ImageNet stem. ``stem`` in the config forces either.
The spatial sides through the stages are 8-4-2-1 (digits), 28-14-7-4 (MNIST), 32-16-8-4 (CIFAR)
and 21-11-6-3 (Atari).

Normalisation: BatchNorm (the standard network) after every conv. BatchNorm makes a sample's
output depend on its batch in training mode, so the agent trains in train mode and acts, computes
TD targets and is probed for losses in eval mode (running statistics); see ``agents/dqn.py`` and
``probes/plasticity.py``. With the ``layer_norm`` intervention every BatchNorm is replaced by a
layer norm over (C, H, W) with a per-channel affine (``GroupNorm`` with one group), since the
network already normalises after each conv.

CReLU (``activation="crelu"``) replaces the activation inside each block (between its two convs,
the second conv reads twice the channels). The stem's and the post-addition activations stay ReLU:
the residual stream's width is fixed by the identity shortcuts.

Initialisation as torchvision's ResNet: convs He-normal (fan_out), norm affine (1, 0).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import choice
from .layers import UnitGroup, expansion, make_activation
from .scaling import body_width, check_sizes


class Stem(str, enum.Enum):
    auto = "auto"  # small for inputs with side <= 32, imagenet otherwise
    small = "small"  # one 3x3 stride-1 conv (He et al.'s CIFAR ResNets)
    imagenet = "imagenet"  # 7x7 stride-2 conv and 3x3 stride-2 max-pool


@dataclass
class ResNet18Config:
    name: str = "resnet18"
    width: int = 64
    stem: Stem = Stem.auto
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


def _norm(channels: int, layer_norm: bool) -> nn.Module:
    return nn.GroupNorm(1, channels) if layer_norm else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, layer_norm: bool, activation: str | None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out, layer_norm)
        self.act1 = make_activation(activation, "relu", dim=1)
        self.conv2 = nn.Conv2d(c_out * expansion(self.act1), c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out, layer_norm)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out, layer_norm))
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet18Body(nn.Module):
    """ResNet-18 without its classifier: ``[B, C, H, W] -> [B, 8 * width]``."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        width: int = 64,
        stem: str = "auto",
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        c, h, w = obs_shape
        if stem == "auto":
            stem = "small" if min(h, w) <= 32 else "imagenet"
        if stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=False), _norm(width, layer_norm), nn.ReLU())
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(c, width, 7, 2, 3, bias=False),
                _norm(width, layer_norm),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"architecture.stem: unknown stem {stem!r}; known: auto, small, imagenet")
        blocks: list[nn.Module] = []
        c_in = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, width * mult, stride, layer_norm, activation))
                c_in = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x)))

    def unit_groups(self) -> list[UnitGroup]:
        """The units between the two convs of each block (the residual stream is left alone)."""
        return [UnitGroup(f"blocks.{i}.act1", [b.conv1, b.norm1], b.act1, [b.conv2]) for i, b in enumerate(self.blocks)]


def build(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> ResNet18Body:
    stem = choice(cfg.stem)
    return ResNet18Body(obs_shape, body_width(cfg, cfg.width), stem, layer_norm, activation)


registry.register(
    "architecture",
    "resnet18",
    ResNet18Config,
    build=build,
    order=3,
    check=lambda cfg, key: check_sizes(cfg, key, "width"),
    tiny=dict(width=2, stem="auto"),
    test_overrides=["architecture.width=2"],
)
