"""TensorBoard sink (``logger=[tensorboard]``): each parquet row as a scalar ``phase/metric`` at its
step; the probe's training-loss curves as a figure (``probe/curves``) and the Hessian spectrum as a
histogram (``curvature/hessian_spectrum``) at the pause step.

Resume (chosen: the steps after the checkpoint are purged, from the files and for live readers):

- on opening, every event of a step after the resumed checkpoint is removed from the run's event
  files (``purge_events_after``: each file rewritten without them and renamed over itself, one
  atomic rename per file), so every reader (``tbparse``, which reads file by file, the
  TensorBoard UI, ``EventAccumulator``) sees each step once: the values the crashed start had
  mirrored after its last checkpoint, discarded from parquet, are gone from TensorBoard too;
- the new writer is also opened with ``purge_step`` = that step + 1, whose ``SessionLog.START``
  event makes a TensorBoard that is already running (and has the old events in memory) drop them.

A run that starts over (no checkpoint) purges from step 0.

Why not ``purge_step`` alone, the documented way: it only appends a ``SessionLog.START`` event,
which readers that replay a whole directory in order honour (the TensorBoard UI,
``EventAccumulator``). A reader of one file at a time does not: with ``purge_step`` alone,
``tbparse`` reads the crashed start's tail next to the resumed values (345 rows for 251 in
``tests/test_sinks.py::test_killed_and_resumed_run_mirrors_each_step_once``: two values at a step,
one of them discarded from parquet). The rewrite below is what makes every reader agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import Row, figure_rgb, hessian_histogram, probe_curve_figure

TB_DIR = "tensorboard"


def purge_events_after(log_dir: Path, last_step: int | None) -> int:
    """Remove the events of steps after ``last_step`` (every step-bearing event when None) from the
    event files in ``log_dir``; returns how many were removed. Each file is rewritten under a name
    TensorBoard does not read (no ``tfevents`` in it) and renamed over itself; a file left with no
    summary is deleted. Idempotent: a purge interrupted by a crash is completed by the next one."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    removed = 0
    for path in sorted(Path(log_dir).glob("*tfevents*")):
        kept, dropped = [], 0
        for raw in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(raw)
            if event.HasField("summary") and (last_step is None or event.step > last_step):
                dropped += 1
            else:
                kept.append((raw, event.HasField("summary")))
        if not dropped:
            continue
        removed += dropped
        if not any(has_summary for _, has_summary in kept):
            path.unlink()
            continue
        tmp = path.with_name(f".purging-{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for raw, _ in kept:
                writer.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return removed


class TensorBoardSink:
    def __init__(self, log_dir: Path, purge_step: int, flush_secs: int):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=flush_secs)

    def write(self, rows: Sequence[Row], arrays: Mapping[str, np.ndarray], step: int) -> None:
        w = self.writer
        for row_step, phase, metric, value, _ in rows:
            w.add_scalar(f"{phase}/{metric}", value, global_step=int(row_step))
        if "probe/curve_loss" in arrays:
            fig = probe_curve_figure(arrays["probe/curve_loss"], arrays["probe/curve_steps"], step)
            w.add_image("probe/curves", figure_rgb(fig), global_step=int(step), dataformats="HWC")
        histogram = hessian_histogram(arrays)
        if histogram is not None:
            counts, edges = histogram
            centres = (edges[:-1] + edges[1:]) / 2
            w.add_histogram_raw(
                "curvature/hessian_spectrum",
                min=float(edges[0]),
                max=float(edges[-1]),
                num=float(counts.sum()),
                sum=float((counts * centres).sum()),
                sum_squares=float((counts * centres**2).sum()),
                bucket_limits=edges[1:].tolist(),
                bucket_counts=counts.tolist(),
                global_step=int(step),
            )
        w.flush()  # a pause's values are on disk with its shard (a live tensorboard shows them at once)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def open_sink(
    cfg: Any, run_dir: Path, run_id: str, config: Mapping[str, Any], resumed_from: int | None
) -> TensorBoardSink:
    # a folder of its own per run: the resume purge rewrites every event file in it
    log_dir = Path(cfg.log_dir) / run_id if cfg.log_dir else run_dir / TB_DIR
    purge_events_after(log_dir, resumed_from)
    purge_step = 0 if resumed_from is None else int(resumed_from) + 1
    return TensorBoardSink(log_dir, purge_step, int(cfg.flush_secs))
