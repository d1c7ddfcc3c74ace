"""Weight decay as an L2 penalty on the loss (paper 6.2: coefficient 1e-5).

Loss: ``(coeff / 2) * sum ||theta||^2`` over the trainable parameters of the online network, added
to the TD loss at every step, so each gradient gains ``coeff * theta``. This is coupled weight
decay (torch's ``Adam(weight_decay=coeff)``, optax's ``add_decayed_weights`` before Adam), not
AdamW's decoupled decay. All parameters are decayed: weights, biases and norm affines.
Under Adam the term ``coeff * theta`` is normalised with the TD gradient, so at the paper's 1e-5
it changes the parameters by a negligible amount (the penalty is logged apart from the TD loss as
``train/penalty/weight_decay``). Optimizer state: untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from .base import Intervention, Networks, trains


@dataclass
class WeightDecayConfig:
    coeff: float = 1e-5  # penalty coefficient, per optimizer step (paper 6.2: 1e-5)


class WeightDecay(Intervention):
    name = "weight_decay"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.coeff = float(cfg.coeff)  # a plain float: the penalty compiles with fullgraph (functional.py)

    def loss_penalty(self, networks: Networks) -> torch.Tensor:
        squares = [p.pow(2).sum() for p in networks.online.parameters() if trains(p)]
        return 0.5 * self.coeff * torch.stack(squares).sum()


def check(cfg: Any, key: str) -> None:
    """``coeff`` >= 0."""
    positive(cfg, f"{key}.coeff", allow_zero=True)


registry.register("intervention", "weight_decay", WeightDecayConfig, build=WeightDecay, check=check, phase="loss")
