"""Parseval regularisation (Chung, Cherif, Meger & Precup 2024, "Parseval regularization for
continual reinforcement learning"): a penalty pulling the rows of each hidden layer's weight
matrix towards an orthogonal set of equal norms.

Loss: ``coeff * sum_l (reference_width / n_l)^2 * ||W_l W_l^T - scale * I||_F^2`` added to the TD
loss at every optimizer step, ``W_l`` the weight of layer ``l`` as a matrix ``[n_l, fan_in]``
(rows = its ``n_l`` output units; a conv kernel ``[out, in, kh, kw]`` read as ``[out, in*kh*kw]``),
``I`` the ``n_l x n_l`` identity. Gradient: ``4 * coeff * (reference_width / n_l)^2 * (W W^T -
scale * I) W``.

Which layers: every ``nn.Linear`` and ``nn.Conv2d`` of the body (every hidden layer; ViT's
attention output projection and feed-forward layers, not the fused query/key/value projection of
``nn.MultiheadAttention``, which is no ``Linear``); not the head (the authors' code leaves the
output layer out), no biases, no norm affines. The weight is the one the layer computes with
(with spectral norm, ``W / sigma``).

Defaults, from the authors' code (``wechu/parseval_reg``): ``coeff`` 1e-3 (their gridworld and
MetaWorld setting; 1e-4 for their other environments); ``scale`` 2 (their ``gain^2`` with the
orthogonal initialisation's default gain sqrt(2): the target row norm is sqrt(2)); the factor
``(64 / width)^2`` (their coefficient was tuned at width 64): here per layer, with ``n_l`` the
layer's output units (the authors' networks have one width; a choice). The authors also
initialise orthogonally and add input scaling or diagonal layers in some experiments; none of that
is part of this intervention (every body keeps its own initialisation).

Optimizer state: untouched. The plasticity probe fits its copies without the penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import positive
from .base import Intervention, Networks, trains


@dataclass
class ParsevalConfig:
    coeff: float = 1e-3  # lambda, per optimizer step (the authors' 1e-3; 1e-4 in some of their environments)
    scale: float = 2.0  # s of ||W W^T - s I||^2: target squared row norm (the authors' gain^2 = 2)
    reference_width: float = 64.0  # per-layer factor (reference_width / n_l)^2 (the authors' 64); 0 turns it off


def regularised_layers(net: nn.Module) -> list[nn.Module]:
    """The ``Linear`` / ``Conv2d`` layers of ``net``'s body (the whole network if it has no body)."""
    body = getattr(net, "body", net)
    return [m for m in body.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def parseval_penalty(layers: list[nn.Module], scale: float, reference_width: float) -> torch.Tensor:
    """``sum_l (reference_width / n_l)^2 ||W_l W_l^T - scale I||_F^2`` (factor 1 when ``reference_width`` is 0)."""
    terms = []
    for m in layers:
        w = m.weight.flatten(1)
        n = w.shape[0]
        gram = w @ w.t() - scale * torch.eye(n, device=w.device, dtype=w.dtype)
        factor = (reference_width / n) ** 2 if reference_width else 1.0
        terms.append(factor * gram.square().sum())
    return torch.stack(terms).sum()


class Parseval(Intervention):
    name = "parseval"

    def __init__(self, cfg):
        super().__init__(cfg)
        # plain floats: the penalty compiles with fullgraph (functional.py)
        self.coeff, self.scale, self.reference_width = (float(cfg.coeff), float(cfg.scale), float(cfg.reference_width))

    def loss_penalty(self, networks: Networks) -> torch.Tensor | None:
        layers = [m for m in regularised_layers(networks.online) if trains(m.weight)]
        if not layers:
            return None
        return self.coeff * parseval_penalty(layers, self.scale, self.reference_width)


def check(cfg: Any, key: str) -> None:
    """``coeff`` >= 0, ``scale`` >= 0, ``reference_width`` >= 0."""
    positive(cfg, f"{key}.coeff", allow_zero=True)
    positive(cfg, f"{key}.scale", allow_zero=True)
    positive(cfg, f"{key}.reference_width", allow_zero=True)


registry.register("intervention", "parseval", ParsevalConfig, build=Parseval, check=check, phase="loss")
