"""Atari 2600 games (section 6.3, appendix A.3) on ale-py's native vector environment.

Preprocessing is the DQN protocol (Mnih et al. 2015, as in DQN Zoo's Double DQN), done in C++ by
``ale_py.AtariVectorEnv``: grayscale, 84x84 resize, 4 frames per agent step with a max-pool over
the last two, up to 30 no-op actions at each episode start, a stack of the last 4 frames, episodes
truncated at 108,000 frames (30 minutes), no sticky actions and no FIRE on reset.

Design choices (the trainer relies on these):

* **Observations.** ``reset()`` and ``step().obs`` return float32 ``[N, 4, 84, 84]`` in ``[0, 1]``
  on ``device`` (``uint8 / 255``, the same conversion the replay uses, so that networks see the
  same inputs in acting and learning, and uniformly with the classification MDPs). The replay
  stores uint8 frames (``atari_replay.py``).
* **Auto-reset.** ale-py's ``NEXT_STEP`` mode: the step after a game over (or truncation) ignores
  its action and returns the first observation of a new game with reward 0. That step's record has
  ``valid = False`` and the replay never samples it. The new game is then re-reset with a seed of
  ours (a seeded partial reset), so every game is a function of (its seed, its actions).
* **Life loss.** With ``terminal_on_life_loss`` the transition into a life loss has
  ``discount_t = 0`` (learning only: the game goes on, nothing is reset). Lives are tracked here
  from ``info["lives"]``; ale-py's ``episodic_life`` / ``life_loss_info`` are not used so that
  ``terminated`` from ale-py always means game over. A truncated game keeps ``discount_t = 1``.
* **Rewards.** ``StepResult.reward`` is the raw game reward; the record carries the clipped one
  (``sign``-clip to ``[-1, 1]`` when ``clip_rewards``). Episode returns are unclipped sums over
  full games (all lives).
* **Episode statistics.** ``StepResult.info`` always has ``episode_returns`` (float64),
  ``episode_lengths`` (agent steps, int64) and ``episode_truncated`` (bool): one entry per game that
  ended at this step, usually empty. They are *host* tensors: ale-py computes rewards on the host,
  so accumulating them there costs nothing and reading them never synchronises the device.
* **Device traffic.** Each step copies the actions to the host (unavoidable: the emulator runs on
  the CPU) and the new observations plus a few per-env scalars to the device.
* **Seeds.** A ``numpy`` generator seeded from the run seed draws the ALE seed of every game
  (one per copy at ``reset()``, one per new game after that); ale-py seeds the no-op starts, the
  sticky actions and the emulator from it. Runs with the same seed and actions are identical.
  ``make_eval_env`` derives an independent stream.
* **Checkpoints.** ale-py's vector interface exposes no emulator state (no clone/restore), so
  ``state_dict`` holds, per copy, the seed and the actions of the game in progress (a few KB), plus
  the seed generator, episode accumulators and the current observation. ``load_state_dict``
  re-plays those games from their seeds (up to one game length of emulation: at most 27k agent
  steps, seconds to tens of seconds) and checks that the observation, lives and frame counter come
  out identical, raising otherwise. Together with ``AtariReplay``'s state a resumed run continues
  exactly as the uninterrupted one. No ``reset()`` after loading (it would start new games).

Game names and human-normalised scores: ``atari_games.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import registry
from ..errors import positive, unit
from .atari_games import ATARI_57, available_roms, check_game, human_normalized_score, resolve_game  # noqa: F401  (the names live there)
from .atari_replay import AtariReplay, frames_to_float, next_tick
from .base import EvalProtocol, StepResult, check_eval


@dataclass
class AtariEnvConfig:
    """Atari environment (section 6.3, appendix A.3); defaults follow the DQN / DQN Zoo protocol."""

    name: str = "atari"
    game: str = "pong"  # ROM name (snake_case; CamelCase like "Pong" or "MsPacman" is accepted)
    num_envs: int = 1  # parallel games stepped per agent step (transitions added per step)
    frame_skip: int = 4  # emulator frames per agent step (action repeated), max-pool over the last two
    screen_size: int = 84  # side of the square grayscale frame, pixels
    stack: int = 4  # frames stacked into one observation (channels)
    noop_max: int = 30  # at most this many no-op actions at each game start (random per game)
    sticky_action_prob: float = 0.0  # P(repeat last action) per frame; ALE v5 ids default 0.25, DQN protocol (ours) 0
    fire_reset: bool = False  # press FIRE after each reset (ale-py default True; DQN protocol and DQN Zoo: no)
    terminal_on_life_loss: bool = True  # discount_t = 0 on losing a life, for learning only; returns span full games
    clip_rewards: bool = True  # store sign(r) in [-1, 1] in the replay (episode returns stay unclipped)
    full_action_space: bool = False  # all 18 actions instead of the game's minimal set
    max_episode_frames: int = 108_000  # truncate a game after this many emulator frames (30 min at 60 Hz)
    num_threads: int = 0  # ale-py worker threads (0: ale-py decides)
    eval_protocol: EvalProtocol = EvalProtocol.frames  # how an evaluation is played (evaluation.py)
    eval_episodes: int = 10  # games per evaluation under eval_protocol=episodes
    eval_frames: int = 500_000  # emulator frames per evaluation under eval_protocol=frames (DQN Zoo: 500k)
    eval_every_steps: int = 62_500  # training (optimizer) steps between evaluations (x4 agent steps x4 frames = 1M frames, one DQN Zoo iteration)
    eval_epsilon: float = 0.01  # epsilon-greedy epsilon in evaluation (DQN Zoo tuned Double DQN 0.01; Nature DQN 0.05)


# ---------------------------------------------------------------------------------- environment


def _as_config(cfg: Any) -> AtariEnvConfig:
    """An ``AtariEnvConfig`` from a dataclass, a DictConfig or any object with the fields."""
    values = {}
    for f in dataclasses.fields(AtariEnvConfig):
        if hasattr(cfg, f.name) or (isinstance(cfg, dict) and f.name in cfg):
            v = cfg[f.name] if isinstance(cfg, dict) else getattr(cfg, f.name)
            values[f.name] = getattr(v, "value", v)
    return AtariEnvConfig(**values)


class AtariVectorEnv:
    """``num_envs`` Atari games stepped in lockstep (implements ``envs.base.VectorEnv``).

    See the module docstring for the protocol. Extra attributes: ``game`` (ROM name), ``cfg`` (an
    ``AtariEnvConfig``), ``obs`` (current observation), ``episodes_finished``, ``steps`` (agent
    steps taken).
    """

    def __init__(self, cfg: Any, device: torch.device | str, seed: int, *, _stream: int = 0):
        import ale_py

        self.cfg = _as_config(cfg)
        c = self.cfg
        if c.num_envs <= 0 or c.stack <= 0 or c.frame_skip <= 0 or c.screen_size <= 0:
            raise ValueError(f"env: num_envs, stack, frame_skip, screen_size must be positive ({c})")
        self.game = resolve_game(c.game)
        self.device = torch.device(device)
        self.num_envs = int(c.num_envs)
        self.obs_shape = (c.stack, c.screen_size, c.screen_size)
        self.seed = int(seed)
        self._stream = int(_stream)
        self._ale = ale_py.AtariVectorEnv(
            self.game,
            self.num_envs,
            num_threads=c.num_threads,
            max_num_frames_per_episode=c.max_episode_frames,
            repeat_action_probability=c.sticky_action_prob,
            full_action_space=c.full_action_space,
            img_height=c.screen_size,
            img_width=c.screen_size,
            grayscale=True,
            stack_num=c.stack,
            frameskip=c.frame_skip,
            maxpool=True,
            noop_max=c.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=c.fire_reset,
            autoreset_mode="NextStep",
        )
        self.num_actions = int(self._ale.single_action_space.n)
        self.reward_range = (
            (-1.0, 1.0) if self.cfg.clip_rewards else None
        )  # the replay's rewards: sign(r), or unbounded
        self._rng = np.random.default_rng([self.seed, self._stream, 0xA7A12])
        self.steps = 0
        self.episodes_finished = 0
        self._must_reset = True
        N = self.num_envs
        self._obs_np: np.ndarray | None = None  # uint8 [N, stack, H, W], host copy of the observation
        self._obs_u8: torch.Tensor | None = None  # the same on the device
        self._tick = 0
        self._lives = np.zeros(N, dtype=np.int64)
        self._ended = np.zeros(N, dtype=bool)  # game over/truncated at the last step: new game next step
        self._ep_return = np.zeros(N, dtype=np.float64)
        self._ep_length = np.zeros(N, dtype=np.int64)  # agent steps (= actions applied) in this game
        self._ep_step = np.zeros(N, dtype=np.int64)  # frames of this game in the stack - 1, capped
        self._ep_frame = np.zeros(N, dtype=np.int64)  # emulator frames into this game (ale-py's count)
        self._game_seed = np.zeros(N, dtype=np.int64)  # ALE seed this game was reset with
        self._log = np.zeros((N, 1024), dtype=np.uint8)  # actions applied in this game (for resume)

    # ------------------------------------------------------------------------------ helpers

    def _draw_seeds(self, n: int) -> np.ndarray:
        return self._rng.integers(0, 2**31 - 1, size=n, dtype=np.int64)

    def _set_obs(self, obs: np.ndarray) -> torch.Tensor:
        """Keep the uint8 observation (host and device); return its float32 version on the device.

        On the CPU the copy and conversion run in numpy, single-threaded: torch's intra-op threads
        spinning next to ale-py's worker threads cut throughput ~10x on a 2-core machine at 4+
        envs. The numpy and torch conversions give identical floats (both IEEE-rounded x / 255).
        """
        self._obs_np = obs.copy()
        if self.device.type == "cpu":
            self._obs_u8 = torch.from_numpy(self._obs_np)
            f32 = self._obs_np.astype(np.float32)
            f32 /= np.float32(255.0)
            return torch.from_numpy(f32)
        self._obs_u8 = torch.from_numpy(self._obs_np).to(self.device)
        return frames_to_float(self._obs_u8)

    def _check_fresh_stacks(self, obs: np.ndarray, fresh: np.ndarray) -> None:
        """The replay rebuilds a fresh stack as zeros + first frame: make sure ale-py does that."""
        if fresh.any() and self.cfg.stack > 1 and obs[fresh, :-1].any():
            raise RuntimeError(
                "ale-py returned a reset observation whose older stacked frames are not zero; "
                "AtariReplay assumes zero padding at game starts (ale-py changed behaviour?)"
            )

    def _partial_reset(self, mask: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, dict]:
        if mask.all():
            return self._ale.reset(seed=seeds)
        return self._ale.reset(seed=seeds, options={"reset_mask": mask})

    def _log_actions(self, live: np.ndarray, actions: np.ndarray) -> None:
        need = int(self._ep_length.max()) + 1
        if need > self._log.shape[1]:
            grown = np.zeros((self.num_envs, max(need, 2 * self._log.shape[1])), dtype=np.uint8)
            grown[:, : self._log.shape[1]] = self._log
            self._log = grown
        idx = np.flatnonzero(live)
        self._log[idx, self._ep_length[idx]] = actions[idx]

    @property
    def obs(self) -> torch.Tensor:
        """The current observation (float32 on ``device``), as the last reset/step returned it."""
        if self._obs_u8 is None:
            raise RuntimeError("AtariVectorEnv: call reset() first")
        return frames_to_float(self._obs_u8)

    # ------------------------------------------------------------------------------ protocol

    def reset(self) -> torch.Tensor:
        """Start new games in every copy (partial games are dropped) and return the observations."""
        self._game_seed = self._draw_seeds(self.num_envs)
        obs, info = self._ale.reset(seed=self._game_seed.copy())
        self._check_fresh_stacks(obs, np.ones(self.num_envs, dtype=bool))
        self._tick = next_tick()
        self._lives = np.asarray(info["lives"], dtype=np.int64).copy()
        self._ep_frame = np.asarray(info["episode_frame_number"], dtype=np.int64).copy()
        self._ended[:] = False
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_step[:] = 0
        self._must_reset = False
        return self._set_obs(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        if self._must_reset:
            raise RuntimeError("AtariVectorEnv.step: call reset() first")
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"AtariVectorEnv.step: actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        a_host = actions.detach().to("cpu", torch.int64).numpy()
        obs, reward, terminated, truncated, info = self._ale.step(a_host)
        reward = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        lives = np.asarray(info["lives"], dtype=np.int64)

        autoreset = self._ended  # these copies start a new game at this step; their action is ignored
        if autoreset.any():
            # ale-py has just auto-reset them from its internal RNG; re-reset them from ours so that
            # every game is a function of (seed, actions): that is what makes resume exact
            seeds = self._draw_seeds(int(autoreset.sum()))
            self._game_seed[autoreset] = seeds
            obs, info = self._partial_reset(autoreset, seeds)
            lives = np.asarray(info["lives"], dtype=np.int64)
            reward = np.where(autoreset, 0.0, reward)
            self._check_fresh_stacks(obs, autoreset)
        live = ~autoreset
        life_lost = live & (lives < self._lives)
        terminal = terminated | (self.cfg.terminal_on_life_loss & life_lost)

        self._log_actions(live, a_host)
        self._ep_return += np.where(live, reward, 0.0)
        self._ep_length += live
        ended = terminated | truncated
        info_out: dict[str, Any] = {
            "episode_returns": torch.from_numpy(self._ep_return[ended].copy()),
            "episode_lengths": torch.from_numpy(self._ep_length[ended].copy()),
            "episode_truncated": torch.from_numpy(truncated[ended] & ~terminated[ended]),
            "episode_envs": torch.from_numpy(np.flatnonzero(ended)),  # which copies ended a game
        }
        self.episodes_finished += int(ended.sum())
        self._ep_return[autoreset] = 0.0
        self._ep_length[autoreset] = 0
        self._ep_step = np.where(autoreset, 0, np.minimum(self._ep_step + 1, self.cfg.stack - 1))
        self._lives = lives.copy()
        self._ep_frame = np.asarray(info["episode_frame_number"], dtype=np.int64).copy()
        self._ended = ended

        clipped = np.sign(reward) if self.cfg.clip_rewards else reward
        obs_tm1, tick_tm1 = self._obs_u8, self._tick
        obs_f = self._set_obs(obs)
        self._tick = next_tick()
        self.steps += 1
        record = {
            # device tensors
            "obs_tm1": obs_tm1,  # uint8 [N, stack, H, W]; the replay reads it only at a discontinuity
            "frame_t": self._obs_u8[:, -1],  # uint8 [N, H, W], newest frame of o_t
            "a_tm1": actions,
            # host tensors (born on the host; the replay copies them to the device in one transfer)
            "r_t": torch.from_numpy(clipped.astype(np.float32)),
            "discount_t": torch.from_numpy((~terminal).astype(np.float32)),
            "valid": torch.from_numpy(live.copy()),
            "ep_step_t": torch.from_numpy(self._ep_step.copy()),
            "tick_tm1": torch.tensor(tick_tm1),
            "tick_t": torch.tensor(self._tick),
        }
        reward_d = torch.from_numpy(reward.astype(np.float32)).to(self.device)
        return StepResult(obs=obs_f, reward=reward_d, record=record, info=info_out)

    def make_replay(self, capacity: int) -> AtariReplay:
        return AtariReplay(
            capacity,
            self.num_envs,
            frame_shape=(self.cfg.screen_size, self.cfg.screen_size),
            stack=self.cfg.stack,
            device=self.device,
        )

    def make_eval_env(self, num_envs: int | None = None, stream: int = 1) -> AtariVectorEnv:
        """A second environment on the same game for evaluation, with its own seed stream.

        ``terminal_on_life_loss`` is irrelevant there (only returns matter); ``num_envs`` defaults
        to this environment's; ``stream`` (>= 1) picks an independent seed stream, so that each
        evaluation can play other games.
        """
        if stream < 1:
            raise ValueError("make_eval_env: stream must be >= 1 (stream 0 is the training env's)")
        cfg = dataclasses.replace(self.cfg, num_envs=int(num_envs or self.num_envs))
        return AtariVectorEnv(cfg, self.device, self.seed, _stream=self._stream + int(stream))

    # ------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Host state only (a few KB per copy): seeds and actions of the games in progress."""
        if self._must_reset:
            return {
                "game": self.game,
                "num_envs": self.num_envs,
                "rng": self._rng.bit_generator.state,
                "steps": self.steps,
                "episodes_finished": self.episodes_finished,
                "started": False,
            }
        longest = int(self._ep_length.max())
        return {
            "game": self.game,
            "num_envs": self.num_envs,
            "rng": self._rng.bit_generator.state,
            "steps": self.steps,
            "episodes_finished": self.episodes_finished,
            "started": True,
            "game_seed": self._game_seed.copy(),
            "actions": self._log[:, :longest].copy(),
            "ep_length": self._ep_length.copy(),
            "ep_return": self._ep_return.copy(),
            "ep_step": self._ep_step.copy(),
            "lives": self._lives.copy(),
            "episode_frame": self._ep_frame.copy(),
            "ended": self._ended.copy(),
            "tick": self._tick,
            "obs": self._obs_np.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the games in progress exactly, by re-playing them (see the module docstring)."""
        if state["game"] != self.game or int(state["num_envs"]) != self.num_envs:
            raise ValueError(
                f"AtariVectorEnv.load_state_dict: state is for {state['game']} x{state['num_envs']}, "
                f"this env is {self.game} x{self.num_envs}"
            )
        self._rng.bit_generator.state = state["rng"]
        self.steps = int(state["steps"])
        self.episodes_finished = int(state["episodes_finished"])
        if not state["started"]:
            self._must_reset = True
            self._obs_u8 = self._obs_np = None
            return
        seeds = np.asarray(state["game_seed"], dtype=np.int64)
        log = np.asarray(state["actions"], dtype=np.int64)
        lengths = np.asarray(state["ep_length"], dtype=np.int64)
        obs, info = replay_games(self._ale, self._partial_reset, seeds, log, lengths)
        reproduced = (
            np.array_equal(obs, state["obs"])
            and np.array_equal(np.asarray(info["lives"]), state["lives"])
            and np.array_equal(np.asarray(info["episode_frame_number"]), state["episode_frame"])
        )
        if not reproduced:
            raise RuntimeError(
                "AtariVectorEnv.load_state_dict: re-playing the saved games did not reproduce the saved "
                "observations (different ale-py version or settings?)"
            )
        self._game_seed = seeds.copy()
        self._log = np.zeros((self.num_envs, max(1024, log.shape[1] + 1)), dtype=np.uint8)
        self._log[:, : log.shape[1]] = log
        self._ep_length = lengths.copy()
        self._ep_return = np.asarray(state["ep_return"], dtype=np.float64).copy()
        self._ep_step = np.asarray(state["ep_step"], dtype=np.int64).copy()
        self._lives = np.asarray(state["lives"], dtype=np.int64).copy()
        self._ep_frame = np.asarray(state["episode_frame"], dtype=np.int64).copy()
        self._ended = np.asarray(state["ended"], dtype=bool).copy()
        self._tick = int(state["tick"])
        self._must_reset = False
        self._set_obs(obs)

    def close(self) -> None:
        self._ale.close()


# ------------------------------------------------------------------------------------- resuming
# ale-py's vector interface has no clone/restore of the emulator, so a checkpoint keeps each copy's
# game seed and actions and a resumed run re-plays them ("Checkpoints" above).


def replay_games(
    ale: Any,
    partial_reset: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict]],
    seeds: np.ndarray,
    log: np.ndarray,
    lengths: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """Re-play every game in progress from its seed on ``ale`` (an ``ale_py.AtariVectorEnv``) and
    return the last ``(obs, info)``.

    ``seeds[i]`` is copy ``i``'s game seed, ``log[i, :lengths[i]]`` its actions so far. The copies
    step in lockstep, so a game of ``L_i`` actions starts (a seeded partial reset) at step
    ``L - L_i`` and all of them end together; before its start a copy plays no-ops in a throwaway
    game. A game with no action yet is reset last.
    """
    num_envs = len(seeds)
    total = int(lengths.max()) if lengths.size else 0
    start = total - lengths
    obs, info = ale.reset(seed=seeds.copy())
    for j in range(total):
        begin = (start == j) & (j > 0)
        if begin.any():
            obs, info = partial_reset(begin, seeds[begin])
        k = np.clip(j - start, 0, None)
        acts = np.where(j >= start, log[np.arange(num_envs), np.minimum(k, max(log.shape[1] - 1, 0))], 0)
        obs, _, _, _, info = ale.step(acts.astype(np.int64))
    late = (start == total) & (total > 0)  # games with no action yet
    if late.any():
        obs, info = partial_reset(late, seeds[late])
    return obs, info


def check_config(cfg: Any, key: str) -> None:
    """Range checks of ``env=atari`` at ``key``, and the game name against ale-py's ROM list
    (``ConfigError`` naming ``<key>.game`` and the close names)."""
    check_game(getattr(cfg[key], "game", None), f"{key}.game")
    for size in ("num_envs", "frame_skip", "screen_size", "stack", "max_episode_frames"):
        positive(cfg, f"{key}.{size}")
    positive(cfg, f"{key}.noop_max", allow_zero=True)
    positive(cfg, f"{key}.num_threads", allow_zero=True)  # 0: ale-py decides
    unit(cfg, f"{key}.sticky_action_prob")
    check_eval(cfg, key)


registry.register("env", "atari", AtariEnvConfig, build=AtariVectorEnv, check=check_config, episodic=True)
