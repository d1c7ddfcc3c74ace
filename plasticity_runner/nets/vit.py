"""A one-block Vision Transformer (Dosovitskiy et al. 2020), the paper's fourth architecture (A.2).

A.2: patch size 3, model dimension 256, feed-forward width 1024, one transformer block, dropout
0.1, trained from scratch. Choices the paper leaves open, ours:

* Inputs whose side is not a multiple of the patch size are zero-padded at the bottom and right
  to the next multiple (8x8 -> 9x9: 9 patches; 28x28 -> 30x30: 100; 32x32 -> 33x33: 121;
  84x84: 784, no padding).
* Patch embedding: a ``patch x patch`` conv with stride ``patch``; a learned class token and
  learned position embeddings (truncated normal, std 0.02, as ViT); the features are the final
  layer norm of the class token (``pool=cls``) or of the mean token (``pool=mean``).
* Pre-norm block: ``x + Drop(Attn(LN(x)))`` then ``x + Drop(W2 Drop(GELU(W1 LN(x))))``;
  ``num_heads`` heads (default 4 of 64 dimensions). Dropout (rate ``dropout``) on the embeddings,
  the attention output and the feed-forward layers, as ViT; none on the attention weights.
* Attention is written out with matmuls and a softmax (no fused kernel), so that second-order
  autodiff (Hessian-vector products) works on every device.
* ``layer_norm`` intervention: the block already normalises its inputs, so it adds a layer norm
  after the two layers whose outputs are not normalised: the patch-embedding conv and the
  feed-forward hidden layer (before its activation).
* ``activation="crelu"`` replaces the feed-forward GELU; the second feed-forward layer reads
  ``2 * ff_dim`` inputs.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import ConfigError, choice, unit
from .layers import UnitGroup, expansion, make_activation, pad_to
from .scaling import body_width, check_sizes, scaled


class Pool(str, enum.Enum):
    cls = "cls"  # the class token
    mean = "mean"  # the mean of the patch tokens


@dataclass
class ViTConfig:
    name: str = "vit"
    patch_size: int = 3
    dim: int = 256
    ff_dim: int = 1024
    num_blocks: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    pool: Pool = Pool.cls
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


class SelfAttention(nn.Module):
    """Multi-head self-attention, explicit softmax(Q K^T / sqrt(d)) V (twice differentiable)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"architecture.num_heads ({num_heads}) must divide architecture.dim ({dim})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each [B, h, N, d/h]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, d)
        return self.drop(self.proj(out))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, ff_dim: int, num_heads: int, dropout: float, layer_norm: bool, activation: str | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ff_dim)
        self.ff_norm = nn.LayerNorm(ff_dim) if layer_norm else nn.Identity()
        self.act = make_activation(activation, "gelu", dim=-1)
        self.fc2 = nn.Linear(ff_dim * expansion(self.act), dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        hidden = self.drop(self.act(self.ff_norm(self.fc1(self.norm2(x)))))
        return x + self.drop(self.fc2(hidden))


class ViTBody(nn.Module):
    """``[B, C, H, W] -> [B, dim]``: patches, class token, ``num_blocks`` blocks, final layer norm."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        patch_size: int = 3,
        dim: int = 256,
        ff_dim: int = 1024,
        num_blocks: int = 1,
        num_heads: int = 4,
        dropout: float = 0.1,
        pool: str = "cls",
        layer_norm: bool = False,
        activation: str | None = None,
    ):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"architecture.pool: unknown pooling {pool!r}; known: cls, mean")
        c, h, w = obs_shape
        self.patch_size, self.pool = patch_size, pool
        self.padded_hw = (-(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size)
        num_patches = (self.padded_hw[0] // patch_size) * (self.padded_hw[1] // patch_size)
        self.patch_embed = nn.Conv2d(c, dim, patch_size, stride=patch_size)
        self.embed_norm = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, dim), std=0.02))
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, num_patches + 1, dim), std=0.02))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[TransformerBlock(dim, ff_dim, num_heads, dropout, layer_norm, activation) for _ in range(num_blocks)]
        )
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to(x, *self.padded_hw)
        tokens = self.embed_norm(self.patch_embed(x).flatten(2).transpose(1, 2))  # [B, N, dim]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        tokens = self.norm(self.blocks(tokens))
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def unit_groups(self) -> list[UnitGroup]:
        """The feed-forward hidden units of each block (tokens: units on the last dim)."""
        groups = []
        for i, b in enumerate(self.blocks):
            incoming = [b.fc1] + ([b.ff_norm] if isinstance(b.ff_norm, nn.LayerNorm) else [])
            groups.append(UnitGroup(f"blocks.{i}.act", incoming, b.act, [b.fc2], unit_dim=-1))
        return groups


def build(cfg: Any, obs_shape: tuple[int, ...], layer_norm: bool, activation: str | None = None) -> ViTBody:
    pool = choice(cfg.pool)
    return ViTBody(
        obs_shape,
        cfg.patch_size,
        body_width(cfg, cfg.dim),
        body_width(cfg, cfg.ff_dim),
        cfg.num_blocks,
        cfg.num_heads,
        cfg.dropout,
        pool,
        layer_norm,
        activation,
    )


def check(cfg: Any, key: str) -> None:
    """Sizes > 0, dropout in [0, 1], and ``num_heads`` divides the scaled ``dim``."""
    check_sizes(cfg, key, "patch_size", "dim", "ff_dim", "num_blocks", "num_heads")
    unit(cfg, f"{key}.dropout")
    arch = cfg[key]
    dim = scaled(arch.dim, arch.width_multiplier)
    if dim % arch.num_heads:
        raise ConfigError(f"{key}.num_heads", f"must divide {key}.dim x width_multiplier ({dim}), got {arch.num_heads}")


registry.register(
    "architecture",
    "vit",
    ViTConfig,
    build=build,
    check=check,
    order=4,
    tiny=dict(patch_size=3, dim=8, ff_dim=16, num_blocks=1, num_heads=2, dropout=0.1, pool="cls"),
    test_overrides=["architecture.dim=8", "architecture.ff_dim=16", "architecture.num_heads=2"],
)
