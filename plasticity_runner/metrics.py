"""Metrics files of a run, and `load_sweep` to read a run or a whole multirun into pandas.

On-disk layout of a run directory (the Hydra output directory of one job)::

    run.json                          run metadata: run_id, flattened config, versions, git revision
    metrics/step_0000005000.parquet   long-format scalars written at the pause of step 5000
    metrics/step_0000005000.parquet.sha256   its SHA-256 (``sha256sum -c`` format)
    arrays/step_0000005000.npz        arrays (probe curves, spectra, matrices) of that pause

Every file is written under a temporary name (``*.tmp``, ignored by the readers) and renamed into
place, so a reader never sees a half-written shard. A shard is never appended to: each pause
writes a new one. The arrays file and the checksum are written first and the shard last: a pause
whose shard cannot be written removes them again, so a pause has all of its files or none.

Integrity: a shard carries parquet page checksums (CRC-32 of every data page) and its SHA-256 in a
file beside it. The readers (``load_run``, ``load_sweep``, the report) verify both and refuse a
shard that differs (``ShardError`` naming the file); a shard without its ``.sha256`` file (written
by an older version) is read with a ``MissingChecksumWarning``.

Scalar schema (one row per value)::

    run_id: str, step: int64, phase: str, metric: str, value: float64, wall_time_s: float64

``step`` is the number of training (optimizer) steps done when the value was measured;
``wall_time_s`` is seconds since the run (or its latest resume) started and is the only column
that differs between two runs with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .run_files import (  # noqa: F401  (re-exported: the names of run files live there)
    ARRAYS_DIR,
    CHECKSUM_SUFFIX,
    FRAGMENT,
    METRICS_DIR,
    RUN_FILE,
    SCHEMA,
    DuplicateRunWarning,
    MetricsWriteError,
    MissingChecksumWarning,
    MissingShardsWarning,
    RunFileError,
    ShardError,
    _atomic_write,
    atomic_write,
    atomic_write_text,
    checksum_path,
    file_sha256,
    find_runs,
    load_run_metadata,
    read_shard,
    read_shards,
    shard_files,
    shard_name,
    unique_runs,
    write_shard,
)

# ``start_token``, ``pid`` and ``started_at`` of the start of the run that holds its directory's
# lock (``status_file.StatusFile``); ``write_run_metadata`` stamps them into ``run.json``.
CURRENT_START: ContextVar[Mapping[str, Any]] = ContextVar("CURRENT_START", default=MappingProxyType({}))


def run_id_for(run_dir: Path) -> str:
    """A run id derived from the run directory (never the clock): ``<dir name>-<8 hex of its path>``."""
    resolved = str(Path(run_dir).resolve())
    return f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def git_revision() -> str | None:
    """The git revision of the source tree this package runs from, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists become JSON strings so they fit one column."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if len(v) == 0:
                out[key] = None
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


def versions() -> dict[str, str]:
    import torch

    from .version import __version__

    return {
        "plasticity_runner": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
    }


def write_run_metadata(run_dir: Path, config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Write ``run.json`` (atomically) and return the run id.

    The run id is kept from an existing ``run.json``, so it is stable for the directory across
    restarts; otherwise it is derived from the directory path.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    run_id = None
    if path.exists():
        try:
            run_id = json.loads(path.read_text()).get("run_id")
        except (OSError, json.JSONDecodeError):
            run_id = None
    run_id = run_id or run_id_for(run_dir)
    meta = {
        "run_id": run_id,
        "config": flatten(config),
        "versions": versions(),
        "git_revision": git_revision(),
        "hostname": platform.node(),
        **CURRENT_START.get(),
        **(dict(extra) if extra else {}),
    }
    atomic_write_text(path, json.dumps(meta, indent=1, default=str, sort_keys=False))
    return run_id


class MetricsWriter:
    """Buffers scalars and arrays of one pause and writes them as one parquet shard (+ one npz)."""

    def __init__(self, run_dir: Path, run_id: str, sinks: Any = None):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.sinks = sinks  # sinks.Sinks: each flushed shard is mirrored there once it is on disk
        self.t0 = time.perf_counter()
        self._rows: list[tuple[int, str, str, float, float]] = []
        self._arrays: dict[str, np.ndarray] = {}

    def add(self, step: int, phase: str, metric: str, value: float) -> None:
        self._rows.append((int(step), phase, metric, float(value), time.perf_counter() - self.t0))

    def add_many(self, step: int, phase: str, values: Mapping[str, float]) -> None:
        for metric, value in values.items():
            self.add(step, phase, metric, value)

    def add_array(self, name: str, array: Any) -> None:
        """Store an array of the current pause under ``name`` (e.g. ``probe/curve_loss``)."""
        self._arrays[name] = np.asarray(array)

    def flush(self, step: int) -> Path | None:
        """Write the buffered values as ``metrics/step_<step>.parquet`` (and arrays ``.npz``)."""
        if not self._rows and not self._arrays:
            return None
        shard = self.run_dir / METRICS_DIR / shard_name(step, "parquet")
        npz = self.run_dir / ARRAYS_DIR / shard_name(step, "npz")
        if self._arrays:
            arrays = dict(self._arrays)

            def write_npz(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)

            _atomic_write(npz, write_npz)
        try:
            self._write_rows(shard)
        except BaseException:  # the pause's arrays go with its shard: both or neither
            if self._arrays:
                npz.unlink(missing_ok=True)
            raise
        if self.sinks:  # after the parquet shard: a sink that fails warns and never costs a metric
            self.sinks.write(list(self._rows), dict(self._arrays), step)
        self._rows.clear()
        self._arrays.clear()
        return shard

    def _write_rows(self, shard: Path) -> None:
        if self._rows:
            steps, phases, metrics, values, walls = zip(*self._rows)
            table = pa.Table.from_arrays(
                [
                    pa.array([self.run_id] * len(steps), pa.string()),
                    pa.array(steps, pa.int64()),
                    pa.array(phases, pa.string()),
                    pa.array(metrics, pa.string()),
                    pa.array(values, pa.float64()),
                    pa.array(walls, pa.float64()),
                ],
                schema=SCHEMA,
            )
            write_shard(shard, table)


# ----------------------------------------------------------------------------------------- reading


def load_run(run_dir: Path) -> pd.DataFrame:
    """All scalar metrics of one run (complete shards only, each verified), sorted by step."""
    files = shard_files(run_dir)
    frame = read_shards(files, stacklevel=3).to_pandas()
    if not files:
        return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in SCHEMA})
    return frame.sort_values(["step", "phase", "metric"], kind="stable", ignore_index=True)


def load_arrays(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """Arrays of every pause of a run: ``{step: {name: array}}``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for f in sorted((Path(run_dir) / ARRAYS_DIR).glob("step_*.npz")):
        step = int(f.stem.split("_")[1])
        with np.load(f) as data:
            out[step] = {k: data[k] for k in data.files}
    return out


def _config_frame(runs: list[tuple[Path, Mapping[str, Any]]], config_columns: Iterable[str] | None) -> pd.DataFrame:
    """One row per run: its config columns, as adding them to each run's frame one key at a time
    and concatenating the runs would give them (same columns, order and dtypes), built per group of
    runs with the same keys and value types."""
    skip = {f.name for f in SCHEMA} | {"run_dir"}
    groups: dict[tuple, list[int]] = {}
    rows: list[dict[str, Any]] = []
    for i, (_, meta) in enumerate(runs):
        config = meta.get("config") or {}
        keys = list(config) if config_columns is None else list(config_columns)
        row = {k: config.get(k) for k in dict.fromkeys(keys) if k not in skip}
        rows.append(row)
        groups.setdefault(tuple((k, type(v)) for k, v in row.items()), []).append(i)
    parts = []
    for signature, members in groups.items():
        cols = {k: [rows[i][k] for i in members] for k, _ in signature}
        part = pd.DataFrame(cols, index=members) if cols else pd.DataFrame(index=members)
        for k, t in signature:
            if t is type(None):  # all None: object, as a None scalar assigned to a frame gives
                part[k] = part[k].astype(object)
        parts.append(part)
    if not parts:
        return pd.DataFrame(index=range(len(runs)))
    return pd.concat(parts).sort_index()


def load_sweep(path: str | os.PathLike, config_columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One tidy DataFrame of every run at or below ``path`` (a run or a multirun directory).

    Columns: ``run_id, step, phase, metric, value, wall_time_s, run_dir`` and one column per
    flattened config key (``env.dataset``, ``architecture.width``, ``seed``, ...), or only the keys
    in ``config_columns`` when given. Runs without any metric shard yet contribute no rows. A run
    missing the shard of a pause it has passed (``missing_pause_steps``) gives a
    ``MissingShardsWarning`` naming the run and the steps. Directory symlinks are followed; a copy
    of a run (a second directory with its ``run_id``) is counted once (``DuplicateRunWarning``).
    Every shard is verified (``ShardError`` naming a corrupt one).
    """
    found = find_runs(Path(path))
    if not found:
        raise FileNotFoundError(f"no run (no {RUN_FILE}) found at or below {path}")
    runs, _ = unique_runs([(run_dir, load_run_metadata(run_dir)) for run_dir in found])
    return read_runs(runs, config_columns, stacklevel=3)


def read_runs(
    runs: list[tuple[Path, Mapping[str, Any]]], config_columns: Iterable[str] | None = None, stacklevel: int = 2
) -> pd.DataFrame:
    """``load_sweep``'s frame of ``runs`` (``(run_dir, run.json)``, in this order)."""
    files, run_index = [], []
    for i, (run_dir, meta) in enumerate(runs):
        shards = shard_files(run_dir)
        missing = missing_pause_steps(run_dir, meta, shards)
        if missing:
            warnings.warn(
                f"run {meta.get('run_id')} ({run_dir}): no metrics shard for the pause step(s) {missing} "
                "(deleted, or never written); its values at those steps are missing",
                MissingShardsWarning,
                stacklevel=stacklevel,
            )
        files += shards
        run_index.append(np.full(len(shards), i, dtype=np.int64))
    metrics_frame = read_shards(files, with_file_index=True, stacklevel=stacklevel + 1).to_pandas()
    file_run = np.concatenate(run_index) if run_index else np.zeros(0, np.int64)
    metrics_frame["_run"] = file_run[metrics_frame[FRAGMENT].to_numpy(dtype=np.int64)]
    # each run's rows by step, phase, metric; ties in file order, then row order (as a stable sort
    # of the run's files read one after the other)
    metrics_frame = metrics_frame.sort_values(
        ["_run", "step", "phase", "metric", FRAGMENT], kind="stable", ignore_index=True
    )
    row_run = metrics_frame.pop("_run").to_numpy()
    del metrics_frame[FRAGMENT]
    if any(len(r) == 0 for r in run_index):  # as concatenating an empty run's frame (object columns) gives
        for f in SCHEMA:
            if pa.types.is_string(f.type):
                metrics_frame[f.name] = metrics_frame[f.name].astype(object)
    run_dirs = np.asarray([str(d) for d, _ in runs], dtype=object)
    metrics_frame["run_dir"] = pd.Series(run_dirs[row_run], dtype=_STR)
    # the config columns of every row: one take per block of the per-run frame (no copy after it),
    # then the metric columns put in front
    out = _config_frame(runs, config_columns).take(row_run)
    out.index = pd.RangeIndex(len(out))
    for i, name in enumerate(metrics_frame.columns):
        out.insert(i, name, metrics_frame[name])
    return out


_STR = pd.Series([""]).dtype  # pandas' default dtype of strings (what a str scalar assigned to a frame gets)


def missing_pause_steps(run_dir: Path, meta: Mapping[str, Any], shards: list[Path] | None = None) -> list[int]:
    """Pause steps of a DQN run (0, ``probe.every_steps``, ..., and ``total_steps`` once complete) up
    to its ``steps_done`` that have no metrics shard (``metrics/step_<step>.parquet``).

    Step 0 is expected only when something measures there (the probe or a diagnostic). The case
    studies of section 4 pause on their own cadences and are not checked (empty list).
    """
    config = meta.get("config") or {}
    every, total = config.get("probe.every_steps"), config.get("total_steps")
    if config.get("env.name") in ("memorization", "brownian") or not every or total is None:
        return []
    shards = shard_files(run_dir) if shards is None else shards
    present = {int(f.name.split(".")[0].split("_")[1]) for f in shards}
    done = meta.get("steps_done")
    last = int(done) if done is not None else max(present, default=-1)
    expected = set(range(int(every), min(last, int(total)) + 1, int(every)))
    measures_at_0 = [
        config.get(k)
        for k in (
            "probe.enabled",
            "diagnostics.statistics.enabled",
            "diagnostics.curvature.enabled",
            "diagnostics.gradcov.enabled",
        )
    ]
    if last >= 0 and any(measures_at_0):
        expected.add(0)
    if meta.get("status") == "complete":
        expected.add(int(total))
    return sorted(expected - present)
