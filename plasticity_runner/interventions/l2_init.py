"""L2-Init, regenerative regularisation (Kumar et al. 2023, "Maintaining plasticity via
regenerative regularization"): pull the parameters towards their initial values.

Loss: ``coeff * sum ||theta - theta_0||^2`` added to the TD loss at every optimizer step (Kumar et
al.'s ``lambda ||theta - theta_0||^2``, no factor 1/2: each gradient gains
``2 * coeff * (theta - theta_0)``; the ``weight_decay`` intervention's coupled L2 is
``(coeff / 2) ||theta||^2``, so ``l2_init`` with ``theta_0 = 0`` equals ``weight_decay`` at twice
its coeff). ``theta_0``: every parameter of the online network as built (weights, biases, norm
affines, ViT's class token and position embeddings), copied once in ``on_build`` and kept in the
checkpoint, so a resume pulls towards the same values bit for bit. Units or layers that another
intervention re-initialises later (ReDo, continual backprop, resets) are still pulled towards the
original ``theta_0``, not towards their new draw; parameters that appear later (plasticity
injection's new head) are not pulled (the frozen old head keeps its term, which has no gradient).

Optimizer state: untouched. The plasticity probe fits its copies without the penalty (it fits the
network with the optimizer alone, as for ``weight_decay``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from .base import Intervention, Networks, trains


@dataclass
class L2InitConfig:
    coeff: float = 1e-4  # lambda of lambda * ||theta - theta_0||^2, per optimizer step


class L2Init(Intervention):
    name = "l2_init"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.coeff = float(cfg.coeff)  # a plain float: the penalty compiles with fullgraph (functional.py)
        self.initial: list[torch.Tensor] = []  # theta_0, one detached copy per parameter

    def on_build(self, networks: Networks) -> None:
        self.initial = [p.detach().clone() for p in networks.online.parameters()]

    def loss_penalty(self, networks: Networks) -> torch.Tensor:
        # the parameters as built are the network's first ones (a structural change, plasticity
        # injection, only appends), read through the learner so that a pure step
        # (functional.py, functional_call) sees the tensors it differentiates
        params = list(networks.online.parameters())[: len(self.initial)]
        squares = [(p - p0).pow(2).sum() for p, p0 in zip(params, self.initial) if trains(p)]
        return self.coeff * torch.stack(squares).sum()

    def state_dict(self) -> dict:
        return {"initial": [t.clone() for t in self.initial]}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        saved = state.get("initial")
        if saved is None:
            return
        if len(saved) != len(self.initial):
            raise ValueError(
                f"l2_init: the checkpoint holds {len(saved)} initial tensors, the network {len(self.initial)}"
            )
        for t, s in zip(self.initial, saved):
            t.copy_(s)


def check(cfg: Any, key: str) -> None:
    """``coeff`` >= 0."""
    positive(cfg, f"{key}.coeff", allow_zero=True)


registry.register("intervention", "l2_init", L2InitConfig, build=L2Init, check=check, phase="loss")
