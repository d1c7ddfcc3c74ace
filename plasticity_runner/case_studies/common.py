"""What both case studies do around their loops, beyond the run lifecycle (``lifecycle``).

A case study owns its run directory as the trainer does (``run.json`` with the flattened config,
``metrics/``, ``arrays/``), but keeps no checkpoint: started again in a directory whose run is
finished with the same config it does nothing (``lifecycle``); started in an unfinished one it
deletes that run's metric shards and starts over (``begin_run``); a different config is refused,
as the trainer refuses it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..checkpoint import discard_after
from ..lifecycle import RunDir
from ..metrics import MetricsWriter
from ..seeding import seed_everything

log = logging.getLogger("plasticity_runner")


def begin_run(cfg: Any, run: RunDir) -> MetricsWriter:
    """Start ``run`` from step 0: an interrupted run's shards are deleted (there is no checkpoint
    to resume from), the global RNGs seeded, ``run.json`` written with status ``running``."""
    if run.previous is not None:  # an interrupted run: no checkpoint to resume from, so start over
        discard_after(run.run_dir, None)
        log.info("run %s was interrupted; the case study starts over in %s", run.previous["run_id"], run.run_dir)
    seed_everything(int(cfg.seed))
    return run.start(resumed_from=None)  # a case study starts over: its sinks too


def end_run(run: RunDir, status: str, steps: int, **summary: Any) -> dict[str, Any]:
    """Write the final ``run.json`` (``status``, ``steps_done``) and return the run's summary."""
    return run.finish({"status": status, "steps_done": steps}, **summary)


@torch.no_grad()
def snapshot(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``params`` (to measure an update as the difference after a step)."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def distance(params: list[torch.Tensor], others: list[torch.Tensor]) -> torch.Tensor:
    """``|theta - theta'|_2`` over all tensors, a device scalar (no host sync)."""
    diffs = torch._foreach_sub([p.detach() for p in params], others)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))
