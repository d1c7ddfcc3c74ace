"""Reset the last layer at each target update (paper 6.2; a simplified variant of Nikishin et al. 2022).

At every target-network update the online network's output layer (``QNetwork.head``: the linear
layer producing the Q-values, or the logits of the two-hot head) is overwritten in place with a
fresh initialisation drawn under a recorded seed (``Intervention.fresh_network``). The target
network is copied before the hook runs, so it keeps the trained head until the next update (its
bootstrap targets stay informed).

Optimizer state: the state of the head's parameters is reset (``optim.reset_state``); the rest
is kept. Parameters are overwritten with ``copy_``, so the optimizer keeps the live tensors.

Order: after ``shrink_perturb`` (so the last layer ends exactly at a fresh initialisation),
before ``reset_optimizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import registry
from ..optim import reset_state
from .base import Intervention, Networks, incompatible


@dataclass
class ResetLastLayerConfig:
    """Re-initialise the output layer at each target update (no options)."""


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
    def on_target_update(self, networks: Networks, step: int) -> None:
        fresh = dict(self.fresh_network(networks, step).head.named_parameters())
        head = list(networks.online.head.named_parameters())
        for name, p in head:
            p.copy_(fresh[name])
        reset_state(networks.optimizer, [p for _, p in head])


registry.register("intervention", "reset_last_layer", ResetLastLayerConfig, build=ResetLastLayer, phase="target_update")
