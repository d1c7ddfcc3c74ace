"""The hook interface every intervention implements (all hooks optional), and the ``Networks``
the hooks receive.

When the hooks run (``agents/dqn.py``): ``network_options`` before the networks are built;
``on_build`` once the agent holds them; ``loss_penalty`` at every optimizer step; ``before_step``
between the backward of the step's loss and the optimizer step (it may replace the gradients);
``after_step``
after every optimizer step; ``on_target_update`` right after each target-network copy (in a step
that does both, ``after_step`` comes first). Within a hook, interventions run in their registered
order (``interventions.REGISTRY``).

A hook sees the ``Networks``, not the agent: the networks, the optimizer and what an intervention
needs to draw fresh initialisations. The agent acts, learns and copies the target network; it
builds the ``Networks`` and hands it to every hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..seeding import fresh_init_seed


@dataclass
class Networks:
    """What an intervention's hooks may read and change.

    ``online`` and ``target``: the Q-networks (hooks change parameters in place; plasticity
    injection swaps the head of both); ``optimizer``: the online network's optimizer (hooks reset
    its state or its parameter groups); ``build_fresh``: a fresh initialisation of the online
    network's architecture (None: the interventions that draw one refuse to run); ``seed``: the run
    seed, from which fresh initialisations derive theirs; ``last_batch``: the batch of the last
    optimizer step (an ``envs.base.Batch``; None before the first), which ReDo and continual
    backprop score units on; ``replay``: the run's replay buffer, read-only (C-CHAIN draws its
    reference observations from it with its own generator; None outside a DQN run).
    """

    online: nn.Module
    target: nn.Module
    optimizer: torch.optim.Optimizer
    build_fresh: Callable[[], nn.Module] | None = None
    seed: int = 0
    last_batch: Any = None
    replay: Any = None


class Intervention:
    """Base class. Hooks are called by the network builder, the agent and the trainer.

    A subclass registers itself in its module (``registry.register("intervention", name, schema,
    build=<the subclass>, check=..., phase=...)``, and its name in ``interventions.ORDER``); ``cfg`` is its config entry.

    Every hook that touches parameters must say what happens to the optimizer state of the
    parameters it touches (kept, or reset with ``optim.reset_state``).
    """

    name: str = "intervention"
    # Why a pure training step (``functional.py``: the step graph, populations) cannot run this
    # intervention's in-step hooks (``loss_penalty``, ``before_step``); None: it can, because they
    # read the networks only through the ``Networks`` they receive. Hooks outside the step
    # (``after_step``, ``on_target_update``) run on the host either way.
    functional_unsupported: str | None = None

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.last_fresh_seed: int | None = None  # seed of the last fresh initialisation drawn

    def fresh_network(self, networks: Networks, step: int) -> nn.Module:
        """A fresh initialisation of the online network's architecture (``networks.build_fresh``),
        drawn under the seed ``seeding.fresh_init_seed(networks.seed, self.name, step)`` in a forked RNG (the
        training RNG streams are untouched). The seed is recorded in ``last_fresh_seed``, so the
        same initialisation can be rebuilt."""
        if networks.build_fresh is None:
            raise ValueError(f"intervention {self.name} needs Networks.build_fresh to draw fresh initialisations")
        seed = fresh_init_seed(networks.seed, self.name, step)
        device = next(networks.online.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            fresh = networks.build_fresh()
        self.last_fresh_seed = seed
        return fresh

    def check_compatible(self, active: list[Intervention]) -> None:
        """Raise ``ConfigError`` naming the conflict if this cannot compose with ``active``
        (use ``incompatible``)."""

    def network_options(self, options: dict[str, Any]) -> None:
        """Build time: edit the keyword options of ``nets.build_network`` in place."""

    def on_build(self, networks: Networks) -> None:
        """After the network and optimizer are built (e.g. wrap layers, add optimizer options)."""

    def loss_penalty(self, networks: Networks) -> torch.Tensor | None:
        """A term added to the TD loss at every optimizer step (e.g. an L2 penalty)."""
        return None

    def before_step(self, networks: Networks, closure: Callable[[], torch.Tensor]) -> None:
        """After the backward of the step's loss, before the optimizer step: may replace the
        gradients the optimizer reads. ``closure()`` zeroes the gradients, recomputes the step's
        loss (penalties included) on the same batch at the current parameters, backpropagates it
        and returns it detached."""

    def after_step(self, networks: Networks, step: int) -> None:
        """After every optimizer step (``step`` training steps done)."""

    def on_target_update(self, networks: Networks, step: int) -> None:
        """Right after the target network was copied from the online network."""

    def metrics(self) -> dict[str, float]:
        """Scalars recorded with the train metrics at every log point: host values only (reading
        the device there would be a sync per log point)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this intervention (counters, structural changes)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], networks: Networks) -> None:
        """Restore ``state_dict()``; called before the networks and optimizer are loaded, so an
        intervention that changed the network's structure can rebuild it first."""


def trains(p: torch.Tensor) -> bool:
    """Whether a parameter of a network, as a penalty reads it from ``networks.online``, is trained:
    every one but a frozen ``nn.Parameter`` (``requires_grad`` off: plasticity injection's old and
    frozen heads). A tensor that a pure step (``functional.py``) swapped in for a parameter is one
    it differentiates, so trained; its ``requires_grad`` cannot decide that, as it reads False
    under ``torch.compile`` inside ``torch.func.grad``."""
    return not isinstance(p, nn.Parameter) or p.requires_grad


# The ``phase`` of a registration (when the intervention mainly acts) -> the hook that acts then.
PHASES = {
    "build": "network_options",
    "loss": "loss_penalty",
    "gradient": "before_step",
    "after_step": "after_step",
    "target_update": "on_target_update",
}


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
