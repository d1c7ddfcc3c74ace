"""Environments, one module each: the classification MDPs (section 3.2, ``classification.py``),
Atari (section 6.3, ``atari.py``), MinAtar (``minatar.py``), and any other module in this package.

Each environment module registers itself (``registry.register("env", name, <Name>EnvConfig,
build=..., check=...)``): its config schema, its builder ``build(env_cfg, device, seed)`` and the
range checks of its keys (``check(cfg, "env")``, run by ``config.validate``); ``episodic=True``
says its games end (the trainer then logs ``episodes_finished`` and ``episode_return``). Importing
this package imports every module in it, so a new environment is one module here plus its
``configs/env/<name>.yaml``; optional dependencies (ale-py, minatar) are imported only when an
environment that needs them is built. ``make_env`` builds the one ``env.name`` names; see
``base.py`` for the contract every environment and its replay meet.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import registry

registry.load_modules(__name__, __path__)


def make_env(cfg: Any, device: torch.device, seed: int):
    """The vector environment named by ``cfg.name``, built by its registered builder."""
    known = registry.parts("env")
    part = known.get(cfg.name)
    if part is None:
        raise ValueError(f"env.name: unknown environment {cfg.name!r}; known: {', '.join(sorted(known))}")
    if part.build is None:
        raise ValueError(f"env.name: {cfg.name!r} is not a vector environment (it runs its own loop)")
    return part.build(cfg, device, seed)
