"""Environments: the classification MDPs (section 3.2), Atari (section 6.3) and MinAtar.

``make_env(env_cfg, device, seed)`` builds the vectorised environment named by ``env_cfg.name``;
see ``base.py`` for the contract every environment and its replay meet.
"""

from __future__ import annotations

from typing import Any

import torch


def make_env(cfg: Any, device: torch.device, seed: int):
    """The vector environment named by ``cfg.name`` (imports are lazy: Atari needs ale-py, MinAtar the minatar package)."""
    if cfg.name == "classification":
        from .classification import ClassificationMDP

        return ClassificationMDP(cfg, device, seed)
    if cfg.name == "atari":
        from .atari import AtariVectorEnv

        return AtariVectorEnv(cfg, device, seed)
    if cfg.name == "minatar":
        from .minatar import MinAtarVectorEnv

        return MinAtarVectorEnv(cfg, device, seed)
    raise ValueError(f"env.name: unknown environment {cfg.name!r}")


from ..registry import load_modules  # noqa: E402

load_modules(__name__, __path__)  # each module registers its env (registry group "env")
