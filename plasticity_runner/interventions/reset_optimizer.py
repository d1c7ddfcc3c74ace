"""Reset the optimizer state, and only it, at each target update (paper 6.2).

At every target-network update the whole optimizer state is forgotten (``optim.reset_state``:
Adam's moments and step counts, so its bias correction starts again; RMSProp's averages; SGD's
momentum). Parameters: untouched. It runs last, after every other target-update hook.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import registry
from ..optim import reset_state
from .base import Intervention, Networks


@dataclass
class ResetOptimizerConfig:
    """Reset the optimizer state at each target update (no options)."""


class ResetOptimizer(Intervention):
    name = "reset_optimizer"

    def on_target_update(self, networks: Networks, step: int) -> None:
        reset_state(networks.optimizer)


registry.register("intervention", "reset_optimizer", ResetOptimizerConfig, build=ResetOptimizer, phase="target_update")
