"""ReDo: recycling dormant units (Sokar et al. 2023).

Every ``every_steps`` training steps, after the optimizer step, on the last training batch (a
uniform replay sample; the online network in eval mode):

1. score each hidden unit ``i`` of each hidden layer ``l``:
   ``s_i = mean_x |h_i(x)| / mean_j mean_x |h_j(x)|`` (means over the batch, and over positions
   for conv and token activations; for CReLU over both halves of the unit);
2. a unit is dormant when ``s_i <= tau``;
3. recycle each dormant unit: its incoming weights (the weight row and bias of the layer that
   produces it, and the per-unit affine of a norm in between) are copied from a fresh
   initialisation drawn under a recorded seed; its outgoing weights (the columns that the next
   layer, or the head, reads from it) are set to zero, so the network's function is unchanged.

Optimizer state: the state entries of exactly those rows and columns are zeroed
(``optim.reset_state_entries``); the rest of each tensor's state is kept. Adam's step counts:
kept by default (``restart_adam_steps: false``, today's behaviour and the ReDo authors' Dopamine
code, which keeps optax's single count), so a recycled unit's first updates use the bias
correction of a long-trained tensor (about 3x larger than a fresh Adam's first step at the
defaults); ``restart_adam_steps: true`` restarts the count of exactly those entries (a per-element
count, ``optim.Adam``'s ``unit_step``), as a fresh Adam would; PyTorch ports of ReDo report it is
key to performance.
Which units are eligible is defined by each body's ``unit_groups()`` (``nets/``): every hidden
layer of MLP, CNN and Nature CNN; the units between the two convs of each ResNet block; the
feed-forward hidden units of the ViT. The dormant counts of the last pass are in
``last_dormant`` (counts) and ``last_recycled`` (indices).

Metrics (phase ``train``, at every log point once a pass has run): ``redo_dormant`` (units found
dormant, so recycled, by the last pass, all groups), ``redo_dormant_fraction`` (the same over the
eligible units) and ``redo_recycled_total`` (units recycled since the start of the run).

Order: first of the after-step hooks that recycle units (``continual_backprop`` then ranks the
units after ReDo's pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import positive
from ..nets.layers import expansion
from .base import Intervention, Networks
from .units import group_activations, replace_units


@dataclass
class ReDoConfig:
    tau: float = 0.1  # dormancy threshold on the normalised score (dimensionless)
    every_steps: int = 1000  # training steps between recycling passes
    restart_adam_steps: bool = False  # restart Adam's step count of recycled rows/columns


def unit_scores(activation: torch.Tensor, unit_dim: int, expand: int, num_units: int) -> torch.Tensor:
    """Normalised scores ``[num_units]``: mean |h_i| over everything but the unit, over the layer's mean."""
    a = activation.movedim(unit_dim, 1)
    a = a.reshape(a.shape[0], expand, num_units, -1).abs().mean(dim=(0, 1, 3))
    return a / a.mean().clamp_min(1e-12)


class ReDo(Intervention):
    name = "redo"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.last_dormant: dict[str, int] = {}  # unit group -> dormant units found by the last pass
        self.last_recycled: dict[str, list[int]] = {}  # unit group -> indices recycled by the last pass
        self.last_units: dict[str, int] = {}  # unit group -> eligible units at the last pass
        self.recycled_total = 0  # units recycled since the start of the run

    def metrics(self) -> dict[str, float]:
        if not self.last_units:
            return {}
        dormant = sum(self.last_dormant.values())
        return {
            f"{self.name}_dormant": float(dormant),
            f"{self.name}_dormant_fraction": dormant / max(sum(self.last_units.values()), 1),
            f"{self.name}_recycled_total": float(self.recycled_total),
        }

    def state_dict(self) -> dict:
        return {
            "last_dormant": dict(self.last_dormant),
            "last_units": dict(self.last_units),
            "recycled_total": self.recycled_total,
        }

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        self.last_dormant = dict(state.get("last_dormant", {}))
        self.last_units = dict(state.get("last_units", {}))
        self.recycled_total = int(state.get("recycled_total", 0))

    def after_step(self, networks: Networks, step: int) -> None:
        if step % int(self.cfg.every_steps) == 0 and networks.last_batch is not None:
            self.recycle(networks, networks.last_batch.o_tm1, step)

    def dormant_units(self, net: nn.Module, obs: torch.Tensor) -> list[tuple[object, torch.Tensor, torch.Tensor]]:
        """``(group, dormant unit indices, activation)`` per unit group of ``net`` on ``obs``."""
        result = []
        for g, out in group_activations(net, obs):
            scores = unit_scores(out, g.unit_dim, expansion(g.activation), g.num_units)
            result.append((g, torch.nonzero(scores <= float(self.cfg.tau)).flatten(), out))
        return result

    @torch.no_grad()
    def recycle(self, networks: Networks, obs: torch.Tensor, step: int) -> int:
        """Recycle the dormant units of the online network scored on ``obs``; returns how many."""
        found = self.dormant_units(networks.online, obs)
        self.last_dormant = {g.name: int(idx.numel()) for g, idx, _ in found}
        self.last_recycled = {g.name: idx.tolist() for g, idx, _ in found}
        self.last_units = {g.name: int(g.num_units) for g, _, _ in found}
        self.recycled_total += sum(self.last_dormant.values())
        if not any(self.last_dormant.values()):
            return 0
        chosen = [(g, idx, out) for g, idx, out in found if idx.numel()]
        fresh = self.fresh_network(networks, step)
        replace_units(networks, chosen, fresh, restart_steps=bool(self.cfg.restart_adam_steps))
        return sum(self.last_dormant.values())


def check(cfg: Any, key: str) -> None:
    """``tau`` >= 0, ``every_steps`` > 0."""
    positive(cfg, f"{key}.tau", allow_zero=True)
    positive(cfg, f"{key}.every_steps")


registry.register(
    "intervention",
    "redo",
    ReDoConfig,
    build=ReDo,
    check=check,
    phase="after_step",
    test_overrides=("intervention.redo.every_steps=2", "intervention.redo.tau=0.5"),
)
