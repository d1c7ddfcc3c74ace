"""Resuming Atari games: ale-py's vector interface has no clone/restore of the emulator, so a
checkpoint keeps each copy's game seed and actions and a resumed run re-plays them (``atari.py``'s
"Checkpoints")."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def replay_games(ale: Any, partial_reset: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict]],
                 seeds: np.ndarray, log: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict]:
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
