"""Reading a run or multirun directory for the report: which runs are used, their groups, and
small helpers to pull one metric per run out of the long-format frame of ``load_sweep``."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import metrics as _metrics
from ..metrics import find_runs, load_run_metadata, missing_pause_steps, read_runs, unique_runs
from ..status_file import effective_status
from . import names as N

# Columns of ``load_sweep`` that are not config keys.
FRAME_COLUMNS = frozenset(f.name for f in _metrics.SCHEMA) | {"run_dir", "group"}


class NoRunsError(FileNotFoundError):
    """The report path holds no run directory."""


@dataclass
class ReportData:
    """What the report reads: the metric rows of the runs it uses, and why others were left out.

    ``frame`` is the ``load_sweep`` frame of the used runs with one more column, ``group`` (a label
    naming the config keys that separate this run's group from the others, seed excluded).
    ``runs`` has one row per run directory found: run_dir, run_id, status, used, reason, rows,
    first_step, last_step, missing_steps, seed, group. ``status`` is ``run.json``'s, except
    ``stale`` for a run recorded ``running`` whose process is gone (``status_file``);
    ``missing_steps`` lists the pause steps whose metrics shard is missing (empty when none).
    """

    path: Path
    frame: pd.DataFrame
    runs: pd.DataFrame
    group_keys: list[str] = field(default_factory=list)

    @property
    def used(self) -> pd.DataFrame:
        return self.runs[self.runs["used"]]

    @property
    def skipped(self) -> pd.DataFrame:
        return self.runs[~self.runs["used"]]


def is_group_key(key: str) -> bool:
    """Whether a config key may separate two runs into different groups (seed-like keys may not)."""
    if key in N.GROUP_IGNORE_KEYS or key in FRAME_COLUMNS:
        return False
    if key.startswith(N.GROUP_IGNORE_PREFIXES):
        return False
    return not key.rsplit(".", 1)[-1].endswith(N.GROUP_IGNORE_SUFFIXES)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run_configs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (index run_dir) with the run's config columns."""
    config_cols = [c for c in frame.columns if c not in FRAME_COLUMNS]
    return frame.groupby("run_dir", sort=True)[config_cols].first() if len(frame) else pd.DataFrame()


def label_keys(configs: pd.DataFrame, keys: list[str], first: tuple[str, ...] = N.LABEL_PRIORITY) -> list[str]:
    """The fewest of ``keys`` that split the runs (rows of ``configs``) as all ``keys`` do.

    Keys are tried in the order ``first``, then the rest in their given order; a key is kept when
    it splits some set of runs the keys kept before it do not. So a key determined by kept keys
    (``architecture.channels`` by ``architecture.name``) or constant is left out, and runs with the
    same label are exactly the runs equal in every key.
    """
    if configs.empty:
        return []
    ordered = [k for k in first if k in keys] + [k for k in keys if k not in first]
    values = pd.DataFrame({k: configs[k].map(_fmt) for k in ordered}, index=configs.index)
    chosen: list[str] = []
    parts = 1
    for k in ordered:
        n = len(values[[*chosen, k]].drop_duplicates())
        if n > parts:
            chosen.append(k)
            parts = n
    return chosen


def natural_key(label: Any) -> list:
    """Sort key that orders ``width=16`` before ``width=128``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(label))]


def group_label(config: Any, keys: list[str]) -> str:
    """``key=value, ...`` over ``keys``, leaving out keys the run does not set (None)."""
    parts = [f"{k}={_fmt(config[k])}" for k in keys if _fmt(config[k]) != "None"]
    if parts:
        return ", ".join(parts)
    return "(defaults)" if keys else "all runs"


def assign_groups(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add a ``group`` label column: runs equal in every config key but the seed share a group.

    The label lists only the keys that tell groups apart (``label_keys``; ``"all runs"`` when none
    does) and that the run sets, so it stays short for a sweep over a few keys.
    """
    frame = frame.copy()
    if frame.empty:
        frame["group"] = pd.Series(dtype=str)
        return frame, []
    configs = run_configs(frame)
    keys = label_keys(configs, [k for k in configs.columns if is_group_key(k)])
    labels = {run_dir: group_label(row, keys) for run_dir, row in configs.iterrows()}
    frame["group"] = frame["run_dir"].map(labels)
    return frame, keys


def _read(runs: list[tuple[Path, dict]]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The ``load_sweep`` frame of ``runs`` in one read, and ``{run_dir: why}`` for runs whose
    shards cannot be read (then every run is read alone, so one corrupt shard costs only its run)."""
    with warnings.catch_warnings():  # the gaps are in the runs table (missing_steps)
        warnings.simplefilter("ignore", _metrics.MissingShardsWarning)
        try:
            return read_runs(runs), {}
        except Exception:  # noqa: BLE001 - find the runs at fault below
            pass
        good, bad = [], {}
        for run in runs:
            try:
                read_runs([run])
                good.append(run)
            except Exception as exc:  # a corrupt run must not stop the report on the others
                bad[str(run[0])] = f"unreadable: {type(exc).__name__}: {exc}"
        return read_runs(good), bad


def load_report_data(path: str | os.PathLike) -> ReportData:
    """Read every run at or below ``path`` (one ``load_sweep`` read) and decide which to use.

    A run is skipped when its ``run.json`` or a metric shard cannot be read (a shard whose checksum
    differs included), when it is a copy of a run already found (same ``run_id``: counted once,
    with a ``DuplicateRunWarning`` naming both paths), when its status is one of
    ``names.SKIP_STATUSES`` (``failed``), or when it has written no metrics (the reason then says
    whether it is still running or how it ended). Runs still going (status ``running``), stale,
    crashed, interrupted and diverged runs are used with the pauses they have. Directory symlinks
    are followed. Raises ``NoRunsError`` when no run directory exists at or below ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise NoRunsError(f"no such directory: {path}")
    run_dirs = find_runs(path)
    if not run_dirs:
        raise NoRunsError(f"no run (no {_metrics.RUN_FILE}) found at or below {path}")
    rows, metas, readable = [], {}, []
    for run_dir in run_dirs:
        row: dict[str, Any] = {
            "run_dir": str(run_dir),
            "run_id": None,
            "status": None,
            "used": False,
            "reason": "",
            "rows": 0,
            "first_step": None,
            "last_step": None,
            "missing_steps": [],
            "seed": None,
        }
        rows.append(row)
        try:
            meta = load_run_metadata(run_dir)
            row["run_id"] = meta.get("run_id")
            row["status"] = effective_status(run_dir, meta)
            row["seed"] = (meta.get("config") or {}).get(N.SEED)
            row["missing_steps"] = missing_pause_steps(run_dir, meta)
        except Exception as exc:  # a corrupt run must not stop the report on the others
            row["reason"] = f"unreadable: {type(exc).__name__}: {exc}"
            continue
        metas[str(run_dir)] = meta
        readable.append((run_dir, meta))
    kept, copies = unique_runs(readable)
    for row in rows:
        if Path(row["run_dir"]) in copies:
            row["reason"] = f"a copy of {copies[Path(row['run_dir'])]} (same run_id): counted once"
    everything, unreadable = _read(kept)
    steps = everything.groupby("run_dir", sort=False)["step"].agg(["size", "min", "max"]) if len(everything) else None
    used = []
    for row in rows:
        run_dir = row["run_dir"]
        if run_dir in unreadable:
            row["reason"] = unreadable[run_dir]
        if row["reason"]:
            continue
        if steps is not None and run_dir in steps.index:
            row["rows"] = int(steps.at[run_dir, "size"])
            row["first_step"] = int(steps.at[run_dir, "min"])
            row["last_step"] = int(steps.at[run_dir, "max"])
        meta = metas[run_dir]
        if row["status"] in N.SKIP_STATUSES:
            row["reason"] = f"status {row['status']}"
        elif not row["rows"]:
            status = row["status"]
            if status in (None, "running"):
                row["reason"] = "no metrics yet" + (" (still running)" if status else "")
            else:  # it ended before its first pause: say how
                why = "stale: its process is gone" if status == "stale" else f"status {status}"
                row["reason"] = f"no metrics ({why}{': ' + meta['error'] if meta.get('error') else ''})"
        else:
            row["used"] = True
            used.append(run_dir)
    runs = pd.DataFrame(rows)
    if used:
        frame = everything[everything["run_dir"].isin(used)].reset_index(drop=True)
    else:
        frame = pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in _metrics.SCHEMA})
        frame["run_dir"] = pd.Series(dtype=object)
    frame, group_keys = assign_groups(frame)
    groups = frame.groupby("run_dir")["group"].first() if len(frame) else pd.Series(dtype=str)
    runs["group"] = runs["run_dir"].map(groups)
    return ReportData(path=path, frame=frame, runs=runs, group_keys=group_keys)


# ------------------------------------------------------------------------------ frame helpers


def select(frame: pd.DataFrame, key: str, values: Any) -> pd.DataFrame:
    """Rows whose config ``key`` is one of ``values``; all rows when the frame lacks the key."""
    if key not in frame.columns:
        return frame
    values = [values] if isinstance(values, (str, int, float)) else list(values)
    return frame[frame[key].isin(values)]


def series(frame: pd.DataFrame, metric: tuple[str, str], finite: bool = True) -> pd.DataFrame:
    """One metric as ``run_dir, step, value`` (+ config columns), one row per run and step.

    Duplicate rows of a step (a step written twice after a resume) are averaged.
    """
    phase, name = metric
    rows = frame[(frame["phase"] == phase) & (frame["metric"] == name)]
    if finite:
        rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
    if rows.empty:
        return pd.DataFrame(columns=["run_dir", "step", "value"])
    out = rows.groupby(["run_dir", "step"], as_index=False, sort=True)["value"].mean()
    return out


def first_row(s: pd.DataFrame) -> pd.DataFrame:
    """The first row (step, value) of each run of a ``series``, NaN values included, by run_dir."""
    return s.drop_duplicates("run_dir", keep="first").set_index("run_dir").sort_index()


def last_row(s: pd.DataFrame) -> pd.DataFrame:
    """The last row (step, value) of each run of a ``series``, NaN values included, by run_dir."""
    return s.drop_duplicates("run_dir", keep="last").set_index("run_dir").sort_index()


def first_last(frame: pd.DataFrame, metric: tuple[str, str]) -> pd.DataFrame:
    """Per run with the metric at two or more steps: first_step, first, last_step, last.

    Non-finite values are kept: a run that diverged has a NaN/inf ``last`` (its real last pause),
    which the tables count as ``nonfinite`` instead of silently using an earlier pause.
    """
    s = series(frame, metric, finite=False)
    if s.empty:
        return pd.DataFrame(columns=["run_dir", "first_step", "first", "last_step", "last"])
    first, last = first_row(s), last_row(s)
    out = pd.DataFrame(
        {
            "first_step": first["step"],
            "first": first["value"],
            "last_step": last["step"],
            "last": last["value"],
            "pauses": s.groupby("run_dir", sort=True)["step"].size(),
        }
    )
    out = out[out["pauses"] >= 2].drop(columns="pauses")
    return out.reset_index()


def with_config(table: pd.DataFrame, frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Join config columns (and ``group``) of each run onto a per-run table keyed by run_dir."""
    cols = [k for k in [*keys, "group"] if k in frame.columns]
    cfg = frame.groupby("run_dir", sort=True)[cols].first()
    out = table.merge(cfg, left_on="run_dir", right_index=True, how="left")
    for k in keys:
        if k not in out.columns:
            out[k] = None
    return out


def array_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of a run's array shards, sorted (files only; nothing is loaded)."""
    files = (Path(run_dir) / _metrics.ARRAYS_DIR).glob("step_*.npz")
    return sorted(int(f.stem.split("_")[1]) for f in files)


def load_step_arrays(run_dir: str | os.PathLike, step: int, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (those present) of one pause of a run; reads only those entries."""
    f = Path(run_dir) / _metrics.ARRAYS_DIR / _metrics.shard_name(step, "npz")
    if not f.exists():
        return {}
    with np.load(f) as data:
        return {k: data[k] for k in keys if k in data.files}


def steps_with_arrays(run_dir: str | os.PathLike, keys: list[str]) -> list[int]:
    """Steps of a run at which every array in ``keys`` was stored."""
    out = []
    for step in array_steps(run_dir):
        f = Path(run_dir) / _metrics.ARRAYS_DIR / _metrics.shard_name(step, "npz")
        try:
            with np.load(f) as data:
                if all(k in data.files for k in keys):
                    out.append(step)
        except (OSError, ValueError):
            continue
    return out


def spread_steps(steps: list[int], at_most: int) -> list[int]:
    """At most ``at_most`` of ``steps``, evenly spread, always keeping the first and the last."""
    steps = sorted(steps)
    if len(steps) <= at_most:
        return steps
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, at_most)).astype(int))
    return [steps[i] for i in idx]
