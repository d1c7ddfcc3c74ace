"""Soft shrink-and-perturb at every optimizer step (Juliani & Ash 2024, "A study of plasticity loss
in on-policy deep reinforcement learning"): Ash & Adams's shrink-and-perturb made small and
continual instead of large and occasional.

After every optimizer step, for every parameter of the online network:
``theta <- (1 - shrink) * theta + perturb * theta_fresh``, ``theta_fresh`` a fresh initialisation
drawn at that step under a recorded seed (``Intervention.fresh_network``: stream
``fresh/soft_shrink_perturb``, one draw per step). ``shrink`` is the fraction taken off the
parameters (lambda_shrink), ``perturb`` the weight of the fresh draw (lambda_perturb); the
parametrisation is ours to name, as Juliani & Ash's paper was not available offline: check it
against their text. Defaults (ours): ``shrink = 1e-4`` and ``perturb = 0.01414 ~ sqrt(1 - (1 -
shrink)^2)``, which keeps an untrained network's parameter variance at the initialisation's
(``(1 - s)^2 var + p^2 var = var``). Buffers are kept. The target network is untouched (it
follows at its next copy).

Cost: one fresh network per step (an initialisation of the whole architecture).
Optimizer state: kept (the parameters move in place, as ``shrink_perturb``).

Order: after the unit recycling and the scheduled reset, on the network as they left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive, unit
from .base import NEEDS_ONE_HEAD, Intervention, Networks, incompatible


@dataclass
class SoftShrinkPerturbConfig:
    shrink: float = 1e-4  # fraction taken off the parameters per optimizer step (in [0, 1])
    perturb: float = 0.01414  # factor on the fresh initialisation added per optimizer step


class SoftShrinkPerturb(Intervention):
    name = "soft_shrink_perturb"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    @torch.no_grad()
    def after_step(self, networks: Networks, step: int) -> None:
        fresh = dict(self.fresh_network(networks, step).named_parameters())
        keep, perturb = 1.0 - float(self.cfg.shrink), float(self.cfg.perturb)
        params = list(networks.online.named_parameters())
        torch._foreach_mul_([p for _, p in params], keep)
        torch._foreach_add_([p for _, p in params], [fresh[n] for n, _ in params], alpha=perturb)


def check(cfg: Any, key: str) -> None:
    """``shrink`` in [0, 1], ``perturb`` >= 0."""
    unit(cfg, f"{key}.shrink")
    positive(cfg, f"{key}.perturb", allow_zero=True)


registry.register(
    "intervention",
    "soft_shrink_perturb",
    SoftShrinkPerturbConfig,
    build=SoftShrinkPerturb,
    check=check,
    phase="after_step",
    test_overrides=("intervention.soft_shrink_perturb.shrink=0.1",),
)
