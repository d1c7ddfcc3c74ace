"""The files of a run directory, below the metrics writer and readers (``metrics.py``): their
names, atomic writes, metric shards with their checksums, and finding run directories.

A shard (``metrics/step_<step>.parquet``) is written with parquet page checksums, its SHA-256
beside it (``step_<step>.parquet.sha256``, the format of ``sha256sum -c``), the shard last;
``read_shard`` verifies both and names the file it refuses (``ShardError``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
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


class ShardError(RunFileError):
    """A metrics shard is corrupt: its checksum differs, or it is not a readable parquet file."""


class MissingChecksumWarning(UserWarning):
    """Metrics shards without their ``.sha256`` file (written by an older version): read unverified."""


class DuplicateRunWarning(UserWarning):
    """Two run directories hold the same ``run_id`` (a copied run): the run is counted once."""


CHECKSUM_SUFFIX = ".sha256"  # metrics/step_<step>.parquet.sha256 beside each shard


_WRITES = itertools.count()


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path``; remove the temporary on failure
    (``MetricsWriteError`` naming ``path`` for an ``OSError``: a full disk, a missing permission)."""
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def checksum_path(shard: Path) -> Path:
    return Path(shard).with_name(Path(shard).name + CHECKSUM_SUFFIX)


def write_shard(path: Path, table: pa.Table) -> None:
    """Write ``table`` as the parquet shard ``path`` (page checksums on): the shard under a
    temporary name, its SHA-256 beside it, then the shard renamed into place; on failure neither."""
    path = Path(path)
    sidecar = checksum_path(path)

    def write(tmp: Path) -> None:
        pq.write_table(table, tmp, write_page_checksum=True)
        atomic_write_text(sidecar, f"{file_sha256(tmp)}  {path.name}\n")

    try:
        _atomic_write(path, write)
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise


_atomic_write = atomic_write


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(Path(path), write)


def shard_name(step: int, suffix: str) -> str:
    return f"step_{int(step):010d}.{suffix}"


_RUN_SUBDIRS = frozenset({METRICS_DIR, ARRAYS_DIR, "checkpoints", "report", "tensorboard", "wandb"})


def find_runs(path: Path) -> list[Path]:
    """Run directories (those holding ``run.json``) at or below ``path``, sorted.

    Directory symlinks are followed (a sweep directory of links to runs); a directory reached twice
    (a link loop, or a link to a directory also reached directly) is walked once, at its first path.
    """
    path = Path(path)
    if (path / RUN_FILE).exists():
        return [path]
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a loop, or a second path to a directory already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        if RUN_FILE in files:
            found.append(Path(root))
            dirs[:] = [d for d in dirs if d not in _RUN_SUBDIRS]
    return sorted(found)


def shard_files(run_dir: Path) -> list[Path]:
    """The complete metrics shards of a run (``metrics/step_*.parquet``), by step."""
    d = Path(run_dir) / METRICS_DIR
    try:
        names = [e.name for e in os.scandir(d)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [d / n for n in sorted(n for n in names if n.startswith("step_") and n.endswith(".parquet"))]


def _expected_digest(path: Path) -> str | None:
    """The SHA-256 in ``path``'s checksum file (None when it has none)."""
    sidecar = checksum_path(path)
    try:
        return sidecar.read_text().split()[0]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ShardError(f"cannot read the checksum {sidecar}: {exc}") from exc


def read_shard(path: Path) -> tuple[pa.Table, bool]:
    """One shard, verified against its SHA-256 file and its page checksums; ``ShardError`` naming
    it when either differs or it is not a readable parquet file of the schema. Returns the table
    and whether a checksum file was there (an older shard has none)."""
    expected = _expected_digest(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ShardError(f"cannot read the metrics shard {path}: {exc}") from exc
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ShardError(
            f"{path} is corrupt: its SHA-256 differs from the one in {checksum_path(path)}; delete the "
            "shard (and its checksum) and restart the run to recompute that pause, or leave the run out"
        )
    try:
        table = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True).read(use_threads=False)
        if not table.schema.equals(SCHEMA):
            table = table.select(SCHEMA.names).cast(SCHEMA)
    except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
        raise ShardError(f"cannot read the metrics shard {path}: {type(exc).__name__}: {exc}") from exc
    return table, expected is not None


FRAGMENT = "__file_index"  # which of the files read a row comes from


def read_shards(files: list[Path], with_file_index: bool = False, stacklevel: int = 2) -> pa.Table:
    """The shards ``files`` as one table, in their order, each verified (``read_shard``). A
    ``MissingChecksumWarning`` counts the shards without a checksum file. ``with_file_index`` adds
    the column ``__file_index``: each row's position in ``files``.

    (One file at a time from its bytes, which the checksum reads anyway: a ``pyarrow.dataset`` scan
    of the same 8000 small files held about twice the memory and verified no SHA-256.)"""
    tables, unverified = [], []
    for f in files:
        table, verified = read_shard(f)
        if not verified:
            unverified.append(f)
        if with_file_index:
            table = table.append_column(FRAGMENT, pa.array(np.full(table.num_rows, len(tables), np.int32)))
        tables.append(table)
    if unverified:
        warnings.warn(
            f"{len(unverified)} metrics shard(s) have no {CHECKSUM_SUFFIX} file (written by an older version) "
            f"and are read without it, e.g. {unverified[0]}",
            MissingChecksumWarning,
            stacklevel=stacklevel + 1,
        )
    if not tables:
        table = SCHEMA.empty_table()
        return table.append_column(FRAGMENT, pa.array([], pa.int32())) if with_file_index else table
    return pa.concat_tables(tables)


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


def unique_runs(
    runs: list[tuple[Path, Mapping[str, Any]]],
) -> tuple[list[tuple[Path, Mapping[str, Any]]], dict[Path, Path]]:
    """``runs`` (``(run_dir, run.json)``) without copies: a second directory with the ``run_id`` of
    an earlier one (a copied run) is left out with a ``DuplicateRunWarning`` naming both paths.
    Returns the runs kept and ``{left-out dir: the dir kept}``."""
    first: dict[Any, Path] = {}
    kept, copies = [], {}
    for run_dir, meta in runs:
        run_id = meta.get("run_id")
        if run_id is not None and run_id in first:
            copies[run_dir] = first[run_id]
            warnings.warn(
                f"{run_dir} holds run {run_id}, as {first[run_id]} does (a copy): counted once, from {first[run_id]}",
                DuplicateRunWarning,
                stacklevel=3,
            )
            continue
        if run_id is not None:
            first[run_id] = run_dir
        kept.append((run_dir, meta))
    return kept, copies
