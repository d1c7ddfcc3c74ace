"""MinAtar (Young & Tian 2019): five 10x10 games with the game logic in numpy, Atari at CPU scale.

The games are the ``minatar`` package's own (``minatar.Environment``), one object per copy; this
module only vectorises them and fits them to the runner's contract (``base.py``).

* **Games.** ``breakout``, ``space_invaders``, ``freeway``, ``asterix``, ``seaquest``. Observations
  are the game's ``state()``, ``[10, 10, C]`` bool, as float32 ``[C, 10, 10]`` in ``{0, 1}`` on the
  device (C: 4, 6, 7, 4, 10 channels).
* **Stochasticity as in the MinAtar paper**, both named in the config: ``sticky_action_prob``
  (default 0.1: with that probability per step the previous action is repeated, the package's
  default) and ``difficulty_ramping`` (default true: the games speed up as they go on).
* **Actions.** Every MinAtar game takes the same six actions (no-op, left, up, right, down, fire);
  a game ignores those it has no use for, so they act as no-ops. The default is all six, as the
  MinAtar paper's DQN; ``minimal_action_set: true`` gives the game's own minimal set instead.
* **Episodes.** A copy whose game ends is reset at once: the step's record carries the terminal
  state as ``o_t`` with ``discount_t = 0``, and ``StepResult.obs`` is the new game's first state.
  Games have no time limit other than their own (freeway's 2500 steps is a game over), as in the
  package. Rewards are the game's (no clipping: MinAtar rewards are small integers).
* **Episode statistics** as Atari's (``StepResult.info``: ``episode_returns``, ``episode_lengths``,
  ``episode_truncated`` (always false), ``episode_envs``), host tensors.
* **Frames.** MinAtar has no frame skip: one frame is one agent step, the MinAtar paper's unit
  ("5 million frames"). ``frame_skip`` is fixed at 1 so that frame-counted metrics and schedules
  read the same as Atari's.
* **Seeds.** Copy ``i`` of stream ``s`` (0: training, >= 1: evaluation) is seeded with
  ``stream_seed(env_seed, "minatar", s, i)`` (mod 2**32, numpy's ``RandomState`` range); its one
  ``RandomState`` drives both the sticky actions and the game, as ``Environment.seed`` sets it up.
* **Checkpoints.** ``state_dict`` pickles the game objects (numpy state and RNGs, ~2 KB a copy):
  a resumed run continues bit for bit.
* **Chains** (``schedule``): a list of segments ``{game, steps}``; see ``envs/schedule.py``. The
  observation has the largest channel count of the chain's games, the others' channels zero-padded
  at the end.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import registry, safe_pickle
from ..errors import ConfigError, positive, unit
from ..seeding import stream_seed
from .base import EvalProtocol, StepResult, check_eval
from .replay import DeviceReplay
from .schedule import check_env, segments, switch_steps

GAMES: tuple[str, ...] = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
# what the pickled game objects of a checkpoint may hold: the games, numpy arrays and RandomStates;
# anything else is refused (safe_pickle), so a tampered checkpoint cannot run code on resume
PICKLED_GAME_TYPES = (
    frozenset({("minatar.environment", "Environment")} | {(f"minatar.environments.{g}", "Env") for g in GAMES})
    | safe_pickle.NUMPY_ARRAYS
    | safe_pickle.NUMPY_RANDOM_STATE
)
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
NUM_ACTIONS = 6  # n, l, u, r, d, f: the same six in every game
SIDE = 10


@dataclass
class MinAtarEnvConfig:
    """MinAtar environment; defaults follow the MinAtar paper (Young & Tian 2019) and package."""

    name: str = "minatar"
    game: str = "breakout"  # asterix | breakout | freeway | seaquest | space_invaders
    num_envs: int = 1  # parallel games stepped per agent step (transitions added per step)
    sticky_action_prob: float = 0.1  # P(the previous action is repeated) per step (MinAtar paper: 0.1)
    difficulty_ramping: bool = True  # games speed up over time (MinAtar paper: on)
    minimal_action_set: bool = False  # the game's minimal action set instead of all 6 (MinAtar DQN: all 6)
    frame_skip: int = 1  # fixed: MinAtar has no frame skip, a frame is an agent step
    schedule: list[Any] | None = None  # a chain: segments {game, steps} (envs/schedule.py); null: env.game only
    pause_at_switch: bool = False  # chains: a probe pause right before and right after each switch
    eval_protocol: EvalProtocol = EvalProtocol.episodes  # how an evaluation is played (evaluation.py)
    eval_episodes: int = (
        10  # games per evaluation under eval_protocol=episodes (paper: none, it reports training returns)
    )
    eval_frames: int = 10_000  # frames (agent steps) per evaluation under eval_protocol=frames
    eval_every_steps: int = 50_000  # training steps between evaluations
    eval_epsilon: float = 0.01  # epsilon-greedy epsilon in evaluation (paper: no evaluation; DQN Zoo's 0.01)


def resolve_game(name: str) -> str:
    """The MinAtar game name (``SpaceInvaders``, ``space-invaders`` and ``MinAtar/Breakout-v1`` work too)."""
    key = str(name).strip()
    if key.startswith("MinAtar/"):
        key = key[len("MinAtar/") :].split("-v")[0]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_").replace("-", "_")
    if snake in GAMES:
        return snake
    raise ValueError(f"env.game: unknown MinAtar game {name!r}; the games are: {', '.join(GAMES)}")


def segment_games(env_cfg: Any) -> list[str]:
    """The MinAtar game of each segment of ``env.schedule``; without a schedule, ``[env.game]``."""
    if getattr(env_cfg, "schedule", None) is None:
        return [resolve_game(env_cfg.game)]
    games = []
    for k, seg in enumerate(segments(env_cfg)):
        unknown = set(seg) - {"game", "steps"}
        if unknown or "game" not in seg:
            raise ValueError(f"env.schedule.{k}: a MinAtar segment is {{game, steps}}, got keys {sorted(seg)}")
        try:
            games.append(resolve_game(seg["game"]))
        except ValueError as e:
            raise ValueError(f"env.schedule.{k}.game: {e}") from None
    return games


def _as_config(cfg: Any) -> MinAtarEnvConfig:
    values = {}
    for f in dataclasses.fields(MinAtarEnvConfig):
        if isinstance(cfg, dict):
            if f.name in cfg:
                values[f.name] = cfg[f.name]
        elif hasattr(cfg, f.name):
            values[f.name] = getattr(cfg, f.name)
    for k, v in list(values.items()):
        values[k] = getattr(v, "value", v)
    if values.get("schedule") is not None:  # DictConfig/ListConfig -> plain lists of dicts
        from omegaconf import OmegaConf

        s = values["schedule"]
        values["schedule"] = OmegaConf.to_container(s, resolve=True) if OmegaConf.is_config(s) else list(s)
    return MinAtarEnvConfig(**values)


def _environment_class():
    try:
        from minatar import Environment
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "env=minatar needs the minatar package: pip install 'plasticity-runner[minatar]' (or pip install minatar)"
        ) from e
    return Environment


def _new_game(game: str, cfg: MinAtarEnvConfig, seed: int):
    Environment = _environment_class()

    env = Environment(game, sticky_action_prob=cfg.sticky_action_prob, difficulty_ramping=cfg.difficulty_ramping)
    env.seed(int(seed) % 2**32)
    env.reset()
    return env


class MinAtarVectorEnv:
    """``num_envs`` MinAtar games stepped in lockstep (implements ``envs.base.VectorEnv``).

    Extra attributes: ``minatar_game`` (the game being played; deliberately not ``game``, which
    evaluation reads as an Atari ROM name), ``games`` (the chain's games, or the one game),
    ``segment`` (index into ``cfg.schedule``, 0 without one), ``cfg``, ``steps``.
    """

    def __init__(
        self,
        cfg: Any,
        device: torch.device | str,
        seed: int,
        *,
        _stream: int = 0,
        _channels: int | None = None,
        _action_set: list[int] | None = None,
    ):
        self.cfg = _as_config(cfg)
        c = self.cfg
        if c.num_envs <= 0:
            raise ValueError(f"env.num_envs: must be > 0, got {c.num_envs}")
        if c.frame_skip != 1:
            raise ValueError(f"env.frame_skip: MinAtar has no frame skip, must be 1, got {c.frame_skip}")
        if not 0.0 <= c.sticky_action_prob <= 1.0:
            raise ValueError(f"env.sticky_action_prob: must lie in [0, 1], got {c.sticky_action_prob}")
        self.games = segment_games(c)
        self.switch_steps = switch_steps(c) if c.schedule is not None else None  # training steps
        self.device = torch.device(device)
        self.num_envs = int(c.num_envs)
        self.obs_shape = (_channels or max(CHANNELS[g] for g in self.games), SIDE, SIDE)
        self.seed, self._stream = int(seed), int(_stream)
        self.action_set = list(_action_set) if _action_set is not None else self._union_action_set()
        self.num_actions = len(self.action_set)
        self.reward_range = None  # the games' own rewards, no bound declared: two_hot needs an explicit support
        self.steps = 0
        self.episodes_finished = 0
        self.segment = 0
        self._start(0)

    # ------------------------------------------------------------------------------ helpers

    def _union_action_set(self) -> list[int]:
        """Agent action k -> MinAtar action ``action_set[k]`` (the union of the chain's sets)."""
        if not self.cfg.minimal_action_set:
            return list(range(NUM_ACTIONS))
        Environment = _environment_class()
        union: set[int] = set()
        for g in self.games:
            union.update(Environment(g).minimal_action_set())
        return sorted(union)

    def _start(self, segment: int) -> None:
        """New games of segment ``segment`` in every copy (its own seeds)."""
        self.segment = int(segment)
        self.minatar_game = self.games[self.segment]
        # a chain's segment 0 uses the same seeds as the plain env on that game
        path = (self._stream,) if self.segment == 0 else (self._stream, "segment", self.segment)
        self._envs = [
            _new_game(self.minatar_game, self.cfg, stream_seed(self.seed, "minatar", *path, i))
            for i in range(self.num_envs)
        ]
        allowed = set(self._envs[0].minimal_action_set()) if self.cfg.minimal_action_set else set(range(NUM_ACTIONS))
        # actions of the chain's union that this game lacks play as no-ops (action 0)
        self._map = np.array([a if a in allowed else 0 for a in self.action_set], dtype=np.int64)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._obs_np = self._states()

    def _states(self) -> np.ndarray:
        """bool [N, C, 10, 10]: each copy's ``state()`` channels-first, zero-padded to ``obs_shape``."""
        out = np.zeros((self.num_envs, *self.obs_shape), dtype=bool)
        for i, env in enumerate(self._envs):
            s = env.state()
            out[i, : s.shape[2]] = s.transpose(2, 0, 1)
        return out

    def _to_device(self, obs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(obs).to(self.device)

    @property
    def obs(self) -> torch.Tensor:
        """The current observation, float32 ``[N, C, 10, 10]`` on ``device``."""
        return self._to_device(self._obs_np).float()

    # ------------------------------------------------------------------------------ protocol

    def reset(self) -> torch.Tensor:
        """Start new games in every copy (from the current segment's seeds) and return the observations."""
        self._start(self.segment)
        return self.obs

    def switch(self, segment: int) -> torch.Tensor:
        """Move a chain to ``segment``: games in progress are dropped (their returns not counted)
        and new games of the segment's game start; returns the new observations."""
        self._start(segment)
        return self.obs

    def step(self, actions: torch.Tensor) -> StepResult:
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"MinAtarVectorEnv.step: actions must have shape ({self.num_envs},), got {tuple(actions.shape)}"
            )
        a_host = self._map[actions.detach().to("cpu", torch.int64).numpy()]
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float64)
        ended = np.zeros(n, dtype=bool)
        o_t = np.zeros((n, *self.obs_shape), dtype=bool)
        nxt = np.zeros_like(o_t)
        for i, env in enumerate(self._envs):
            r, terminal = env.act(int(a_host[i]))
            reward[i], ended[i] = r, terminal
            s = env.state()
            o_t[i, : s.shape[2]] = s.transpose(2, 0, 1)
            if terminal:
                env.reset()
                s = env.state()
                nxt[i, : s.shape[2]] = s.transpose(2, 0, 1)
            else:
                nxt[i] = o_t[i]
        self._ep_return += reward
        self._ep_length += 1
        info = {
            "episode_returns": torch.from_numpy(self._ep_return[ended].copy()),
            "episode_lengths": torch.from_numpy(self._ep_length[ended].copy()),
            "episode_truncated": torch.zeros(int(ended.sum()), dtype=torch.bool),
            "episode_envs": torch.from_numpy(np.flatnonzero(ended)),
        }
        self.episodes_finished += int(ended.sum())
        self._ep_return[ended] = 0.0
        self._ep_length[ended] = 0
        o_tm1 = self._obs_np
        self._obs_np = nxt
        self.steps += 1
        reward32 = torch.from_numpy(reward.astype(np.float32))
        record = {
            "o_tm1": self._to_device(o_tm1),
            "a_tm1": actions,
            "r_t": reward32,
            "discount_t": torch.from_numpy((~ended).astype(np.float32)),
            "o_t": self._to_device(o_t),
        }
        return StepResult(obs=self.obs, reward=reward32.to(self.device), record=record, info=info)

    def make_replay(self, capacity: int) -> DeviceReplay:
        return DeviceReplay(capacity, self.obs_shape, self.device, obs_dtype=torch.bool)  # bool grids

    def make_eval_env(self, num_envs: int | None = None, stream: int = 1) -> MinAtarVectorEnv:
        """An environment on the game now played (a chain: the current segment's), own seed stream ``stream >= 1``."""
        if stream < 1:
            raise ValueError("make_eval_env: stream must be >= 1 (stream 0 is the training env's)")
        cfg = dataclasses.replace(
            self.cfg, num_envs=int(num_envs or self.num_envs), game=self.minatar_game, schedule=None
        )
        # the same observation shape and action meaning as the training env (a chain pads channels, maps actions)
        return MinAtarVectorEnv(
            cfg,
            self.device,
            self.seed,
            _stream=self._stream + int(stream),
            _channels=self.obs_shape[0],
            _action_set=self.action_set,
        )

    def close(self) -> None:
        self._envs = []

    # ------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The game objects pickled together (their shared RNGs stay shared) plus the accumulators."""
        return {
            "games": list(self.games),
            "num_envs": self.num_envs,
            "segment": self.segment,
            "envs": pickle.dumps(self._envs),
            "ep_return": self._ep_return.copy(),
            "ep_length": self._ep_length.copy(),
            "obs": self._obs_np.copy(),
            "steps": self.steps,
            "episodes_finished": self.episodes_finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["games"]) != list(self.games) or int(state["num_envs"]) != self.num_envs:
            raise ValueError(
                f"MinAtarVectorEnv.load_state_dict: state is for {state['games']} x{state['num_envs']}, "
                f"this env is {self.games} x{self.num_envs}"
            )
        self._start(int(state["segment"]))
        self._envs = safe_pickle.loads(state["envs"], PICKLED_GAME_TYPES, "the MinAtar games in the checkpoint")
        self._ep_return = np.asarray(state["ep_return"], dtype=np.float64).copy()
        self._ep_length = np.asarray(state["ep_length"], dtype=np.int64).copy()
        self._obs_np = np.asarray(state["obs"], dtype=bool).copy()
        self.steps = int(state["steps"])
        self.episodes_finished = int(state["episodes_finished"])


def check_config(cfg: Any, key: str) -> None:
    """Range checks of ``env=minatar`` at ``key``: the game (or the chain's games), sizes, evaluation."""
    positive(cfg, f"{key}.num_envs")
    if cfg[key].frame_skip != 1:
        raise ConfigError(f"{key}.frame_skip", f"MinAtar has no frame skip, must be 1, got {cfg[key].frame_skip}")
    unit(cfg, f"{key}.sticky_action_prob")
    check_eval(cfg, key)
    check_env(cfg[key], segment_games)  # the MinAtar game, or env.schedule's segments


registry.register("env", "minatar", MinAtarEnvConfig, build=MinAtarVectorEnv, check=check_config, episodic=True)
