"""Shrink and perturb (Ash & Adams 2020) at each target update (paper 6.2).

At every target-network update: ``theta <- shrink * theta + perturb * theta_fresh`` for every
parameter of the online network, ``theta_fresh`` a fresh initialisation drawn under a recorded
seed (``Intervention.fresh_network``). Defaults ``shrink = 0.4``, ``perturb = 0.1`` (Ash & Adams);
the convex form used by BBF-style resets is ``perturb = 1 - shrink`` (e.g. 0.8 / 0.2). Buffers
(BatchNorm statistics, spectral-norm vectors) are kept. The target network is copied before the
hook runs, so it keeps the unperturbed parameters until the next update.

Optimizer state: kept by default (the parameters move but are not replaced): section 6.2 says
only that S&P runs at each target update and is silent on the optimizer. Ash & Adams apply it
once per round of training and start each round with a fresh optimizer; ``reset_optimizer_state:
true`` comes closer to that, forgetting the optimizer state (Adam's moments and step counts) of
every shrunk parameter at each application. The update is in place (``mul_``/``add_``), so the
optimizer keeps training the live tensors.

Order: the first target-update hook, then ``reset_last_layer`` (so the last layer ends exactly
at a fresh initialisation), then ``reset_optimizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from ..optim import reset_state
from .base import NEEDS_ONE_HEAD, Intervention, Networks, incompatible


@dataclass
class ShrinkPerturbConfig:
    shrink: float = 0.4  # factor on theta at each target update (Ash & Adams)
    perturb: float = 0.1  # factor on the fresh initialisation added
    reset_optimizer_state: bool = (
        False  # true: forget the shrunk parameters' optimizer state (Ash & Adams' fresh optimizer)
    )


class ShrinkPerturb(Intervention):
    name = "shrink_perturb"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    @torch.no_grad()
    def on_target_update(self, networks: Networks, step: int) -> None:
        fresh = dict(self.fresh_network(networks, step).named_parameters())
        shrink, perturb = float(self.cfg.shrink), float(self.cfg.perturb)
        for name, p in networks.online.named_parameters():
            p.mul_(shrink).add_(fresh[name], alpha=perturb)
        if self.cfg.reset_optimizer_state:
            reset_state(networks.optimizer, networks.online.parameters())


def check(cfg: Any, key: str) -> None:
    """``shrink`` and ``perturb`` >= 0."""
    positive(cfg, f"{key}.shrink", allow_zero=True)
    positive(cfg, f"{key}.perturb", allow_zero=True)


registry.register(
    "intervention", "shrink_perturb", ShrinkPerturbConfig, build=ShrinkPerturb, check=check, phase="target_update"
)
