"""CartPole (Barto, Sutton & Anderson 1983) as gymnasium's ``CartPole-v1``, vectorised in torch on the device.

A pole hinged on a cart; the agent pushes the cart left or right with a fixed force and is paid 1
for every step the pole stays up. ``num_envs`` copies step at once with tensor operations on
``device`` (no host loop, no numpy), and ``tests/test_cartpole.py`` steps them alongside
gymnasium's ``CartPole-v1`` from the same states with the same actions.

* **Dynamics** of gymnasium's ``CartPoleEnv`` (the equations of Florian 2007 for Barto et al.'s
  cart-pole), with its constants: gravity 9.8 m/s^2, cart mass 1.0 kg, pole mass 0.1 kg, half
  pole length 0.5 m, force 10 N, time step 0.02 s, explicit Euler integration (gymnasium's
  default ``kinematics_integrator="euler"``), the operations in gymnasium's order.
* **State and observation.** ``[x, x_dot, theta, theta_dot]`` (m, m/s, rad, rad/s). The state is
  kept in float64, as gymnasium's numpy state, and observed as float32, as gymnasium returns it.
  torch's and numpy's ``sin``/``cos`` may differ in the last bit, so the two agree to float64
  rounding (the test's tolerance), not bit for bit.
* **Actions.** 0 pushes left (-10 N), 1 pushes right (+10 N).
* **Episodes.** Terminated when ``|x| > 2.4`` or ``|theta| > 12`` degrees (strict, after the
  step); truncated after ``max_episode_steps`` steps (``CartPole-v1``'s time limit: 500). The
  reward is 1 for every step, the terminating one included (gymnasium's default, not the
  Sutton-Barto reward). A terminated step has ``discount_t = 0``; a truncated one keeps 1.
* **Initial states** (ours, as gymnasium's reset): each of the four variables uniform in
  ``[-0.05, 0.05)``, drawn from our own stream (not gymnasium's numpy generator).
* **Auto-reset** as MinAtar's: a copy whose episode ended starts a new one at once; the step's
  record carries the final state as ``o_t`` and ``StepResult.obs`` the new episode's first one.
  Fresh states are drawn for every copy at every step (and used where an episode ended), so the
  random stream never depends on which episodes ended; the dynamics never read the device.
* **Episode statistics** as Atari's and MinAtar's (``StepResult.info``: ``episode_returns``,
  ``episode_lengths``, ``episode_truncated``, ``episode_envs``), host tensors. They are the one
  device-to-host copy of a step (a synchronisation on a GPU): the trainer reads them every step.
* **No frames.** There is no frame skip (no ``frame_skip`` key): schedules count training steps,
  and evaluation plays episodes (``eval_protocol: episodes``; ``frames`` is refused).
* **Seeds.** Copy states come from one ``torch.Generator`` on the device seeded with
  ``stream_seed(env_seed, "cartpole", stream)`` (stream 0: training; >= 1: evaluation); the
  trainer's ``env_seed`` is ``stream_seed(run_seed, "env")``.
* **Checkpoints.** ``state_dict`` holds the states, episode counters and the generator state: a
  resumed run continues bit for bit.
* **Replay.** Uniform, on the device, observations stored as float32 ``[capacity, 4]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from ..seeding import generator, set_generator_state
from .base import EvalProtocol, StepResult, check_eval
from .replay import DeviceReplay

# gymnasium's CartPoleEnv constants (CartPole-v1)
GRAVITY = 9.8  # m/s^2
MASSCART = 1.0  # kg
MASSPOLE = 0.1  # kg
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # m, half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0  # N
TAU = 0.02  # s between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360  # rad: 12 degrees
X_THRESHOLD = 2.4  # m
INIT_HIGH = 0.05  # initial state variables uniform in [-INIT_HIGH, INIT_HIGH)


@dataclass
class CartPoleEnvConfig:
    """CartPole; defaults are gymnasium's ``CartPole-v1``."""

    name: str = "cartpole"
    num_envs: int = 1  # copies stepped per agent step (transitions added per step)
    max_episode_steps: int = 500  # truncate an episode after this many steps (CartPole-v1: 500)
    eval_protocol: EvalProtocol = EvalProtocol.episodes  # only episodes: CartPole has no frames
    eval_episodes: int = 10  # episodes per evaluation (the first of each of eval_episodes parallel copies)
    eval_every_steps: int = 10_000  # training steps between evaluations (0: none)
    eval_epsilon: float = 0.01  # epsilon-greedy epsilon in evaluation (as the other envs: DQN Zoo's 0.01)


def physics_step(state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """One Euler step of the cart-pole equations: ``state`` ``[N, 4]`` float64, actions ``[N]`` in {0, 1}."""
    x, x_dot, theta, theta_dot = state.unbind(1)
    force = torch.where(actions == 1, FORCE_MAG, -FORCE_MAG).to(state.dtype)  # +-10 exactly in any float type
    costheta, sintheta = torch.cos(theta), torch.sin(theta)
    temp = (force + POLEMASS_LENGTH * theta_dot.square() * sintheta) / TOTAL_MASS
    thetaacc = (GRAVITY * sintheta - costheta * temp) / (
        LENGTH * (4.0 / 3.0 - MASSPOLE * costheta.square() / TOTAL_MASS)
    )
    xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
    return torch.stack((x + TAU * x_dot, x_dot + TAU * xacc, theta + TAU * theta_dot, theta_dot + TAU * thetaacc), 1)


class CartPoleVectorEnv:
    """``num_envs`` CartPoles stepped at once on ``device`` (implements ``envs.base.VectorEnv``).

    Extra attributes: ``state`` (float64 ``[N, 4]``, the physical state), ``steps`` (agent steps
    taken), ``episodes_finished``, ``max_episode_steps``.
    """

    num_actions = 2
    reward_range = (1.0, 1.0)  # 1 per step
    obs_shape = (4,)

    def __init__(self, cfg: Any, device: torch.device | str, seed: int, *, _stream: int = 0):
        self.num_envs, self.max_episode_steps = int(cfg.num_envs), int(cfg.max_episode_steps)
        if self.num_envs <= 0 or self.max_episode_steps <= 0:
            raise ValueError(
                f"env: num_envs and max_episode_steps must be positive, got {self.num_envs}, {self.max_episode_steps}"
            )
        self.device = torch.device(device)
        self.seed, self._stream = int(seed), int(_stream)
        self.generator = generator(self.device, self.seed, "cartpole", self._stream)
        self.steps = 0
        self.episodes_finished = 0
        self.state = torch.zeros((self.num_envs, 4), dtype=torch.float64, device=self.device)
        self.ep_length = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.ep_return = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)

    def _initial_states(self) -> torch.Tensor:
        """A fresh state for every copy, each variable uniform in [-0.05, 0.05) (gymnasium's reset)."""
        u = torch.rand((self.num_envs, 4), generator=self.generator, dtype=torch.float64, device=self.device)
        return -INIT_HIGH + (2 * INIT_HIGH) * u

    @property
    def obs(self) -> torch.Tensor:
        """The current observation, float32 ``[N, 4]`` on ``device``."""
        return self.state.float()

    def reset(self) -> torch.Tensor:
        """Start new episodes in every copy and return their first observations."""
        self.state = self._initial_states()
        self.ep_length.zero_()
        self.ep_return.zero_()
        return self.obs

    def step(self, actions: torch.Tensor) -> StepResult:
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"CartPoleVectorEnv.step: actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        o_tm1 = self.obs
        s_t = physics_step(self.state, actions)
        x, theta = s_t[:, 0], s_t[:, 2]
        terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
        reward = torch.ones(self.num_envs, dtype=torch.float32, device=self.device)
        self.ep_length += 1
        self.ep_return += reward
        truncated = self.ep_length >= self.max_episode_steps
        ended = terminated | truncated
        fresh = self._initial_states()  # drawn for every copy at every step: the stream ignores which ended
        o_t = s_t.float()
        # the step's one device-to-host copy: the finished episodes' statistics
        columns = (ended, terminated, self.ep_return, self.ep_length)
        host = torch.stack([c.to(torch.float64) for c in columns], 1).cpu()
        self.state = torch.where(ended[:, None], fresh, s_t)
        self.ep_length = torch.where(ended, 0, self.ep_length)
        self.ep_return = torch.where(ended, 0.0, self.ep_return)
        done = host[:, 0].bool()
        info = {
            "episode_returns": host[done, 2].clone(),
            "episode_lengths": host[done, 3].long(),
            "episode_truncated": ~host[done, 1].bool(),
            "episode_envs": torch.nonzero(done).flatten(),
        }
        self.episodes_finished += int(done.sum())
        self.steps += 1
        record = {"o_tm1": o_tm1, "a_tm1": actions, "r_t": reward, "discount_t": (~terminated).float(), "o_t": o_t}
        return StepResult(obs=self.obs, reward=reward, record=record, info=info)

    def make_replay(self, capacity: int) -> DeviceReplay:
        return DeviceReplay(capacity, self.obs_shape, self.device)

    def make_eval_env(self, num_envs: int | None = None, stream: int = 1) -> CartPoleVectorEnv:
        """A second environment for evaluation, with its own seed stream ``stream >= 1``."""
        if stream < 1:
            raise ValueError("make_eval_env: stream must be >= 1 (stream 0 is the training env's)")
        cfg = CartPoleEnvConfig(num_envs=int(num_envs or self.num_envs), max_episode_steps=self.max_episode_steps)
        return CartPoleVectorEnv(cfg, self.device, self.seed, _stream=self._stream + int(stream))

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.clone(),
            "ep_length": self.ep_length.clone(),
            "ep_return": self.ep_return.clone(),
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "episodes_finished": self.episodes_finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["state"].shape) != (self.num_envs, 4):
            raise ValueError(
                f"CartPoleVectorEnv.load_state_dict: state is for {state['state'].shape[0]} copies, "
                f"this env has {self.num_envs}"
            )
        self.state = state["state"].to(self.device, torch.float64)
        self.ep_length = state["ep_length"].to(self.device)
        self.ep_return = state["ep_return"].to(self.device)
        set_generator_state(self.generator, state["generator"])
        self.steps, self.episodes_finished = int(state["steps"]), int(state["episodes_finished"])


def check_config(cfg: Any, key: str) -> None:
    """Range checks of ``env=cartpole`` at ``key``."""
    positive(cfg, f"{key}.num_envs")
    positive(cfg, f"{key}.max_episode_steps")
    check_eval(cfg, key)  # refuses eval_protocol=frames: no frame_skip


registry.register("env", "cartpole", CartPoleEnvConfig, build=CartPoleVectorEnv, check=check_config, episodic=True)
