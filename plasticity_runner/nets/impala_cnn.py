"""IMPALA's deep residual CNN (Espeholt et al. 2018, "IMPALA", figure 3, right: the "large
architecture", 15 conv layers).

Three stacks; stack ``i`` is a 3x3 conv (stride 1, 'same' padding) of ``channels[i]`` channels
(16, 32, 32), a 3x3 max-pool of stride 2 (side -> ceil(side / 2)), and ``blocks_per_stack`` (2)
residual blocks ``x + conv(relu(conv(relu(x))))`` (3x3 convs, stride 1, 'same', the stack's
channels). Then ReLU, a fully-connected layer of ``hidden`` (256) units, ReLU:
``feature_dim = hidden``. The sides through the stacks are 84-42-21-11 (Atari), 8-4-2-1 (digits),
28-14-7-4 (MNIST), 32-16-8-4 (CIFAR-10) and 10-5-3-2 (MinAtar); every side >= 1 works.

Choices the paper leaves open, or where we depart from its agent, ours:

* Max-pool padding: one on each side (torch's ``MaxPool2d(3, 2, padding=1)``). The output side is
  TensorFlow's 'SAME' (ceil(side / 2)), but for even sides TensorFlow pads at the bottom/right
  only, so its pooling windows sit one pixel lower/right than ours.
* Initialisation: torch's defaults (the reference implementation uses Sonnet's, a truncated normal
  of std 1/sqrt(fan_in) and zero biases).
* No LSTM and no last action / reward inputs: IMPALA's agent feeds these features, the clipped
  reward and the last action to an LSTM before its policy and value heads; here the Q head reads
  the 256 features directly (as it reads nature_cnn's 512). Input scaling is the environment's.
* ``layer_norm`` intervention (the network has no normalisation of its own): a layer norm over
  (C, H, W) after every conv (the stack's conv, before its pool; both convs of each block, the
  second before the residual addition) and after the hidden fully-connected layer, before its
  ReLU. Every conv and linear weight then feeds a normalisation (what NaP's projection assumes).
* ``activation="crelu"``: every ReLU becomes CReLU, and the conv or fully-connected layer after
  it reads twice the channels. The residual stream keeps its width: every activation sits on a
  branch (the shortcut adds the block's input, taken before its first activation).

Unit groups (ReDo, continual backprop): the units between the two convs of each block (incoming:
the first conv and its norm; outgoing: the second conv) and the hidden fully-connected units (the
head reads them). The residual stream (the stack convs and the blocks' second convs, summed by the
shortcuts) is left alone, as in ``resnet.py``.

``architecture.width_multiplier`` scales each stack's channels and ``hidden``; kernels, strides and
the number of blocks stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import ConfigError
from .layers import UnitGroup, expansion, make_activation
from .scaling import body_width, check_sizes


@dataclass
class ImpalaCNNConfig:
    name: str = "impala_cnn"
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])  # one stack per entry
    blocks_per_stack: int = 2
    hidden: int = 256
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


def _norm(layer_norm: bool, shape: tuple[int, ...] | int) -> nn.Module:
    return nn.LayerNorm(shape) if layer_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """``x + norm2(conv2(act2(norm1(conv1(act1(x))))))``, 3x3 'same' convs of ``channels``."""

    def __init__(self, channels: int, hw: tuple[int, int], layer_norm: bool, activation: str | None):
        super().__init__()
        self.act1 = make_activation(activation, "relu", dim=1)
        self.conv1 = nn.Conv2d(channels * expansion(self.act1), channels, 3, padding=1)
        self.norm1 = _norm(layer_norm, (channels, *hw))
        self.act2 = make_activation(activation, "relu", dim=1)
        self.conv2 = nn.Conv2d(channels * expansion(self.act2), channels, 3, padding=1)
        self.norm2 = _norm(layer_norm, (channels, *hw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(self.act2(self.norm1(self.conv1(self.act1(x))))))


class ConvStack(nn.Module):
    """3x3 conv, [norm], 3x3 stride-2 max-pool, then the residual blocks."""

    def __init__(
        self, c_in: int, channels: int, hw: tuple[int, int], num_blocks: int, layer_norm: bool, activation: str | None
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, channels, 3, padding=1)
        self.norm = _norm(layer_norm, (channels, *hw))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
        self.blocks = nn.Sequential(
            *[ResidualBlock(channels, self.out_hw, layer_norm, activation) for _ in range(num_blocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(self.norm(self.conv(x))))


class ImpalaCNNBody(nn.Module):
    """``[B, C, H, W] -> [B, hidden]`` (``[B, 2 * hidden]`` with CReLU)."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        channels: tuple[int, ...] = (16, 32, 32),
        num_blocks: int = 2,
        hidden: int = 256,
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        c, h, w = obs_shape
        stacks: list[nn.Module] = []
        hw = (h, w)
        for width in channels:
            stacks.append(ConvStack(c, width, hw, num_blocks, layer_norm, activation))
            c, hw = width, stacks[-1].out_hw
        self.stacks = nn.Sequential(*stacks)
        self.act = make_activation(activation, "relu", dim=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c * expansion(self.act) * hw[0] * hw[1], hidden)
        self.fc_norm = _norm(layer_norm, hidden)
        self.fc_act = make_activation(activation, "relu", dim=1)
        self.feature_dim = hidden * expansion(self.fc_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.act(self.stacks(x)))
        return self.fc_act(self.fc_norm(self.fc(x)))

    def unit_groups(self) -> list[UnitGroup]:
        """The units between the two convs of each block, then the hidden fully-connected units."""
        groups = []
        for i, stack in enumerate(self.stacks):
            for j, b in enumerate(stack.blocks):
                incoming = [b.conv1] + ([b.norm1] if isinstance(b.norm1, nn.LayerNorm) else [])
                groups.append(UnitGroup(f"stacks.{i}.blocks.{j}.act2", incoming, b.act2, [b.conv2]))
        incoming = [self.fc] + ([self.fc_norm] if isinstance(self.fc_norm, nn.LayerNorm) else [])
        groups.append(UnitGroup("fc_act", incoming, self.fc_act))
        return groups


def build(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> ImpalaCNNBody:
    channels = tuple(body_width(cfg, c) for c in cfg.channels)
    return ImpalaCNNBody(obs_shape, channels, cfg.blocks_per_stack, body_width(cfg, cfg.hidden), layer_norm, activation)


def check(cfg: Any, key: str) -> None:
    """At least one stack, every stack's channels > 0, ``blocks_per_stack`` and ``hidden`` > 0."""
    check_sizes(cfg, key, "blocks_per_stack", "hidden")
    channels = list(cfg[key].channels)
    if not channels or any(not isinstance(c, int) or c <= 0 for c in channels):
        raise ConfigError(
            f"{key}.channels", f"must be a non-empty list of channels > 0 (one per stack), got {channels}"
        )


registry.register(
    "architecture",
    "impala_cnn",
    ImpalaCNNConfig,
    build=build,
    check=check,
    order=7,
    tiny=dict(channels=[2, 3, 3], blocks_per_stack=2, hidden=8),
    test_overrides=["architecture.channels=[2,3,3]", "architecture.hidden=8"],
)
