"""Shrink and perturb (Ash & Adams 2020) at each target update (paper 6.2).

At every target-network update: ``theta <- shrink * theta + perturb * theta_fresh`` for every
parameter of the online network, ``theta_fresh`` a fresh initialisation drawn under a recorded
seed (``Intervention.fresh_network``). Defaults ``shrink = 0.4``, ``perturb = 0.1`` (Ash & Adams);
the convex form used by BBF-style resets is ``perturb = 1 - shrink`` (e.g. 0.8 / 0.2). Buffers
(BatchNorm statistics, spectral-norm vectors) are kept. The target network is copied before the
hook runs, so it keeps the unperturbed parameters until the next update.

Optimizer state: kept (the parameters move but are not replaced); add ``reset_optimizer`` to
reset it as well. The update is in place (``mul_``/``add_``), so the optimizer keeps training the
live tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import Intervention, NEEDS_ONE_HEAD, incompatible

if TYPE_CHECKING:  # pragma: no cover
    from ..agents.dqn import DQNAgent


class ShrinkPerturb(Intervention):
    name = "shrink_perturb"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    @torch.no_grad()
    def on_target_update(self, agent: "DQNAgent", step: int) -> None:
        fresh = dict(self.fresh_network(agent, step).named_parameters())
        shrink, perturb = float(self.cfg.shrink), float(self.cfg.perturb)
        for name, p in agent.online.named_parameters():
            p.mul_(shrink).add_(fresh[name], alpha=perturb)
