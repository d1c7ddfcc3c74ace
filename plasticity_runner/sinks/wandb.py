"""Weights & Biases sink (``logger=[wandb]``): each parquet row as ``phase/metric`` at W&B step =
training step; the probe's training-loss curves as an image (``probe/curves``) and the Hessian
spectrum as a histogram (``curvature/hessian_spectrum``) at the pause step.

- Offline unless told otherwise: ``logger.wandb.mode``, else ``$WANDB_MODE``, else ``offline``
  (compute nodes often have no network); upload with ``wandb sync <run dir>/wandb/offline-run-*``.
- The W&B run id is the run's ``run_id`` (``metrics.run_id_for``: from the run directory, kept in
  ``run.json``), opened with ``resume="allow"``: a requeued or resumed run continues the same W&B
  run (offline: one ``offline-run-*`` folder per start, all with that id).
- The config is logged flattened (``metrics.flatten``: the keys of ``run.json`` and ``load_sweep``).
- Group and job type come from the multirun (``wandb_grouping``).
- Resume: the resumed start logs the steps after the checkpoint again. W&B keeps a run's history
  in step order and does not rewrite a step it has; parquet is the source of truth (on a CPU the
  re-logged values equal the first ones bit for bit, see ``tests/test_resume.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import flatten
from . import Row, figure_rgb, hessian_histogram, probe_curve_figure, rows_by_step

MAX_JOB_TYPE = 64  # W&B's limit on job_type
MAX_GROUP = 128  # W&B's limit on group


def _fit(name: str, limit: int) -> str:
    """``name`` if it fits W&B's ``limit``, else its head and 8 hex of its hash (still one per name)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def wandb_grouping(hydra_cfg: Any | None) -> tuple[str | None, str]:
    """``(group, job_type)`` of a run from its Hydra config (``HydraConfig.get()``; None outside Hydra).

    In a multirun: the group is the sweep directory (its last two path parts, e.g.
    ``2026-01-31/12-00-00`` or ``sweeps/fig6``), one W&B group per multirun; the job type is the
    run's own overrides other than ``seed`` (``intervention=[layer_norm],optimizer.lr=0.001``), so
    the seeds of one variant share a job type. A single run: no group, job type ``run``.
    """
    if hydra_cfg is None or str(getattr(hydra_cfg.mode, "name", hydra_cfg.mode)) != "MULTIRUN":
        return None, "run"
    sweep = Path(str(hydra_cfg.sweep.dir))
    group = "/".join(sweep.parts[-2:])
    overrides = sorted(o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith("seed="))
    return _fit(group, MAX_GROUP), _fit(",".join(overrides) or "run", MAX_JOB_TYPE)


def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


class WandbSink:
    def __init__(self, run: Any):
        self.run = run

    def write(self, rows: Sequence[Row], arrays: Mapping[str, np.ndarray], step: int) -> None:
        import wandb

        media: dict[str, Any] = {}
        if "probe/curve_loss" in arrays:
            fig = probe_curve_figure(arrays["probe/curve_loss"], arrays["probe/curve_steps"], step)
            media["probe/curves"] = wandb.Image(figure_rgb(fig))
        histogram = hessian_histogram(arrays)
        if histogram is not None:
            media["curvature/hessian_spectrum"] = wandb.Histogram(np_histogram=histogram)
        by_step = rows_by_step(rows)
        if media:
            by_step.setdefault(int(step), {}).update(media)
        for row_step, values in sorted(by_step.items()):
            self.run.log(values, step=row_step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def open_sink(cfg: Any, run_dir: Path, run_id: str, config: Mapping[str, Any], resumed_from: int | None) -> WandbSink:
    import wandb

    group, job_type = wandb_grouping(_hydra_config())
    mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
    run = wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        id=run_id,
        name=run_id,
        resume="allow",
        dir=str(run_dir),
        mode=mode,
        group=cfg.group or group,
        job_type=cfg.job_type or job_type,
        config=flatten(config),
        settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        reinit="create_new",  # the members of a population (population.py) are runs open side by side
    )
    return WandbSink(run)
