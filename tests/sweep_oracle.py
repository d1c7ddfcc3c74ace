"""The reference reader of a sweep: one parquet file at a time into pandas, config keys added one
column at a time (the straightforward implementation ``metrics.load_sweep`` must agree with)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from plasticity_runner.metrics import SCHEMA


def oracle_load_run(run_dir: Path) -> pd.DataFrame:
    files = sorted((Path(run_dir) / "metrics").glob("step_*.parquet"))
    if not files:
        return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in SCHEMA})
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values(["step", "phase", "metric"], kind="stable", ignore_index=True)


def oracle_load_sweep(runs: list[Path], config_columns=None) -> pd.DataFrame:
    """``runs``: the run directories, in the order the reader lists them."""
    frames = []
    for run_dir in runs:
        meta = json.loads((Path(run_dir) / "run.json").read_text())
        frame = oracle_load_run(run_dir)
        frame["run_dir"] = str(run_dir)
        config = meta.get("config", {})
        keys = list(config) if config_columns is None else list(config_columns)
        for key in keys:
            if key in frame.columns:
                continue
            frame[key] = config.get(key)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
