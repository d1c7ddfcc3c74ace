"""Reset the last layer at each target update (paper 6.2; a simplified variant of Nikishin et al. 2022).

At every target-network update the online network's output layer (``QNetwork.head``: the linear
layer producing the Q-values, or the logits of the two-hot head) is overwritten in place with a
fresh initialisation drawn under a recorded seed (``Intervention.fresh_network``). The target
network is copied before the hook runs, so it keeps the trained head until the next update (its
bootstrap targets stay informed).

Optimizer state: the state of the head's parameters is reset (``optim.reset_state``); the rest
is kept. Parameters are overwritten with ``copy_``, so the optimizer keeps the live tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..optim import reset_state
from .base import Intervention, incompatible

if TYPE_CHECKING:  # pragma: no cover
    from ..agents.dqn import DQNAgent


class ResetLastLayer(Intervention):
    name = "reset_last_layer"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(
            self,
            active,
            {
                "plasticity_injection": "injection freezes the last layer and adds two copies; "
                "a reset would break them apart"
            },
        )

    @torch.no_grad()
    def on_target_update(self, agent: "DQNAgent", step: int) -> None:
        fresh = dict(self.fresh_network(agent, step).head.named_parameters())
        head = list(agent.online.head.named_parameters())
        for name, p in head:
            p.copy_(fresh[name])
        reset_state(agent.optimizer, [p for _, p in head])
