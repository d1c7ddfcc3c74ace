"""Scheduled resets (Nikishin et al. 2022, "The primacy bias in deep reinforcement learning"; the
SR-SPR and BBF variants): every ``every_steps`` optimizer steps, re-initialise the whole online
network or its last ``last_k_layers`` layers, on a schedule of its own (decoupled from the target
updates), keeping the replay buffer.

At training step ``t`` with ``t % every_steps == 0``, after the optimizer step, with
``theta_fresh`` a fresh initialisation drawn under a recorded seed (stream
``fresh/scheduled_reset``):

* reset part: ``theta <- theta_fresh``. ``last_k_layers: null`` resets every parameter and buffer
  (BatchNorm statistics, spectral-norm vectors); ``last_k_layers: k`` resets, in the order of
  ``named_parameters()``, every parameter from the weight of the k-th last ``Linear``/``Conv2d``
  onwards (so ``k = 1`` is the output layer; a norm registered after a reset layer is reset with
  it), and the buffers of the modules that own them;
* the rest: ``theta <- shrink * theta + perturb * theta_fresh`` (Ash & Adams's shrink-and-perturb;
  defaults ``1, 0``: untouched). BBF (Schwarzer et al. 2023) interpolates the encoder half way to
  a fresh draw (``shrink = perturb = 0.5``) and fully resets the later layers every 40k gradient
  steps, as summarised (the paper was not available offline).

Defaults: ``every_steps: 40000`` (BBF's reset interval in gradient steps), the whole network
(Nikishin et al. reset the whole network of SAC, the last layers of their SPR / DQN agents: set
``last_k_layers``). The target network is not reset: it keeps its parameters until its next copy
(its bootstrap targets stay informed; a choice of ours, named). The replay is kept.

Optimizer state: the whole state of every reset parameter is forgotten (``optim.reset_state``:
moments and step counts, so Adam's bias correction restarts for them); the state of shrunk-and-
perturbed parameters is kept (they move in place, as with ``shrink_perturb``).

Order: after ``redo`` and ``continual_backprop``: a reset supersedes the unit surgery of the
same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import positive
from ..optim import reset_state
from .base import NEEDS_ONE_HEAD, Intervention, Networks, incompatible


@dataclass
class ScheduledResetConfig:
    every_steps: int = 40_000  # training steps between resets (BBF: 40k gradient steps)
    last_k_layers: int | None = None  # reset the last k Linear/Conv2d layers onwards; null: the whole network
    shrink: float = 1.0  # factor on the parameters not reset
    perturb: float = 0.0  # factor on the fresh initialisation added to them


def reset_parameter_names(net: nn.Module, last_k_layers: int | None) -> list[str]:
    """Names of the parameters a reset of the last ``last_k_layers`` layers re-initialises (all
    parameters when None): from the k-th last ``Linear``/``Conv2d`` weight on, in ``named_parameters`` order."""
    names = [n for n, _ in net.named_parameters()]
    if last_k_layers is None:
        return names
    layers = [n for n, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return []
    first = layers[-min(int(last_k_layers), len(layers))]
    start = next(i for i, n in enumerate(names) if n.startswith(first + "."))
    return names[start:]


class ScheduledReset(Intervention):
    name = "scheduled_reset"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.resets = 0  # resets done since the start of the run

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    def metrics(self) -> dict[str, float]:
        return {"scheduled_resets": float(self.resets)}

    def state_dict(self) -> dict:
        return {"resets": self.resets}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        self.resets = int(state.get("resets", 0))

    def after_step(self, networks: Networks, step: int) -> None:
        if step % int(self.cfg.every_steps) == 0:
            self.reset(networks, step)

    @torch.no_grad()
    def reset(self, networks: Networks, step: int) -> None:
        net = networks.online
        fresh_net = self.fresh_network(networks, step)
        fresh = dict(fresh_net.named_parameters())
        reset_names = set(reset_parameter_names(net, self.cfg.last_k_layers))
        shrink, perturb = float(self.cfg.shrink), float(self.cfg.perturb)
        reset_params = []
        for name, p in net.named_parameters():
            if name in reset_names:
                p.copy_(fresh[name])
                reset_params.append(p)
            elif (shrink, perturb) != (1.0, 0.0):
                p.mul_(shrink).add_(fresh[name], alpha=perturb)
        owners = {n.rsplit(".", 1)[0] + "." for n in reset_names}
        fresh_buffers = dict(fresh_net.named_buffers())
        for name, b in net.named_buffers():
            if self.cfg.last_k_layers is None or any(name.startswith(o) for o in owners):
                b.copy_(fresh_buffers[name])
        reset_state(networks.optimizer, reset_params)
        self.resets += 1


def check(cfg: Any, key: str) -> None:
    """``every_steps`` > 0, ``last_k_layers`` > 0 (or null), ``shrink`` and ``perturb`` >= 0."""
    positive(cfg, f"{key}.every_steps")
    positive(cfg, f"{key}.last_k_layers")  # null: the whole network
    positive(cfg, f"{key}.shrink", allow_zero=True)
    positive(cfg, f"{key}.perturb", allow_zero=True)


registry.register(
    "intervention",
    "scheduled_reset",
    ScheduledResetConfig,
    build=ScheduledReset,
    check=check,
    phase="after_step",
    test_overrides=(
        "intervention.scheduled_reset.every_steps=2",
        "intervention.scheduled_reset.last_k_layers=2",
        "intervention.scheduled_reset.shrink=0.5",
        "intervention.scheduled_reset.perturb=0.5",
    ),
)
