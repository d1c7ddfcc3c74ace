"""Q-networks: a body (``bodies.py``) followed by a head (``heads.py``).

``build_network`` is the single entry point; interventions that change the architecture (layer
norm, the two-hot head, ...) arrive as keyword options from ``interventions.network_options``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .bodies import CNNBody, MLPBody
from .heads import ScalarHead

# name -> builder(arch_cfg, obs_shape, layer_norm) -> body with .feature_dim
BODIES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda cfg, shape, ln: MLPBody(shape, cfg.width, cfg.num_layers, layer_norm=ln),
    "cnn": lambda cfg, shape, ln: CNNBody(shape, cfg.channels, cfg.hidden, cfg.conv_stride, layer_norm=ln),
}
# name -> builder(feature_dim, num_actions, **head_options) -> head with forward() and td_loss()
HEADS: dict[str, Callable[..., nn.Module]] = {
    "scalar": lambda feature_dim, num_actions, **_: ScalarHead(feature_dim, num_actions),
}


class QNetwork(nn.Module):
    """``forward(obs)`` gives Q-values [B, A]; ``td_loss`` gives the head's per-sample TD loss."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, F] (input of the head)."""
        return self.body(obs)

    def td_loss(self, obs: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.head.td_loss(self.body(obs), a_tm1, target)


def build_network(
    arch_cfg: Any,
    obs_shape: tuple[int, ...],
    num_actions: int,
    *,
    layer_norm: bool = False,
    head: str = "scalar",
    head_options: dict[str, Any] | None = None,
) -> QNetwork:
    """Build the Q-network named by ``arch_cfg.name`` with torch's default initialisation."""
    if arch_cfg.name not in BODIES:
        raise ValueError(f"architecture.name: unknown architecture {arch_cfg.name!r}; known: {sorted(BODIES)}")
    body = BODIES[arch_cfg.name](arch_cfg, tuple(obs_shape), layer_norm)
    return QNetwork(body, HEADS[head](body.feature_dim, num_actions, **(head_options or {})))
