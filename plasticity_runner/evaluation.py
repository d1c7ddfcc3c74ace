"""Evaluation (Atari, section 6.3 / appendix A.3): returns and human-normalised scores.

Every evaluation plays in a separate environment (its own seed stream, derived from the run seed
and the step) with an epsilon-greedy policy (``env.eval_epsilon``); the training environment,
replay and random streams are untouched. Two protocols (``env.eval_protocol``):

* ``episodes``: ``eval_episodes`` games in parallel copies, keeping the *first* game of every copy,
  so short games are not over-represented.
* ``frames`` (DQN Zoo's ``run_atari.py``): a fixed budget of ``eval_frames`` emulator frames per
  evaluation, played in ``env.num_envs`` copies (an equal share each; DQN Zoo: one copy). The
  return is the mean over the games *completed* within the budget; when none completed, the mean
  return of the unfinished games so far (DQN Zoo's ``EpisodeTracker`` convention). Games are
  still truncated at ``max_episode_frames``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .agents.dqn import DQNAgent
from .errors import choice

# the names an evaluation's scalars carry (the trainer writes them under phase ``eval``); the
# report keys on them (``report/names.py``)
PHASE = "eval"
EPISODE_RETURN, HUMAN_NORMALIZED_SCORE = "episode_return", "human_normalized_score"
SCALARS = (EPISODE_RETURN, "episode_return_std", HUMAN_NORMALIZED_SCORE, "num_episodes")


def evaluate(env: Any, agent: DQNAgent, episodes: int, epsilon: float, seed: int, stream: int) -> np.ndarray:
    """Unclipped returns of ``episodes`` games (one per copy of a fresh evaluation environment)."""
    eval_env = env.make_eval_env(num_envs=episodes, stream=stream)
    try:
        obs = eval_env.reset()
        generator = torch.Generator(obs.device).manual_seed(int(seed))
        returns = np.full(episodes, np.nan)
        while np.isnan(returns).any():
            result = eval_env.step(agent.act(obs, epsilon, generator))
            obs = result.obs
            for i, ret in zip(result.info["episode_envs"].tolist(), result.info["episode_returns"].tolist()):
                if np.isnan(returns[i]):
                    returns[i] = ret
        return returns
    finally:
        eval_env.close()


def evaluate_frames(
    env: Any, agent: DQNAgent, frames: int, num_envs: int, epsilon: float, seed: int, stream: int
) -> tuple[np.ndarray, int]:
    """DQN Zoo's protocol: play ``frames`` emulator frames in ``num_envs`` copies (``frames /
    (num_envs * frame_skip)`` agent steps each). Returns the unclipped returns of the completed
    games (or, when none completed, the partial returns of every copy) and the number completed."""
    eval_env = env.make_eval_env(num_envs=num_envs, stream=stream)
    steps = int(frames) // (num_envs * int(eval_env.cfg.frame_skip))
    try:
        obs = eval_env.reset()
        generator = torch.Generator(obs.device).manual_seed(int(seed))
        completed: list[float] = []
        running = np.zeros(num_envs)  # raw return of each copy's game in progress
        for _ in range(steps):
            result = eval_env.step(agent.act(obs, epsilon, generator))
            obs = result.obs
            running += result.reward.double().cpu().numpy()
            ended = result.info["episode_envs"].numpy()
            completed.extend(result.info["episode_returns"].tolist())
            running[ended] = 0.0
        if completed:
            return np.asarray(completed), len(completed)
        return running, 0
    finally:
        eval_env.close()


def evaluate_agent(env: Any, agent: DQNAgent, env_cfg: Any, seed: int, stream: int) -> dict[str, float]:
    """One evaluation under ``env_cfg.eval_protocol``; its scalars (see ``evaluation_scalars``)
    plus ``num_episodes``, the games that count (completed ones under ``frames``, 0 if none)."""
    protocol = choice(env_cfg.eval_protocol)
    epsilon = float(env_cfg.eval_epsilon)
    if protocol == "episodes":
        returns = evaluate(env, agent, int(env_cfg.eval_episodes), epsilon, seed=seed, stream=stream)
        completed = len(returns)
    elif protocol == "frames":
        returns, completed = evaluate_frames(
            env, agent, int(env_cfg.eval_frames), int(env_cfg.num_envs), epsilon, seed=seed, stream=stream
        )
    else:
        raise ValueError(f"env.eval_protocol: unknown protocol {protocol!r}; known: episodes, frames")
    return {**evaluation_scalars(env, returns), "num_episodes": float(completed)}


def evaluation_scalars(env: Any, returns: np.ndarray) -> dict[str, float]:
    """Mean return and, for the 57 benchmark games, the mean human-normalised score."""
    out = {EPISODE_RETURN: float(np.mean(returns)), "episode_return_std": float(np.std(returns))}
    game = getattr(env, "game", None)
    if game is not None:
        from .envs.atari import ATARI_57, AtariVectorEnv, human_normalized_score

        if isinstance(env, AtariVectorEnv) and game in ATARI_57:  # Atari's reference scores, never MinAtar's
            out[HUMAN_NORMALIZED_SCORE] = float(np.mean(human_normalized_score(game, returns)))
    return out
