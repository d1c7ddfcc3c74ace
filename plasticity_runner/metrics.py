"""Metrics files of a run, and `load_sweep` to read a run or a whole multirun into pandas.

On-disk layout of a run directory (the Hydra output directory of one job)::

    run.json                          run metadata: run_id, flattened config, versions, git revision
    metrics/step_0000005000.parquet   long-format scalars written at the pause of step 5000
    arrays/step_0000005000.npz        arrays (probe curves, spectra, matrices) of that pause

Every file is written under a temporary name (``*.tmp``, ignored by the readers) and renamed into
place, so a reader never sees a half-written shard. A shard is never appended to: each pause
writes a new one.

Scalar schema (one row per value)::

    run_id: str, step: int64, phase: str, metric: str, value: float64, wall_time_s: float64

``step`` is the number of training (optimizer) steps done when the value was measured;
``wall_time_s`` is seconds since the run (or its latest resume) started and is the only column
that differs between two runs with the same seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METRICS_DIR = "metrics"
ARRAYS_DIR = "arrays"
RUN_FILE = "run.json"
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("phase", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("wall_time_s", pa.float64()),
    ]
)


class MetricsWriteError(RuntimeError):
    """The run directory cannot be written (missing permission, full disk, ...)."""


class RunFileError(ValueError):
    """A run's ``run.json`` cannot be read or is not a JSON object (the message names the file)."""


class MissingShardsWarning(UserWarning):
    """A run lacks the metrics shard of pauses it has passed (a shard deleted, or never written)."""


# ``start_token``, ``pid`` and ``started_at`` of the start of the run that holds its directory's
# lock (``run_status.RunRecord``); ``write_run_metadata`` stamps them into ``run.json``.
CURRENT_START: ContextVar[Mapping[str, Any]] = ContextVar("CURRENT_START", default={})


_WRITES = itertools.count()


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path``; remove the temporary on failure."""
    # a name of its own per write: a stop signal's handler may record the run's status while the
    # main thread is writing the same file
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{next(_WRITES)}.tmp")

    def discard() -> None:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        discard()
        raise MetricsWriteError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        discard()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(Path(path), write)


def shard_name(step: int, suffix: str) -> str:
    return f"step_{int(step):010d}.{suffix}"


def run_id_for(run_dir: Path) -> str:
    """A run id derived from the run directory (never the clock): ``<dir name>-<8 hex of its path>``."""
    resolved = str(Path(run_dir).resolve())
    return f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def git_revision() -> str | None:
    """The git revision of the source tree this package runs from, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
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
        if self._arrays:
            arrays = dict(self._arrays)

            def write_npz(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)

            _atomic_write(self.run_dir / ARRAYS_DIR / shard_name(step, "npz"), write_npz)
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
            _atomic_write(shard, lambda tmp: pq.write_table(table, tmp))
        if self.sinks:  # after the parquet shard: a sink that fails warns and never costs a metric
            self.sinks.write(list(self._rows), dict(self._arrays), step)
        self._rows.clear()
        self._arrays.clear()
        return shard


# ----------------------------------------------------------------------------------------- reading


def find_runs(path: Path) -> list[Path]:
    """Run directories (those holding ``run.json``) at or below ``path``, sorted."""
    path = Path(path)
    if (path / RUN_FILE).exists():
        return [path]
    return sorted(p.parent for p in path.rglob(RUN_FILE))


def load_run(run_dir: Path) -> pd.DataFrame:
    """All scalar metrics of one run (complete shards only), sorted by step."""
    files = sorted((Path(run_dir) / METRICS_DIR).glob("step_*.parquet"))
    if not files:
        return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in SCHEMA})
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values(["step", "phase", "metric"], kind="stable", ignore_index=True)


def load_arrays(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """Arrays of every pause of a run: ``{step: {name: array}}``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for f in sorted((Path(run_dir) / ARRAYS_DIR).glob("step_*.npz")):
        step = int(f.stem.split("_")[1])
        with np.load(f) as data:
            out[step] = {k: data[k] for k in data.files}
    return out


def load_run_metadata(run_dir: Path) -> dict[str, Any]:
    """The parsed ``run.json`` of ``run_dir``; ``RunFileError`` naming the file if it is unreadable."""
    path = Path(run_dir) / RUN_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"cannot read {path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise RunFileError(f"cannot read {path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def load_sweep(path: str | os.PathLike, config_columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One tidy DataFrame of every run at or below ``path`` (a run or a multirun directory).

    Columns: ``run_id, step, phase, metric, value, wall_time_s, run_dir`` and one column per
    flattened config key (``env.dataset``, ``architecture.width``, ``seed``, ...), or only the keys
    in ``config_columns`` when given. Runs without any metric shard yet contribute no rows. A run
    missing the shard of a pause it has passed (``missing_pause_steps``) gives a
    ``MissingShardsWarning`` naming the run and the steps.
    """
    runs = find_runs(Path(path))
    if not runs:
        raise FileNotFoundError(f"no run (no {RUN_FILE}) found at or below {path}")
    frames = []
    for run_dir in runs:
        meta = load_run_metadata(run_dir)
        frame = load_run(run_dir)
        missing = missing_pause_steps(run_dir, meta)
        if missing:
            warnings.warn(
                f"run {meta.get('run_id')} ({run_dir}): no metrics shard for the pause step(s) {missing} "
                "(deleted, or never written); its values at those steps are missing",
                MissingShardsWarning, stacklevel=2,
            )
        frame["run_dir"] = str(run_dir)
        config = meta.get("config", {})
        keys = list(config) if config_columns is None else list(config_columns)
        for key in keys:
            if key in frame.columns:
                continue
            frame[key] = config.get(key)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def missing_pause_steps(run_dir: Path, meta: Mapping[str, Any]) -> list[int]:
    """Pause steps of a DQN run (0, ``probe.every_steps``, ..., and ``total_steps`` once complete) up
    to its ``steps_done`` that have no metrics shard (``metrics/step_<step>.parquet``).

    Step 0 is expected only when something measures there (the probe or a diagnostic). The case
    studies of section 4 pause on their own cadences and are not checked (empty list).
    """
    config = meta.get("config") or {}
    every, total = config.get("probe.every_steps"), config.get("total_steps")
    if config.get("env.name") in ("memorization", "brownian") or not every or total is None:
        return []
    present = {int(f.name.split(".")[0].split("_")[1]) for f in (Path(run_dir) / METRICS_DIR).glob("step_*.parquet")}
    done = meta.get("steps_done")
    last = int(done) if done is not None else max(present, default=-1)
    expected = set(range(int(every), min(last, int(total)) + 1, int(every)))
    measures_at_0 = [config.get(k) for k in ("probe.enabled", "diagnostics.statistics.enabled",
                                             "diagnostics.curvature.enabled", "diagnostics.gradcov.enabled")]
    if last >= 0 and any(measures_at_0):
        expected.add(0)
    if meta.get("status") == "complete":
        expected.add(int(total))
    return sorted(expected - present)
