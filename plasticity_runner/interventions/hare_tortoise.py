"""Hare & Tortoise (Lee, Cho, Kim, Kim, Min, Choo & Lyle 2024, "Slow and steady wins the race:
maintaining plasticity with Hare and Tortoise networks"): a slow exponential moving average of the
online network (the tortoise) and periodic resets of the online network (the hare) to it.

After every optimizer step ``t`` (the online network is the hare, ``theta_t``):

1. ``tortoise <- ema * tortoise + (1 - ema) * theta_t`` for every parameter (the tortoise starts
   as the network as built);
2. when ``t % every_steps == 0``: ``theta <- tortoise`` for every parameter.

The hare acts, learns and feeds the target network as the online network always does; the
tortoise is never used for acting or for the TD targets (a choice: the authors evaluate with the
tortoise in their supervised experiments). Buffers (BatchNorm statistics, spectral norm's vector)
are the hare's and are not averaged or reset. The target network is not touched at a reset.

Optimizer state at a reset: kept by default (``reset_optimizer_state: false``: the hare's moments
and step counts carry on from the hare's trajectory); ``true`` forgets the whole state
(``optim.reset_state``), as a fresh optimizer after the reset. The authors' choice here was not
checked (their code was not available offline).

Defaults: ``ema`` 0.999 (the authors' experiment scripts); ``every_steps``: their supervised runs
reset every 10 epochs; their RL period was not checked here, so 10000 optimizer steps is ours:
sweep it. The tortoise is kept in the checkpoint (a resume continues the same average bit for
bit). Cannot compose with ``plasticity_injection`` (whose new head the tortoise lacks).

Metrics (phase ``train``): ``hare_tortoise_resets``, resets since the start of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import ConfigError, positive
from ..optim import reset_state
from .base import NEEDS_ONE_HEAD, Intervention, Networks, incompatible


@dataclass
class HareTortoiseConfig:
    ema: float = 0.999  # tortoise <- ema * tortoise + (1 - ema) * hare, after every optimizer step (the authors' 0.999)
    every_steps: int = 10_000  # optimizer steps between resets of the hare to the tortoise (ours: sweep it)
    reset_optimizer_state: bool = False  # forget the optimizer state at a reset (default: keep it)


class HareTortoise(Intervention):
    name = "hare_tortoise"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.tortoise: list[torch.Tensor] = []  # one tensor per online parameter, in parameters() order
        self.resets = 0

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    def on_build(self, networks: Networks) -> None:
        self.tortoise = [p.detach().clone() for p in networks.online.parameters()]

    @torch.no_grad()
    def after_step(self, networks: Networks, step: int) -> None:
        params = list(networks.online.parameters())
        torch._foreach_lerp_(self.tortoise, params, 1.0 - float(self.cfg.ema))
        if step % int(self.cfg.every_steps) == 0:
            torch._foreach_copy_(params, self.tortoise)
            if self.cfg.reset_optimizer_state:
                reset_state(networks.optimizer)
            self.resets += 1

    def metrics(self) -> dict[str, float]:
        return {"hare_tortoise_resets": float(self.resets)}

    def state_dict(self) -> dict:
        return {"tortoise": [t.clone() for t in self.tortoise], "resets": self.resets}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        saved = state.get("tortoise")
        if saved is not None:
            if len(saved) != len(self.tortoise):
                raise ValueError(
                    f"hare_tortoise: the checkpoint holds {len(saved)} tortoise tensors, the network {len(self.tortoise)}"
                )
            for t, s in zip(self.tortoise, saved):
                t.copy_(s)
        self.resets = int(state.get("resets", 0))


def check(cfg: Any, key: str) -> None:
    """``ema`` in [0, 1), ``every_steps`` > 0."""
    positive(cfg, f"{key}.every_steps")
    positive(cfg, f"{key}.ema", allow_zero=True)
    from omegaconf import OmegaConf

    ema = OmegaConf.select(cfg, f"{key}.ema")
    if ema is not None and not ema < 1:
        raise ConfigError(f"{key}.ema", f"must be < 1, got {ema}")


registry.register(
    "intervention",
    "hare_tortoise",
    HareTortoiseConfig,
    build=HareTortoise,
    check=check,
    phase="after_step",
    test_overrides=("intervention.hare_tortoise.every_steps=2", "intervention.hare_tortoise.ema=0.5"),
)
