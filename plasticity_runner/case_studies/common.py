"""What both case studies do around their loops: run directory, metadata, device, metrics writer.

A case study owns its run directory as the trainer does (``run.json`` with the flattened config,
``metrics/``, ``arrays/``), but keeps no checkpoint: started again in a directory whose run is
finished with the same config it does nothing; started in an unfinished one it deletes that run's
metric shards and starts over (a different config is refused, as the trainer refuses it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .. import sinks
from ..metrics import ARRAYS_DIR, METRICS_DIR, MetricsWriter, write_run_metadata
from ..trainer import FINISHED, _check_same_run, resolve_device, seed_everything

log = logging.getLogger("plasticity_runner")


@dataclass
class CaseRun:
    """An open case-study run: where it writes and with what."""

    run_dir: Path
    run_id: str
    config: dict[str, Any]  # the resolved config as written to run.json (before flattening)
    meta: dict[str, Any]  # extra run.json keys (device, status)
    device: torch.device
    writer: MetricsWriter


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a dict, with ``interventions = "none"`` as the trainer records it."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["interventions"] = "none"  # validate() refuses interventions for the case studies
    return config


def begin_run(cfg: DictConfig, run_dir: str | Path) -> CaseRun | dict[str, Any]:
    """Open ``run_dir`` for a fresh run of ``cfg``, or return the summary of its finished run.

    Sets the seed and torch's thread count, and writes ``run.json`` with status ``running``.
    """
    run_dir = Path(run_dir)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    config = run_config(cfg)
    previous = _check_same_run(run_dir, config)
    if previous is not None and previous.get("status") in FINISHED:
        log.info("run %s is already %s (%s); nothing to do", previous["run_id"], previous["status"], run_dir)
        return {"run_id": previous["run_id"], "run_dir": str(run_dir), "steps": previous.get("steps_done"),
                "status": previous["status"], "already_finished": True}
    if previous is not None:  # an interrupted run: no checkpoint to resume from, so start over
        for shard in [*(run_dir / METRICS_DIR).glob("step_*"), *(run_dir / ARRAYS_DIR).glob("step_*")]:
            shard.unlink()
        log.info("run %s was interrupted; the case study starts over in %s", previous["run_id"], run_dir)
    device = resolve_device(cfg.device)
    seed_everything(int(cfg.seed))
    meta = {"device": str(device), "status": "running", "resumed_from_step": None}
    run_id = write_run_metadata(run_dir, config, extra=meta)
    opened = sinks.open_sinks(cfg, run_dir, run_id, config, resumed_from=None)  # a case study starts over
    return CaseRun(run_dir, run_id, config, meta, device, MetricsWriter(run_dir, run_id, opened))


def end_run(run: CaseRun, status: str, steps: int, **summary: Any) -> dict[str, Any]:
    """Write the final ``run.json`` (``status``, ``steps_done``) and return the run's summary."""
    run.writer.sinks.close()
    write_run_metadata(run.run_dir, run.config, extra={**run.meta, "status": status, "steps_done": steps})
    log.info("run %s %s at step %d: metrics in %s", run.run_id, status, steps, (run.run_dir / METRICS_DIR).resolve())
    return {"run_id": run.run_id, "run_dir": str(run.run_dir), "steps": steps, "status": status, **summary}


@torch.no_grad()
def snapshot(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``params`` (to measure an update as the difference after a step)."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def distance(params: list[torch.Tensor], others: list[torch.Tensor]) -> torch.Tensor:
    """``|theta - theta'|_2`` over all tensors, a device scalar (no host sync)."""
    diffs = torch._foreach_sub([p.detach() for p in params], others)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))
