"""GraMa dormancy (Liu et al. 2025, "Measure gradients, not activations!"): the fraction of hidden
units whose gradient magnitude is small relative to their layer's.

For each unit group of the online network (ReDo's hidden units, ``nets/``), with ``g_i`` the mean
absolute gradient of unit ``i``'s incoming weights (the row ``i`` of the weight of the layer that
produces the units, every input and kernel position) for the agent's training loss
(``DQNAgent.loss``, penalties included) on the first ``num_inputs`` transitions of the pause's
evaluation batch:

    s_i = g_i / mean_k g_k            (``interventions.units.gradient_scores``)
    grama_dormant_frac = #{i : s_i <= tau} / #units      (over every group)

and ``grama_dormant_frac/<group>`` per group. Computed on copies of the networks, the loss in
train mode as in training (BatchNorm batch statistics and dropout on the copy; the global RNG
forked and seeded with stream ``diagnostics/grama``). The same score drives the ``regrama``
intervention. Choices named: the incoming weights' gradient (not the gradient with respect to the
unit's output; the authors' code was not checked), no bias gradient, ``tau`` 0.1 (ReDo's
threshold, so the fraction reads beside ReDo's activation-based one; ``regrama``'s reset default
is 0.01).

Written at each pause where due (``diagnostics.grama.every_steps``, default: every pause) under
phase ``stats``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import II

from .. import registry
from ..errors import positive
from ..interventions.units import gradient_scores
from ..seeding import diagnostic_seed
from .base import Diagnostic, Output, PauseView, check_cadence, copied_networks

GRAMA_DORMANT = "grama_dormant_frac"


def grama_dormancy(agent: Any, batch: Any, tau: float, seed: int) -> dict[str, float]:
    """``grama_dormant_frac`` and ``grama_dormant_frac/<group>`` of the agent's online network on
    ``batch`` (on copies; training's networks and RNG streams untouched)."""
    copies = copied_networks(agent.networks)
    net = copies.online
    device = next(net.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        agent.loss(batch, copies).backward()
    out: dict[str, float] = {}
    dormant = units = 0
    for g in net.unit_groups():
        scores = gradient_scores(g)
        if scores is None:  # a frozen layer: no gradient to score
            continue
        n = int((scores <= tau).sum())
        out[f"{GRAMA_DORMANT}/{g.name}"] = n / g.num_units
        dormant, units = dormant + n, units + g.num_units
    out[GRAMA_DORMANT] = dormant / units if units else float("nan")
    return out


@dataclass
class GraMaConfig:
    """GraMa dormancy (config key ``diagnostics.grama``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = II(
        "diagnostics.dynamics.num_inputs"
    )  # transitions of the evaluation batch (default: grad_norm_eval's)
    tau: float = 0.1  # a unit is GraMa-dormant when its normalised gradient score is <= tau (ReDo's threshold)


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    positive(cfg, f"{key}.num_inputs")
    positive(cfg, f"{key}.tau", allow_zero=True)


class GraMa(Diagnostic):
    name, phase = "grama", "stats"
    scalars = (GRAMA_DORMANT, f"{GRAMA_DORMANT}/*")

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).num_inputs)

    def run(self, view: PauseView) -> Output:
        tau = float(self.config(view.cfg).tau)
        return Output(grama_dormancy(view.agent, view.batch, tau, diagnostic_seed(view.seed, self.name, view.step)))


registry.register("diagnostic", "grama", GraMaConfig, build=GraMa, check=check, order=55)
