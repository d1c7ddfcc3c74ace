"""``architecture.width_multiplier``: one knob that scales every width of a body (figure 5, section 6.1).

The paper scales its networks' width to study plasticity loss against size (figure 5): the MLP
from a base width of 16 by factors 1 to 16 (A.2), the CNN "to the limit of a single GPU's memory"
(6.1, factors unspecified). ``scaled(n, m)`` is the width a body builds for a configured width
``n`` under multiplier ``m``: ``n`` itself when ``m == 1`` (today's networks, bit for bit), else
``round(n * m)``, at least 1. What each body scales:

| body | scaled | fixed |
|---|---|---|
| mlp | `width` | `num_layers` |
| cnn | `channels` (both convs), `hidden` (both FC layers) | kernels, stride |
| resnet18 | `width` (channels of the first stage; the others are 2x, 4x, 8x it) | depth, stem |
| vit | `dim`, `ff_dim` (the scaled `dim` must stay a multiple of `num_heads`) | patch, blocks, heads |
| nature_cnn | the conv channels 32-64-64 and `hidden` | kernels, strides |
| minatar_cnn | `channels`, `hidden` | kernel |

A new body's module says what it scales in its docstring.
"""

from __future__ import annotations

from typing import Any

from ..errors import positive


def scaled(width: int, multiplier: float) -> int:
    """The width a body builds: ``max(1, round(width * multiplier))`` (``width`` itself at 1)."""
    if not multiplier > 0:  # validate() says so first; this guards builds that bypass it
        raise ValueError(f"architecture.width_multiplier must be > 0, got {multiplier}")
    return max(1, int(round(width * multiplier)))


def body_width(arch_cfg: Any, width: int) -> int:
    """``width`` as a body builds it: ``scaled`` by ``arch_cfg.width_multiplier`` (1 when the
    config predates the key)."""
    m = getattr(arch_cfg, "width_multiplier", None)
    return scaled(width, 1.0 if m is None else float(m))


def check_sizes(cfg: Any, key: str, *names: str) -> None:
    """The range check every body shares: each size ``<key>.<name>`` and ``<key>.width_multiplier``
    > 0 (``errors.ConfigError`` naming the key)."""
    for name in (*names, "width_multiplier"):
        positive(cfg, f"{key}.{name}")
