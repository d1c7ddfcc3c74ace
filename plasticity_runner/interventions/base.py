"""The hook interface every intervention implements (all hooks optional).

When the hooks run (``agents/dqn.py``): ``network_options`` before the networks are built;
``on_build`` once the agent holds them; ``loss_penalty`` at every optimizer step; ``after_step``
after every optimizer step; ``on_target_update`` right after each target-network copy (in a step
that does both, ``after_step`` comes first). Within a hook, interventions run in ``REGISTRY`` order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError
from ..seeding import stream_seed

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
        self.last_fresh_seed: int | None = None  # seed of the last fresh initialisation drawn

    def fresh_network(self, agent: "DQNAgent", step: int) -> nn.Module:
        """A fresh initialisation of the online network's architecture (``agent.build_fresh``),
        drawn under the seed ``fresh_seed(agent.seed, self.name, step)`` in a forked RNG (the
        training RNG streams are untouched). The seed is recorded in ``last_fresh_seed``, so the
        same initialisation can be rebuilt."""
        if agent.build_fresh is None:
            raise ValueError(f"intervention {self.name} needs the agent's build_fresh to draw fresh initialisations")
        seed = fresh_seed(agent.seed, self.name, step)
        device = next(agent.online.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            fresh = agent.build_fresh()
        self.last_fresh_seed = seed
        return fresh

    def check_compatible(self, active: list["Intervention"]) -> None:
        """Raise ``ConfigError`` naming the conflict if this cannot compose with ``active``
        (use ``incompatible``)."""

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

    def metrics(self) -> dict[str, float]:
        """Scalars recorded with the train metrics at every log point: host values only (reading
        the device there would be a sync per log point)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this intervention (counters, structural changes)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], agent: "DQNAgent") -> None:
        """Restore ``state_dict()``; called before the networks and optimizer are loaded, so an
        intervention that changed the network's structure can rebuild it first."""


def fresh_seed(run_seed: int, name: str, step: int) -> int:
    """The seed of the fresh initialisation drawn by intervention ``name`` at training step ``step``
    (stream ``fresh/<name>`` of the run seed)."""
    return stream_seed(run_seed, f"fresh/{name}", step)


# Why an intervention that copies a fresh initialisation into the network cannot follow an injection.
NEEDS_ONE_HEAD = {
    "plasticity_injection": "after an injection the network holds three heads that a fresh initialisation lacks",
}


def incompatible(this: Intervention, active: list[Intervention], others: dict[str, str]) -> None:
    """Raise ``ConfigError`` (a ``ValueError``) if an intervention named in ``others`` is active;
    the values say why. The CLI prints it as a config error before the run starts."""
    for other in active:
        if other.name in others:
            raise ConfigError(
                "intervention",
                f"{this.name} and {other.name} cannot be combined: {others[other.name]}. "
                f"Drop one of them from the intervention list.",
            )
