"""What the DQN trainer's loop mutates, and its checkpoint bundle (``TrainState.state_dict``).

The bundle holds everything a restart needs to continue the same run bit for bit: online and
target networks, optimizer state, replay contents, environment state, the step counter, the
current observation, every generator (action, replay) and the global RNG states (torch CPU and
CUDA, numpy, Python), the state of the interventions, and that of the training-dynamics metrics
(``probes/dynamics.py``: the parameters at initialisation and at the last log point, the
policy-churn reference batch and its last greedy actions), and the device type it was written on.
``checkpoint.py`` writes and reads the bundle as a file and knows nothing of what is in it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .seeding import set_generator_state

if TYPE_CHECKING:  # pragma: no cover
    from .agents.dqn import DQNAgent, FrameClock
    from .probes.dynamics import DynamicsTracker


class DeviceMismatchError(RuntimeError):
    """A checkpoint written on one device type (cuda) loaded into a run on another (cpu)."""


def check_device(bundle: dict[str, Any], device: torch.device, where: Any = "the checkpoint") -> None:
    """Refuse a bundle of another device type: its generator states (Philox on cuda, Mersenne
    Twister on the CPU) cannot seed this device's generators, so the run could not continue the
    same random streams; a run on another device would silently be a different run."""
    saved = bundle["device"]
    if saved != device.type:
        raise DeviceMismatchError(
            f"{where} was written by a run on {saved} and cannot be resumed on {device.type}: the random "
            f"streams of a {saved} run have no {device.type} equivalent. Resume it on {saved} "
            f"(device={saved}), or start a new run directory on {device.type}"
        )


def global_rng_state() -> dict[str, Any]:
    """The process-wide RNG states: torch CPU and CUDA, numpy, Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())  # RNG states are CPU ByteTensors (map_location moved them)
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def learner_state_dict(agent: Any, interventions: list, dynamics: Any) -> dict[str, Any]:
    """The learning half of a checkpoint bundle, shared by every program: the networks, the
    optimizer, each intervention's state and the training-dynamics tracker's."""
    return {
        "online": agent.online.state_dict(),
        "target": agent.target.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "interventions": {i.name: i.state_dict() for i in interventions},
        "dynamics": None if dynamics is None else dynamics.state_dict(),
    }


def load_learner_state_dict(bundle: dict[str, Any], agent: Any, interventions: list, dynamics: Any) -> None:
    """Restore ``learner_state_dict``'s part of ``bundle``; every intervention must find its own
    entry. The interventions come first: one may rebuild parts of the network."""
    for i in interventions:
        i.load_state_dict(bundle["interventions"][i.name], agent.networks)
    agent.online.load_state_dict(bundle["online"])
    agent.target.load_state_dict(bundle["target"])
    agent.optimizer.load_state_dict(bundle["optimizer"])
    if dynamics is not None:  # theta_0, theta at the last log point, churn reference
        dynamics.load_state_dict(bundle["dynamics"])


@dataclass
class TrainState:
    """Everything the loop mutates; what a checkpoint must hold."""

    env: Any
    replay: Any
    agent: DQNAgent
    act_generator: torch.Generator
    replay_generator: torch.Generator
    obs: torch.Tensor
    step: int = 0
    build_fresh: Any = None
    interventions: list = field(default_factory=list)
    episode_returns: list = field(default_factory=list)  # games finished since the last log point
    compiled_probe_fit: Any = None  # the probe's compiled minibatch loss (speed.compile / speed.cuda_graphs), if any
    clock: FrameClock | None = None  # training steps -> emulator frames (Atari; from the config, not checkpointed)
    dynamics: DynamicsTracker | None = None  # theta_0, the last log point's theta, churn reference, gradient-norm sums

    @property
    def device(self) -> torch.device:
        return self.obs.device

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint bundle (its keys and layout are those of every checkpoint written so far)."""
        return {
            "step": self.step,
            **learner_state_dict(self.agent, self.interventions, self.dynamics),
            "replay": self.replay.state_dict(),
            "env": self.env.state_dict(),
            "obs": self.obs,
            "act_generator": self.act_generator.get_state(),
            "replay_generator": self.replay_generator.get_state(),
            "rng": global_rng_state(),
            "device": self.device.type,  # the generators' states only fit generators of this device type
        }

    def load_state_dict(self, bundle: dict[str, Any], where: Any = "the checkpoint") -> None:
        """Restore ``bundle`` (``state_dict``'s); ``DeviceMismatchError``
        naming ``where`` for a bundle of another device type, before anything is restored."""
        check_device(bundle, self.device, where)
        load_learner_state_dict(bundle, self.agent, self.interventions, self.dynamics)
        self.replay.load_state_dict(bundle["replay"])
        self.env.load_state_dict(bundle["env"])
        self.obs = bundle["obs"].to(self.obs.device)
        set_generator_state(self.act_generator, bundle["act_generator"])
        set_generator_state(self.replay_generator, bundle["replay_generator"])
        self.step = int(bundle["step"])
        set_global_rng_state(bundle["rng"])
