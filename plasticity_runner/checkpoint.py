"""Checkpoint files: resume is a property of the run directory.

At every pause the trainer writes its bundle (``TrainState.state_dict``) as
``checkpoints/step_<step>/state.pt`` and then a ``COMPLETE`` marker (Dopamine's pattern): a
checkpoint without its marker was cut off while being written and is never loaded. The marker
holds the state file's size and SHA-256 (JSON); a restart verifies them and, when the newest
complete checkpoint is corrupt or truncated (a bad disk, a partial copy), warns naming the file
and falls back to the one before it. Only the newest ``checkpoint.keep`` complete checkpoints are
kept. A marker without a checksum cannot be verified: that checkpoint is skipped like a corrupt one.

The checksum guards against corruption, not tampering (whoever can write the directory can write a
matching marker), so a checkpoint is loaded with ``torch.load(weights_only=True)``: tensors, plain
Python containers and numbers, and numpy arrays (``SAFE_GLOBALS``) only. A bundle that needs any
other type could run code when loaded and is refused before anything of it is called
(``UnsafeCheckpointError`` naming the file and the type); the run stops there, it does not fall back.

This module only writes and reads files (Dopamine's checkpointer): what a bundle holds, and how
it is restored, is the business of the state that made it (``train_state.TrainState``). Restarted with
the same command in the same directory, a run loads its newest complete checkpoint, deletes the
metric shards written after it (``discard_after``), and continues; on a CPU the final metrics
equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import ARRAYS_DIR, METRICS_DIR, MetricsWriteError
from .safe_pickle import UnsafePickleError

log = logging.getLogger("plasticity_runner")

CHECKPOINT_DIR = "checkpoints"
MARKER = "COMPLETE"
STATE_FILE = "state.pt"
_HASH_CHUNK = 1 << 24  # bytes read at a time when verifying
# the only non-torch types a bundle holds (numpy arrays: MinAtar's and Atari's host state, numpy's
# RNG state); torch's weights_only unpickler allows tensors, dicts, lists, tuples, numbers, strings
SAFE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype] + [
    type(np.dtype(t))
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
]


class CorruptCheckpointError(RuntimeError):
    """No complete checkpoint of a run directory can be loaded (every one is corrupt)."""


class UnsafeCheckpointError(CorruptCheckpointError):
    """A checkpoint holds a type outside ``SAFE_GLOBALS``: loading it could run code; it is refused."""


def unsafe_types(path: Path) -> list[str]:
    """The globals ``path`` needs beyond what ``weights_only`` and ``SAFE_GLOBALS`` allow (read from
    its pickle's opcodes: nothing is loaded or called)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    allowed |= {"numpy.core.multiarray._reconstruct"}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the load itself names the fault
        return []
    return [g for g in found if g not in allowed]


def _unsupported(exc: Exception) -> str:
    """What torch's weights_only unpickler refused, from its message (``Unsupported global: GLOBAL x``)."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.split("GLOBAL", 1)[-1].strip()
        if "but got" in line:
            return line.rsplit("but got", 1)[-1].strip()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_bundle(path: Path, map_location: torch.device | str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with ``SAFE_GLOBALS``; ``UnsafeCheckpointError``
    naming the file and the type when it needs anything else."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            bundle = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = unsafe_types(Path(path)) or [_unsupported(exc)]
        raise UnsafeCheckpointError(
            f"{path} was refused: it needs {', '.join(found)}, which is not among the types a checkpoint "
            "holds (loading it could run code). A checkpoint written by this program never holds it: the "
            "file was altered or comes from elsewhere. Delete the checkpoint directory, or resume from a copy "
            "you trust"
        ) from None
    if not isinstance(bundle, dict):
        raise UnsafeCheckpointError(f"{path} was refused: it holds a {type(bundle).__name__}, not a checkpoint bundle")
    return bundle


class _HashingWriter:
    """A binary file that hashes what is written through it (torch.save writes sequentially)."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{int(step):010d}"


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every checkpoint with its completion marker, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    found = []
    for d in root.glob("step_*") if root.exists() else []:
        if (d / MARKER).exists():
            found.append((int(d.name.split("_")[1]), d))
    return sorted(found)


def save(run_dir: Path, step: int, bundle: dict[str, Any], keep: int | None) -> Path:
    """Write ``bundle`` as the checkpoint of ``step`` (state file, then marker with its checksum);
    keep the newest ``keep`` complete checkpoints (None: delete none, ``prune`` later).

    Any failure to write (``OSError``, or the ``RuntimeError`` torch's writer raises on a full
    disk) removes the step's directory and raises ``MetricsWriteError`` naming it.
    """
    d = _step_dir(run_dir, step)
    try:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        tmp = d / (STATE_FILE + ".tmp")
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(bundle, writer)
            f.flush()
            os.fsync(f.fileno())
        size = os.path.getsize(tmp)
        digest = writer.sha256.hexdigest() if size == writer.size else file_sha256(tmp)
        os.replace(tmp, d / STATE_FILE)
        marker = json.dumps({"file": STATE_FILE, "size": size, "sha256": digest})
        with open(d / (MARKER + ".tmp"), "w") as f:
            f.write(marker)
            f.flush()
            os.fsync(f.fileno())
        os.replace(d / (MARKER + ".tmp"), d / MARKER)  # the marker appears whole or not at all
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(d, ignore_errors=True)
        raise MetricsWriteError(f"cannot write checkpoint {d}: {exc}") from exc
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    if keep is not None:
        prune(run_dir, keep)
    return d


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints of ``run_dir``; delete the older ones and any
    without its marker (a crash mid-write). ``save`` prunes after writing; a population writes
    every member's checkpoint of a pause first and prunes after, so that a kill between two
    members' writes always leaves a step every member has."""
    for _, old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for partial in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*"):
        if not (partial / MARKER).exists():
            shutil.rmtree(partial, ignore_errors=True)


def verify(d: Path) -> str | None:
    """Why the checkpoint in ``d`` must not be loaded (size or SHA-256 differ from its marker, or
    the marker holds no checksum), or None."""
    path = Path(d) / STATE_FILE
    try:
        text = (Path(d) / MARKER).read_text().strip()
        if not path.is_file():
            return f"{path} is missing"
        if not text:
            return f"{Path(d) / MARKER} is empty: {path} cannot be verified"
        expected = json.loads(text)
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{path} is truncated or grown: {size} bytes, its marker says {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{path} is corrupt: its SHA-256 differs from the one in {Path(d) / MARKER}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"cannot verify {path}: {type(exc).__name__}: {exc}"
    return None


def load_latest(
    run_dir: Path,
    restore: Callable[[dict[str, Any], Path], None],
    map_location: torch.device | str,
    upto: int | None = None,
) -> int | None:
    """Hand the newest complete checkpoint that verifies and loads to ``restore(bundle, path)``
    (e.g. ``TrainState.load_state_dict``); returns its step (None if there is none).

    Tensors are loaded onto ``map_location``. ``restore`` may refuse the bundle by raising (a
    checkpoint of another device type): that error propagates, there is no fall-back. A
    corrupt or truncated newer one is skipped with a warning naming the file; the caller then
    discards the metric shards written after the step it resumes from (``discard_after``), as on
    any resume. ``upto``: only checkpoints of steps up to it count (a population resumes every
    member at the newest step all of them have). Raises ``CorruptCheckpointError`` when checkpoints exist but none can be loaded,
    and ``UnsafeCheckpointError`` (no fall-back) for one that needs a type a bundle never holds.
    """
    found = [(step, d) for step, d in complete_checkpoints(run_dir) if upto is None or step <= upto]
    problems = []
    for step, d in reversed(found):
        problem = verify(d)
        if problem is None:
            try:
                bundle = load_bundle(d / STATE_FILE, map_location)
            except UnsafeCheckpointError:
                raise
            except Exception as exc:  # a verified file torch cannot read (written by another torch)
                problem = f"cannot load {d / STATE_FILE}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if problem is not None:
            problems.append(problem)
            log.warning("skipping checkpoint of step %d: %s; falling back to the one before it", step, problem)
            continue
        try:
            restore(bundle, d / STATE_FILE)
        except UnsafePickleError as exc:  # a pickle inside the bundle (MinAtar's games)
            raise UnsafeCheckpointError(f"{d / STATE_FILE}: {exc}") from None
        if problems:
            log.warning(
                "resuming from the checkpoint of step %d (%s); metric shards after step %d are discarded "
                "and recomputed",
                step,
                d / STATE_FILE,
                step,
            )
        return step
    if problems:
        raise CorruptCheckpointError(
            f"no checkpoint of {run_dir} can be loaded: "
            + "; ".join(problems)
            + f". Delete {Path(run_dir) / CHECKPOINT_DIR} (and {Path(run_dir) / METRICS_DIR}) to run it again from step 0"
        )
    return None


def newest_verified(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint of ``run_dir`` whose file verifies (None: none)."""
    for step, d in reversed(complete_checkpoints(run_dir)):
        if verify(d) is None:
            return step
    return None


def discard_checkpoints_after(run_dir: Path, step: int | None) -> list[Path]:
    """Delete the checkpoints of steps after ``step`` (all of them when None)."""
    removed = []
    root = Path(run_dir) / CHECKPOINT_DIR
    for d in root.glob("step_*") if root.exists() else []:
        if step is None or int(d.name.split("_")[1].split(".")[0]) > step:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def discard_after(run_dir: Path, step: int | None) -> list[Path]:
    """Delete metric shards and array files of steps after ``step`` (all of them when None)."""
    removed = []
    for sub in (METRICS_DIR, ARRAYS_DIR):
        for f in (Path(run_dir) / sub).glob("step_*"):
            f_step = int(f.name.split(".")[0].split("_")[1])
            if step is None or f_step > step or f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed
