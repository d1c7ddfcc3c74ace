"""Sharpness-aware minimisation (Foret et al. 2021), as PLASTIC (Lee et al. 2023) uses it against
the loss of input plasticity: every optimizer step takes the gradient at an ascent point.

At each step, with ``g`` the gradient of the step's loss ``L`` (TD loss plus every penalty) at
``theta`` on the step's batch:

1. ``eps = rho * g / (||g|| + 1e-12)``, ``||g||`` the L2 norm over every trainable parameter at
   once (Foret et al.'s single global norm; no adaptive scaling, ASAM's variant);
2. ``theta + eps``: one more forward and backward of ``L`` on the *same* batch gives ``g_SAM``
   (the whole loss is recomputed there, TD target included: Double DQN's online argmax is taken
   by the perturbed network; the target network is not perturbed);
3. back to ``theta``; the run's optimizer takes its step from ``theta`` with ``g_SAM`` in place of
   ``g``.

Composition with the optimizers: SAM only replaces the gradient the base optimizer reads, so it
wraps any ``optimizer.kind`` (adam, sgd, rmsprop, AdamW's decoupled decay) unchanged. Optimizer
state: the base optimizer's moments, momentum buffers and step counts see ``g_SAM`` (one update
per step, as without SAM); SAM keeps no state of its own. Buffers (BatchNorm's running statistics,
spectral norm's power-iteration vector) are restored after the second pass, so each step moves
them once, as without SAM (a choice). The logged TD loss is the loss at ``theta``. Cost: two
forward-backward passes per step.

``rho`` default 0.05: Foret et al.'s value for CIFAR; PLASTIC's own value for its Atari-100k and
DMC agents was not checked here (their code was not available offline): sweep it.
Order: the only ``gradient``-phase intervention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from .base import Intervention, Networks


@dataclass
class SAMConfig:
    rho: float = 0.05  # radius of the ascent step, in parameter units (Foret et al.'s CIFAR value)


@torch.no_grad()
def ascent(params: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """``eps = rho * g / (||g|| + 1e-12)`` of the parameters' gradients, added to them; returns ``eps``."""
    grads = [p.grad for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    eps = torch._foreach_mul(grads, rho / (norm + 1e-12))
    torch._foreach_add_(params, eps)
    return eps


class SAM(Intervention):
    name = "sam"
    functional_unsupported = "its before_step takes a second forward and backward at the ascent point inside the step"

    def before_step(self, networks: Networks, closure: Callable[[], torch.Tensor]) -> None:
        net = networks.online
        params = [p for p in net.parameters() if p.requires_grad and p.grad is not None]
        if not params:
            return
        buffers = [b.clone() for b in net.buffers()]
        eps = ascent(params, float(self.cfg.rho))
        closure()  # the gradient at theta + eps
        with torch.no_grad():
            torch._foreach_sub_(params, eps)
            for b, saved in zip(net.buffers(), buffers):
                b.copy_(saved)


def check(cfg: Any, key: str) -> None:
    """``rho`` >= 0."""
    positive(cfg, f"{key}.rho", allow_zero=True)


registry.register("intervention", "sam", SAMConfig, build=SAM, check=check, phase="gradient")
