"""Output heads: penultimate features -> per-action Q-values, plus the head's TD loss.

``scalar``: one Q-value per action and the squared TD error of equation (1) of the paper.
"""

from __future__ import annotations

import torch
from torch import nn


class ScalarHead(nn.Module):
    """One linear output per action; Q(s, a) is the output itself."""

    def __init__(self, feature_dim: int, num_actions: int):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_actions)
        self.num_actions = num_actions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Q-values [B, A]."""
        return self.linear(features)

    def td_loss(self, features: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error (Q(s, a) - target)^2, eq. (1); ``target`` carries no gradient."""
        q_sa = self.linear(features).gather(1, a_tm1[:, None]).squeeze(1)
        return (q_sa - target) ** 2
