"""Continual backprop, CBP (Dohare et al. 2024, Nature, "Loss of plasticity in deep continual
learning"): after every optimizer step, re-initialise a small fraction of the mature hidden units
that contribute least.

For every unit group ``l`` (``nets/``: each hidden layer of MLP and CNNs, the units between the two
convs of each ResNet block, the ViT's feed-forward hidden units; the groups ReDo acts on), after
every optimizer step:

1. age: ``a_i <- a_i + 1`` for every unit;
2. contribution utility (their eq.: ``u_i <- eta * u_i + (1 - eta) * |h_i| * sum_k |w_ki|``):
   ``c_i = sum over readers, expansion copies and positions of mean_batch |h_i| * sum_k |w_k,col(i)|``,
   ``h`` the unit's activation on the last training batch, recomputed after the optimizer step
   (eval mode; their code reuses the activations of the step's forward pass, before the update),
   ``w`` the weights that read the unit (the next layer, or the head); ``u_i <- eta u_i + (1 - eta) c_i``;
3. bias-corrected utility ``u_hat_i = u_i / (1 - eta^a_i)`` (their code's ``bias_corrected_util``,
   which is what it ranks by);
4. eligible: units with ``a_i > maturity_threshold``; the layer accumulates ``rho * n_eligible``
   replacements and replaces ``floor`` of the running total, keeping the fraction (their
   ``accumulate=True``; their code's default draws a Bernoulli for counts below 1 instead);
5. the ``k`` eligible units of lowest ``u_hat`` are replaced (``units.replace_units``): incoming
   weights, bias and per-unit norm affine copied from a fresh initialisation drawn under a recorded
   seed (their code draws the weights from the init's uniform bound and zeroes the bias; ours
   redraws the bias from the init too), outgoing weights set to zero; their ``u_i`` and ``a_i`` set to 0.
   Their feed-forward code also adds ``w_out * mean(h_i)`` to the next layer's bias to compensate
   the removed mean contribution; we do not (the next layer's bias is left as is).

``sum_k |w_ki|`` is the paper's sum; their code uses the mean over the reading layer, which ranks
the units of a layer identically.

Optimizer state: the Adam moments of exactly those rows and columns are zeroed and, with
``restart_adam_steps: true`` (default, as their ``AdamGnT``, which keeps a step count per weight),
their step counts restart at 0 (``optim.Adam``'s per-element ``unit_step``); other optimizers:
moments / momentum zeroed.

Defaults, from their code (``lop/algos/gnt.py``, ``lop/algos/convCBP.py``, ``lop/rl/cfg/ant/cbp.yml``):
``replacement_rate = 1e-4`` (the ``GnT`` default and their RL config's ``rr``), ``decay_rate = 0.99``
(the ``GnT`` default), ``maturity_threshold = 100`` (the supervised ``ConvCBP`` /
``ContinualBackprop`` default; their RL config uses ``mt: 10000``).

Metrics (phase ``train``): ``cbp_replaced_total``, units replaced since the start of the run.
State kept in the checkpoint: utilities, ages, fractional counts.

Order: after ``redo`` (it ranks the units after ReDo's pass), before ``scheduled_reset``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf

from .. import registry
from ..errors import ConfigError, positive, unit
from ..nets.layers import UnitGroup, expansion, raw_weight
from .base import Intervention, Networks
from .units import group_activations, replace_units, spatial_columns


@dataclass
class ContinualBackpropConfig:
    replacement_rate: float = 1e-4  # rho: replacements per eligible unit per optimizer step
    decay_rate: float = 0.99  # eta of the running utility (in [0, 1))
    maturity_threshold: int = 100  # optimizer steps a unit must age before it may be replaced
    restart_adam_steps: bool = True  # restart Adam's step count of replaced rows/columns (their AdamGnT)


def contribution(group: UnitGroup, activation: torch.Tensor) -> torch.Tensor:
    """``c_i`` [units]: sum over readers, expansion copies and positions of mean_batch |h| times the
    summed |weights| that read that output."""
    expand, units = expansion(group.activation), group.num_units
    a = activation.movedim(group.unit_dim, 1)
    a = a.reshape(a.shape[0], expand, units, -1).abs().mean(dim=0)  # [E, U, P] mean over the batch
    total = torch.zeros(units, device=activation.device)
    for reader in group.outgoing:
        w = raw_weight(reader).abs()
        w = w.sum(dim=0) if w.dim() == 2 else w.sum(dim=(0, 2, 3))  # [in]: summed over outputs (and kernel)
        spatial = spatial_columns(group, reader, activation)
        if spatial > 1:  # a flatten: one column per (copy, unit, position)
            total += (a * w.reshape(expand, units, spatial)).sum(dim=(0, 2))
        else:  # one column per (copy, unit), every position read by it
            total += (a.mean(dim=2) * w.reshape(expand, units)).sum(dim=0)
    return total


class MatureCount:
    """How many units of a group are older than the maturity threshold, counted on the host without
    reading the ages on the device: every step ages all units by one and a replacement restarts
    ``k`` mature units at 0, so the count needs only when how many units were (re)born."""

    def __init__(self, ages: torch.Tensor, threshold: int):
        """``ages``: the group's ages now (a host read, at creation or load only)."""
        ages = ages.cpu()
        self.threshold, self.clock = threshold, 0
        self.mature = int((ages > threshold).sum())
        young, counts = torch.unique(ages[ages <= threshold], return_counts=True)
        # (clock at birth, units), oldest first
        self.births = deque((-int(a), int(n)) for a, n in zip(young.flip(0), counts.flip(0)))

    def tick(self) -> int:
        """Age every unit by one step; returns the mature units."""
        self.clock += 1
        while self.births and self.clock - self.births[0][0] > self.threshold:
            self.mature += self.births.popleft()[1]
        return self.mature

    def restart(self, k: int) -> None:
        """``k`` mature units were replaced: age 0."""
        self.mature -= k
        self.births.append((self.clock, k))


class ContinualBackprop(Intervention):
    name = "continual_backprop"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.utility: dict[str, torch.Tensor] = {}  # group -> u [units] (device)
        self.age: dict[str, torch.Tensor] = {}  # group -> a [units] (device, int64)
        self.mature: dict[str, MatureCount] = {}  # group -> how many a > maturity_threshold (host)
        self.pending: dict[str, float] = {}  # group -> accumulated fractional replacements
        self.replaced_total = 0
        self.last_replaced: dict[
            str, torch.Tensor
        ] = {}  # group -> units replaced at the last step that replaced any (device)

    def metrics(self) -> dict[str, float]:
        return {"cbp_replaced_total": float(self.replaced_total)}

    def state_dict(self) -> dict:
        return {
            "utility": {k: v.clone() for k, v in self.utility.items()},
            "age": {k: v.clone() for k, v in self.age.items()},
            "pending": dict(self.pending),
            "replaced_total": self.replaced_total,
        }

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        device = next(networks.online.parameters()).device
        self.utility = {k: v.to(device).clone() for k, v in state.get("utility", {}).items()}
        self.age = {k: v.to(device).clone() for k, v in state.get("age", {}).items()}
        self.mature = {k: MatureCount(v, int(self.cfg.maturity_threshold)) for k, v in self.age.items()}
        self.pending = {k: float(v) for k, v in state.get("pending", {}).items()}
        self.replaced_total = int(state.get("replaced_total", 0))

    def after_step(self, networks: Networks, step: int) -> None:
        if networks.last_batch is not None:
            self.generate_and_test(networks, networks.last_batch.o_tm1, step)

    @torch.no_grad()
    def generate_and_test(self, networks: Networks, obs: torch.Tensor, step: int) -> int:
        """Steps 1-5 on every unit group, utilities from ``obs``; returns the units replaced. Reads
        nothing from the device: the counts are the host's (``MatureCount``), the units the device's."""
        eta, rho = float(self.cfg.decay_rate), float(self.cfg.replacement_rate)
        maturity = int(self.cfg.maturity_threshold)
        chosen: list[tuple[UnitGroup, torch.Tensor, torch.Tensor]] = []
        for g, out in group_activations(networks.online, obs):
            c = contribution(g, out)
            if g.name not in self.utility:
                self.utility[g.name] = torch.zeros_like(c)
                self.age[g.name] = torch.zeros(g.num_units, dtype=torch.int64, device=c.device)
                self.mature[g.name] = MatureCount(torch.zeros(g.num_units, dtype=torch.int64), maturity)
                self.pending[g.name] = 0.0
            u, age = self.utility[g.name], self.age[g.name]
            age += 1
            u.mul_(eta).add_(c, alpha=1 - eta)
            n = self.mature[g.name].tick()
            if n == 0:
                continue
            self.pending[g.name] += rho * n
            k = min(int(self.pending[g.name]), n)
            self.pending[g.name] -= int(self.pending[g.name])
            if k == 0:
                continue
            eligible = torch.nonzero_static(age > maturity, size=n).flatten()  # ascending, as nonzero; no sync
            correction = 1 - eta ** age[eligible].to(torch.float64)
            corrected = u[eligible] / correction.to(u.dtype)
            pick = torch.topk(-corrected, k).indices
            chosen.append((g, eligible[pick], out))
            self.mature[g.name].restart(k)
        if not chosen:
            return 0
        fresh = self.fresh_network(networks, step)
        replace_units(networks, chosen, fresh, restart_steps=bool(self.cfg.restart_adam_steps))
        self.last_replaced = {}
        for g, idx, _ in chosen:
            self.utility[g.name][idx] = 0.0
            self.age[g.name][idx] = 0
            self.last_replaced[g.name] = idx
            self.replaced_total += idx.numel()
        return sum(idx.numel() for _, idx, _ in chosen)


def check(cfg: Any, key: str) -> None:
    """``replacement_rate`` in [0, 1], ``decay_rate`` in [0, 1), ``maturity_threshold`` >= 0."""
    unit(cfg, f"{key}.replacement_rate")
    unit(cfg, f"{key}.decay_rate")
    positive(cfg, f"{key}.maturity_threshold", allow_zero=True)
    decay = OmegaConf.select(cfg, f"{key}.decay_rate")
    if decay is not None and decay >= 1.0:
        raise ConfigError(f"{key}.decay_rate", f"must be < 1 (a running mean), got {decay}")


registry.register(
    "intervention",
    "continual_backprop",
    ContinualBackpropConfig,
    build=ContinualBackprop,
    check=check,
    phase="after_step",
    test_overrides=(
        "intervention.continual_backprop.maturity_threshold=0",
        "intervention.continual_backprop.replacement_rate=0.5",
    ),
)
