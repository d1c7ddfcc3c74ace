"""Weight decay as an L2 penalty on the loss (paper 6.2: coefficient 1e-5).

Loss: ``(coeff / 2) * sum ||theta||^2`` over the trainable parameters of the online network, added
to the TD loss at every step, so each gradient gains ``coeff * theta``. This is coupled weight
decay (torch's ``Adam(weight_decay=coeff)``, optax's ``add_decayed_weights`` before Adam), not
AdamW's decoupled decay. All parameters are decayed: weights, biases and norm affines.
Optimizer state: untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import Intervention

if TYPE_CHECKING:  # pragma: no cover
    from ..agents.dqn import DQNAgent


class WeightDecay(Intervention):
    name = "weight_decay"

    def loss_penalty(self, agent: "DQNAgent") -> torch.Tensor:
        squares = [p.pow(2).sum() for p in agent.online.parameters() if p.requires_grad]
        return 0.5 * float(self.cfg.coeff) * torch.stack(squares).sum()
