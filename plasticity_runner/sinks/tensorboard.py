"""TensorBoard sink (``logger=[tensorboard]``): each parquet row as a scalar ``phase/metric`` at its
step; the probe's training-loss curves as a figure (``probe/curves``) and the Hessian spectrum as a
histogram (``curvature/hessian_spectrum``) at the pause step.

Resume: the writer is opened with ``purge_step`` = the resumed checkpoint's step + 1 (0 for a run
that starts over), which writes a ``SessionLog.START`` event at that step. TensorBoard's readers
(``EventAccumulator``, hence ``tbparse`` and the TensorBoard UI) then drop every earlier-written
event at or after that step: the steps after the checkpoint, written before the crash and
discarded from parquet, are ignored, and the rewritten ones shown once. The old events stay in the
old event file on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import Row, hessian_histogram, probe_curve_figure

TB_DIR = "tensorboard"


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
            w.add_figure("probe/curves", fig, global_step=int(step), close=False)
        histogram = hessian_histogram(arrays)
        if histogram is not None:
            counts, edges = histogram
            centres = (edges[:-1] + edges[1:]) / 2
            w.add_histogram_raw(
                "curvature/hessian_spectrum", min=float(edges[0]), max=float(edges[-1]), num=float(counts.sum()),
                sum=float((counts * centres).sum()), sum_squares=float((counts * centres**2).sum()),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=int(step),
            )
        w.flush()  # a pause's values are on disk with its shard (a live tensorboard shows them at once)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def open_sink(cfg: Any, run_dir: Path, run_id: str, config: Mapping[str, Any], resumed_from: int | None) -> TensorBoardSink:
    log_dir = Path(cfg.log_dir) if cfg.log_dir else run_dir / TB_DIR
    purge_step = 0 if resumed_from is None else int(resumed_from) + 1
    return TensorBoardSink(log_dir, purge_step, int(cfg.flush_secs))
