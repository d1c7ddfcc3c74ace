"""Reset the optimizer state, and only it, at each target update (paper 6.2).

At every target-network update the whole optimizer state is forgotten (``optim.reset_state``:
Adam's moments and step counts, so its bias correction starts again; RMSProp's averages; SGD's
momentum). Parameters: untouched. It runs last, after every other target-update hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..optim import reset_state
from .base import Intervention

if TYPE_CHECKING:  # pragma: no cover
    from ..agents.dqn import DQNAgent


class ResetOptimizer(Intervention):
    name = "reset_optimizer"

    def on_target_update(self, agent: "DQNAgent", step: int) -> None:
        reset_state(agent.optimizer)
