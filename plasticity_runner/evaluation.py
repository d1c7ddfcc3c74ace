"""Evaluation episodes (Atari, section 6.3 / appendix A.3): returns and human-normalised scores.

Each evaluation plays ``eval_episodes`` games in parallel copies of a separate environment (its
own seed stream, derived from the run seed and the step) with an epsilon-greedy policy
(``env.eval_epsilon``), and keeps the *first* game of every copy, so short games are not
over-represented. The training environment, replay and random streams are untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .agents.dqn import DQNAgent


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


def evaluation_scalars(env: Any, returns: np.ndarray) -> dict[str, float]:
    """Mean return and, for the 57 benchmark games, the mean human-normalised score."""
    out = {"episode_return": float(np.mean(returns)), "episode_return_std": float(np.std(returns))}
    game = getattr(env, "game", None)
    if game is not None:
        from .envs.atari import ATARI_57, human_normalized_score

        if game in ATARI_57:
            out["human_normalized_score"] = float(np.mean(human_normalized_score(game, returns)))
    return out
