"""The hook interface every intervention implements (all hooks optional)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..agents.dqn import DQNAgent


class Intervention:
    """Base class. Hooks are called by the network builder, the agent and the trainer.

    Every hook that touches parameters must say what happens to the optimizer state of the
    parameters it touches (kept, or reset with ``optim.reset_state``).
    """

    name: str = "intervention"

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def check_compatible(self, active: list["Intervention"]) -> None:
        """Raise ``ValueError`` naming the conflict if this cannot compose with ``active``."""

    def network_options(self, options: dict[str, Any]) -> None:
        """Build time: edit the keyword options of ``nets.build_network`` in place."""

    def on_build(self, agent: "DQNAgent") -> None:
        """After the network and optimizer are built (e.g. wrap layers, add optimizer options)."""

    def loss_penalty(self, agent: "DQNAgent") -> torch.Tensor | None:
        """A term added to the TD loss at every optimizer step (e.g. an L2 penalty)."""
        return None

    def after_step(self, agent: "DQNAgent", step: int) -> None:
        """After every optimizer step (``step`` training steps done)."""

    def on_target_update(self, agent: "DQNAgent", step: int) -> None:
        """Right after the target network was copied from the online network."""
