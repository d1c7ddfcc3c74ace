"""ReGraMa: resetting units guided by GraMa, their gradient magnitude (Liu, Wu, Obando-Ceron,
Castro, Courville & Pan 2025, "Measure gradients, not activations! Enhancing neuronal activity in
deep reinforcement learning").

Every ``every_steps`` training steps, after the optimizer step, from the gradients of that step
(the step's loss on its batch, penalties included; with ``sam``, the gradient SAM stepped on):

1. score each hidden unit ``i`` of each unit group (ReDo's groups, ``nets/``):
   ``s_i = mean_j |dL/dW_ij| / mean_k mean_j |dL/dW_kj|``, ``W`` the weight of the layer that
   produces the units (its row ``i``: every incoming weight and kernel position of unit ``i``;
   ``units.gradient_scores``);
2. a unit is GraMa-dormant when ``s_i <= tau``;
3. recycle each dormant unit exactly as ReDo does (``units.replace_units``): incoming weights (row,
   bias, per-unit norm affine) from a fresh initialisation drawn under a recorded seed (stream
   ``fresh/regrama``), outgoing weights zeroed.

Choices named: the score reads the gradient of the unit's incoming weights (as a public JAX
re-implementation of ReGraMa does, ``get_score`` over a kernel's input axis; the paper's own code
was not checked), not the gradient with respect to the unit's output; the bias gradient is left
out; ``tau`` 0.01 is that re-implementation's default (the paper's value was not checked), and the
period ``every_steps`` 1000 is ReDo's here (that re-implementation's default too).

Optimizer state: the state entries of exactly the recycled rows and columns are zeroed
(``optim.reset_state_entries``), Adam's step counts kept (``restart_adam_steps: true`` restarts
them per element), as ReDo.

Metrics (phase ``train``, once a pass has run): ``regrama_dormant`` (units recycled by the last
pass), ``regrama_dormant_fraction`` (over the eligible units) and ``regrama_recycled_total``.
Order: right after ``redo`` (in a step doing both, ReDo recycles first; ReGraMa then scores the
step's gradients, which were taken before either acted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from .base import Networks
from .redo import ReDo
from .units import gradient_scores, group_activations, replace_units


@dataclass
class ReGraMaConfig:
    tau: float = 0.01  # a unit is dormant when its normalised gradient score is <= tau (a re-implementation's default)
    every_steps: int = 1000  # training steps (= gradient steps) between passes
    restart_adam_steps: bool = False  # restart Adam's step count of recycled rows/columns (per-element counts)


class ReGraMa(ReDo):
    """ReDo's pass with the gradient score: its counters, metrics (under ``regrama_``) and state are
    ReDo's."""

    name = "regrama"

    @torch.no_grad()
    def recycle(self, networks: Networks, obs: torch.Tensor, step: int) -> int:
        """Recycle the GraMa-dormant units of the online network (scored by the gradients of the
        step just taken; ``obs`` only locates each unit's activations for the surgery), as ReDo's
        ``after_step`` calls it; returns how many."""
        net = networks.online
        groups = net.unit_groups()
        chosen_idx = {}
        self.last_dormant, self.last_units = {}, {}
        for g in groups:
            scores = gradient_scores(g)
            if scores is None:
                continue
            idx = torch.nonzero(scores <= float(self.cfg.tau)).flatten()
            self.last_dormant[g.name] = int(idx.numel())
            self.last_units[g.name] = int(g.num_units)
            if idx.numel():
                chosen_idx[g.name] = idx
        found = sum(self.last_dormant.values())
        self.recycled_total += found
        if not found:
            return 0
        chosen = [(g, chosen_idx[g.name], out) for g, out in group_activations(net, obs) if g.name in chosen_idx]
        fresh = self.fresh_network(networks, step)
        replace_units(networks, chosen, fresh, restart_steps=bool(self.cfg.restart_adam_steps))
        return found


def check(cfg: Any, key: str) -> None:
    """``tau`` >= 0, ``every_steps`` > 0."""
    positive(cfg, f"{key}.tau", allow_zero=True)
    positive(cfg, f"{key}.every_steps")


registry.register(
    "intervention",
    "regrama",
    ReGraMaConfig,
    build=ReGraMa,
    check=check,
    phase="after_step",
    test_overrides=("intervention.regrama.every_steps=2", "intervention.regrama.tau=0.9"),
)
