"""The two case studies of section 4, each an ``env`` option with its own loop.

* ``memorization`` (section 4.1, figure 1): an MLP memorises random labels of a fixed image set; the
  labels are re-drawn after every iteration. ``memorization.run_memorization``.
* ``brownian`` (section 4.2, figure 2): gradient descent on the Q-learning loss of the classification
  MDP against a random walk with the same step norms. ``brownian.run_brownian``.

Both write the same files as the trainer (``run.json``, parquet metric shards, npz arrays; see
``metrics.py``), so ``load_sweep`` and the report read them. They keep no checkpoint: a restart in
an unfinished run directory starts over (``common.begin_run``). ``the README`` lists
every metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def run_case_study(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the case study named by ``cfg.env.name`` into ``run_dir``; returns the run's summary."""
    if cfg.env.name == "memorization":
        from .memorization import run_memorization

        return run_memorization(cfg, run_dir)
    if cfg.env.name == "brownian":
        from .brownian import run_brownian

        return run_brownian(cfg, run_dir)
    raise ValueError(f"env.name: {cfg.env.name!r} is not a case study (memorization, brownian)")


__all__ = ["run_case_study"]
