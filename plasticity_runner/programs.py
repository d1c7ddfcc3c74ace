"""Which program runs a config: the env picks it, in this one place.

An env part registered with ``program="module:function"`` (``registry`` group ``env``) runs that
function: the case studies of section 4 (``envs/memorization.py``, ``envs/brownian.py``). Every
other env trains the DQN agent (``trainer.run_dqn``). A program is ``program(cfg, run) -> summary``
with ``run`` a ``lifecycle.Run``; it is imported only when picked.

``run(cfg, run_dir, on_start)`` is the entry point of the CLI (``trainer.train`` hands over to it).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from . import lifecycle, registry, run_status
from .config import validate
from .envs.datasets import check_data

DQN = "plasticity_runner.trainer:run_dqn"  # the program of every env registered without one

Program = Callable[[DictConfig, lifecycle.Run], dict[str, Any]]


def program_path(env_name: str) -> str:
    """``"module:function"`` of the program that runs env ``env_name``."""
    part = registry.parts("env").get(env_name)
    return (part.extra.get("program") if part is not None else None) or DQN


def load_program(path: str) -> Program:
    """The function named by ``"module:function"`` (its module is imported now)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run(cfg: DictConfig, run_dir: str | Path, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one experiment into ``run_dir`` with the program its env picks; returns the run's summary.

    ``cfg`` is the composed config (``compose()`` in tests, ``@hydra.main`` from the CLI).
    ``on_start`` is called once the config is valid and its data set readable, the run directory's lock is held and the
    directory accepts the config, before anything is written (the CLI writes Hydra's record of
    the run there). The run holds the directory's lock throughout (``run_status``): a second
    process on it is refused, and a run that raises records ``crashed`` (or ``interrupted``) in
    ``run.json``. A finished run (``lifecycle.FINISHED``) is not run again.
    """
    validate(cfg)
    check_data(cfg.env)  # the data set is on disk and large enough: a config error now, not a crash later
    program = load_program(program_path(cfg.env.name))
    with run_status.RunRecord(run_dir) as record, contextlib.ExitStack() as cleanup:
        opened = lifecycle.open_run(cfg, run_dir, record, cleanup, on_start)
        if opened.finished:
            return opened.finished_summary()
        return program(cfg, opened)
