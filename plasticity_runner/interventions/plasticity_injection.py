"""Plasticity injection (Nikishin et al. 2023), once, at training step ``at_step``.

After the optimizer step of ``at_step``, the head ``h_theta`` of the online network becomes
``h_theta(z) + h_theta'(z) - h_theta'_frozen(z)`` (``nets.heads.InjectedHead``) where ``theta'``
is a fresh initialisation (recorded seed) and ``theta'_frozen`` a frozen copy of it: the output
is unchanged at injection, the old head is frozen, the new one learns, the body keeps learning.
The injected part is the output layer (``QNetwork.head``); Nikishin et al. inject into the last
layers of their networks, we keep the body whole for every architecture alike.

The structure changes, so: the target network gets the same structure (its new heads equal the
online ones, so its output is unchanged too); the optimizer stops training the frozen head
(``optim.remove_params``: dropped from the param groups with its state) and trains the new head
in a new param group with fresh state; the rest of the optimizer state is kept.

Checkpoints keep the injection step; on resume the structure is rebuilt before the saved
parameters and optimizer state are loaded into it.

A fresh network from ``build_fresh`` (the probe's targets) has the plain structure; at
initialisation an injected network computes the same function, so nothing there changes.

Order: after the other after-step hooks that touch parameters, before ``nap``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from ..nets.heads import InjectedHead
from ..optim import remove_params
from .base import Intervention, Networks


@dataclass
class PlasticityInjectionConfig:
    at_step: int = 50_000  # the training step after whose optimizer step the head is injected


class PlasticityInjection(Intervention):
    name = "plasticity_injection"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.injected_at: int | None = None

    def after_step(self, networks: Networks, step: int) -> None:
        if step == int(self.cfg.at_step) and self.injected_at is None:
            self.inject(networks, step)

    @torch.no_grad()
    def inject(self, networks: Networks, step: int) -> None:
        fresh_head = self.fresh_network(networks, step).head
        for net in (networks.online, networks.target):
            old = net.head
            new, new_frozen = copy.deepcopy(fresh_head), copy.deepcopy(fresh_head)
            old.requires_grad_(False)
            new_frozen.requires_grad_(False)
            net.head = InjectedHead(old, new, new_frozen).train(net.training)
        networks.target.requires_grad_(False)
        remove_params(networks.optimizer, networks.online.head.old.parameters())
        networks.optimizer.add_param_group({"params": list(networks.online.head.new.parameters())})
        self.injected_at = step

    def state_dict(self) -> dict:
        return {"injected_at": self.injected_at}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        """Rebuild the injected structure (networks, optimizer groups) before the checkpoint's
        parameters and optimizer state are loaded into it."""
        step = state.get("injected_at")
        if step is not None and self.injected_at is None:
            self.inject(networks, int(step))


def check(cfg: Any, key: str) -> None:
    """``at_step`` > 0."""
    positive(cfg, f"{key}.at_step")


registry.register(
    "intervention",
    "plasticity_injection",
    PlasticityInjectionConfig,
    build=PlasticityInjection,
    check=check,
    phase="after_step",
    test_overrides=("intervention.plasticity_injection.at_step=2",),
)
