"""The contract between environments, their replay memories and the trainer.

An environment is vectorised: it steps ``num_envs`` copies at once with tensor operations on
``device``. It creates the replay memory that matches how it stores observations (dataset indices
for the classification MDPs, uint8 frames for Atari), so the trainer never looks inside either.

Names carry time as in DQN Zoo: a stored transition is ``(o_tm1, a_tm1, r_t, discount_t, o_t)``.
``discount_t`` is 0 where ``o_t`` is terminal for learning and 1 otherwise; the agent multiplies it
by its own gamma.

An episodic environment (its games end) also reports finished games in ``StepResult.info`` and
offers ``make_eval_env`` for ``evaluation.py``; its config then carries the evaluation keys
(``eval_protocol``, ``eval_episodes``, ``eval_frames``, ``eval_every_steps``, ``eval_epsilon``),
checked by ``check_eval``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf

from ..errors import ConfigError, choice, positive, unit


class EvalProtocol(str, enum.Enum):
    episodes = "episodes"  # the first game of each of eval_episodes parallel copies
    frames = "frames"  # DQN Zoo: a budget of eval_frames emulator frames, mean over the completed games


def check_eval(cfg: Any, key: str) -> None:
    """Range checks of the evaluation keys of the env at ``key`` (``evaluation.py`` reads them)."""
    positive(cfg, f"{key}.eval_episodes")
    positive(cfg, f"{key}.eval_every_steps", allow_zero=True)  # 0 or null: no evaluation
    unit(cfg, f"{key}.eval_epsilon")
    protocol = OmegaConf.select(cfg, f"{key}.eval_protocol")
    if choice(protocol) == "frames":
        env = cfg[key]
        if "frame_skip" not in env:  # an env without emulator frames (CartPole) evaluates in episodes
            raise ConfigError(f"{key}.eval_protocol", f"env={env.name} has no frames: only 'episodes', got 'frames'")
        per_step = int(env.num_envs) * int(env.frame_skip)
        if env.eval_frames <= 0 or env.eval_frames % per_step:
            raise ConfigError(
                f"{key}.eval_frames",
                f"must be a positive multiple of {key}.num_envs x {key}.frame_skip ({per_step}), got {env.eval_frames}",
            )


@dataclass
class Batch:
    """A minibatch of transitions, observations already materialised as float tensors."""

    o_tm1: torch.Tensor  # [B, *obs_shape] float32
    a_tm1: torch.Tensor  # [B] int64
    r_t: torch.Tensor  # [B] float32 (clipped for Atari)
    discount_t: torch.Tensor  # [B] float32 in {0, 1}
    o_t: torch.Tensor  # [B, *obs_shape] float32


@dataclass
class StepResult:
    """What ``VectorEnv.step`` returns."""

    obs: torch.Tensor  # [N, *obs_shape] observation to act on next (after any auto-reset)
    reward: torch.Tensor  # [N] float32 reward of this step, as the environment gave it
    record: dict[str, torch.Tensor]  # what ``Replay.add`` consumes for this step
    info: dict[str, Any] = field(default_factory=dict)  # e.g. finished episode returns (device tensors)


class Replay(Protocol):
    size: int  # number of stored transitions (a host int: no device sync to read it)
    capacity: int

    def add(self, record: dict[str, torch.Tensor]) -> None: ...

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch: ...

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` stored observations (o_tm1) drawn uniformly, as float tensors."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def return_range(reward_range: tuple[float, float] | None, gamma: float) -> tuple[float, float] | None:
    """The range of discounted returns (and so of Q) of an env whose per-step rewards lie in
    ``reward_range = (r_min, r_max)``: ``[min(0, r_min), max(0, r_max)] / (1 - gamma)``. The 0 covers
    an episode that ends (a sum of finitely many rewards lies between 0 and the infinite one's
    bound); for the never-ending classification MDPs, rewards in {0, 1}, it is ``[0, 1 / (1 - gamma)]``.
    None when the env declares no reward range."""
    if reward_range is None:
        return None
    r_min, r_max = reward_range
    return min(0.0, float(r_min)) / (1.0 - gamma), max(0.0, float(r_max)) / (1.0 - gamma)


class VectorEnv(Protocol):
    num_envs: int
    num_actions: int
    obs_shape: tuple[int, ...]
    device: torch.device
    # (r_min, r_max) bounding every reward the env gives (None: no known bound); the two-hot head's
    # default support derives from it (``return_range``)
    reward_range: tuple[float, float] | None

    def reset(self) -> torch.Tensor:
        """Start every copy; returns the first observations ``[N, *obs_shape]``."""
        ...

    def step(self, actions: torch.Tensor) -> StepResult: ...

    def make_replay(self, capacity: int) -> Replay: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
