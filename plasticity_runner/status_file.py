"""Who holds a run directory, and why a run ended: the lock file and the ``status`` of ``run.json``.

A training process holds an exclusive ``flock`` on ``<run_dir>/run.lock`` from its start to its
end. A second process on the same directory is refused (``RunDirBusyError``, naming the holder's
PID and host). The kernel releases the lock when the holder dies, however it dies (SIGKILL, out of
memory), so a restart after a crash (or a SLURM requeue) takes the directory over without any
cleanup. On NFS, Linux forwards ``flock`` to the server, so the lock holds across nodes; on Lustre
it needs the ``flock`` mount option (with ``localflock`` it holds only within one node).

``run.json``'s ``status`` says why a run ended:

- ``running``: the process is training (``heartbeat`` and ``steps_done`` are updated at every log point);
- ``complete``: it reached ``total_steps`` with finite losses;
- ``diverged``: the TD loss turned NaN/inf (``diverged_at_step``); with ``on_divergence=stop`` the run
  stopped there, with ``continue`` it trained on to ``total_steps`` (``steps_done``);
- ``crashed``: it raised; ``error`` holds the exception's type and first line;
- ``interrupted``: a stop signal (``signal``: SIGTERM, SIGUSR2; or SIGINT) ended it after its
  checkpoint; under submitit the job is requeued and the requeued job sets ``running`` again.

A run whose ``run.json`` says ``running`` but whose lock nobody holds ended without a chance to say
so (SIGKILL, node failure): ``effective_status`` calls it ``stale``, and so do ``plasticity-report``
and ``describe_run``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import platform
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import metrics
from .errors import ConfigError
from .metrics import RUN_FILE, MetricsWriteError, atomic_write_text, load_run_metadata

log = logging.getLogger("plasticity_runner")

LOCK_FILE = "run.lock"
LOCK_ATTEMPTS = 10  # tries, LOCK_RETRY_S apart: a report probing the lock holds it for microseconds
LOCK_RETRY_S = 0.2


class RunDirBusyError(ConfigError):
    """Another live process holds the run directory's lock."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class StatusFile:
    """The lock on a run directory and the updates of its ``run.json`` by this start of the run.

    ``with StatusFile(run_dir) as record:`` takes the lock (or raises ``RunDirBusyError``) and, while
    held, has ``write_run_metadata`` stamp ``run.json`` with this start's ``start_token``, ``pid``
    and ``started_at``. ``update`` changes only a ``run.json`` this start wrote, so a refused or
    failed start never rewrites the record of the run it found. Leaving the block by an exception
    records ``crashed`` (or ``interrupted``) with the exception's first line.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.lock_path = self.run_dir / LOCK_FILE
        self.start: dict[str, Any] = {}
        self._fd: int | None = None
        self._token = None

    # ------------------------------------------------------------------ the lock
    def __enter__(self) -> StatusFile:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MetricsWriteError(f"cannot write {self.lock_path}: {exc}") from exc
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or attempt == LOCK_ATTEMPTS - 1:
                    holder = _holder(self.lock_path)
                    os.close(fd)
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise MetricsWriteError(f"cannot lock {self.lock_path}: {exc}") from exc
                    raise RunDirBusyError(
                        "hydra.run.dir",
                        f"{self.run_dir} is in use by another process ({holder}; lock file {self.lock_path}): "
                        "wait for it to end, or choose another hydra.run.dir",
                    ) from None
                time.sleep(LOCK_RETRY_S)
        self._fd = fd
        self.start = {
            "start_token": f"{platform.node()}:{os.getpid()}:{time.time_ns()}",
            "pid": os.getpid(),
            "started_at": _now(),
        }
        holder = {"pid": os.getpid(), "hostname": platform.node(), "since": self.start["started_at"]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._token = metrics.CURRENT_START.set(self.start)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None:
                self.record_end(exc)
        finally:
            metrics.CURRENT_START.reset(self._token)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ run.json
    def update(self, **fields: Any) -> bool:
        """Set ``fields`` in ``run.json`` if this start wrote it; returns whether it did."""
        path = self.run_dir / RUN_FILE
        try:
            meta = load_run_metadata(self.run_dir)
        except (OSError, ValueError):
            return False
        if not self.start or meta.get("start_token") != self.start["start_token"]:
            return False
        meta.update(fields)
        atomic_write_text(path, json.dumps(meta, indent=1, default=str, sort_keys=False))
        return True

    def heartbeat(self, step: int) -> None:
        """At a log point: the time and the steps done, so a reader sees the run is alive and where."""
        self.update(heartbeat=_now(), steps_done=int(step))

    def interrupted(self, signum: int) -> None:
        """Before a stop signal is handed on (the process may end at once): status ``interrupted``."""
        name = signal.Signals(signum).name
        self._quietly(
            status="interrupted",
            signal=name,
            ended_at=_now(),
            end_reason=f"{name}: stopped after its checkpoint (under submitit: requeued)",
        )

    def resumed(self) -> None:
        """The signal's handler returned and the run trains on: status ``running`` again."""
        self._quietly(status="running", signal=None, end_reason=None, ended_at=None)

    def record_end(self, exc: BaseException) -> None:
        """Record why the run stopped by ``exc`` (only in a ``run.json`` this start wrote)."""
        try:
            status = load_run_metadata(self.run_dir).get("status")
        except (OSError, ValueError):
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) or status == "interrupted":
            fields: dict[str, Any] = {"status": "interrupted", "ended_at": _now()}
            if isinstance(exc, KeyboardInterrupt):
                fields.update(signal="SIGINT", end_reason="SIGINT (KeyboardInterrupt)")
            elif not isinstance(exc, SystemExit):  # e.g. submitit: "Job not requeued because: ..."
                fields["error"] = first_line(exc)
        else:
            fields = {
                "status": "crashed",
                "error": first_line(exc),
                "ended_at": _now(),
                "end_reason": f"raised {first_line(exc)}",
            }
        self._quietly(**fields)

    def _quietly(self, **fields: Any) -> None:
        try:
            self.update(**fields)
        except Exception as exc:  # e.g. the full disk that stopped the run: keep the original error
            log.error("cannot record status %s in %s: %s", fields.get("status"), self.run_dir / RUN_FILE, exc)


def end_fields(run_dir: Path, status: str, steps_done: int, on_divergence: str) -> dict[str, Any]:
    """``run.json`` fields of a run that left its loop with ``status`` (complete or diverged).

    A run that trained on after a divergence (``on_divergence=continue``) is ``diverged``, not
    ``complete``: its shards' ``train/diverged`` rows (this start's and earlier starts') say where.
    """
    frame = metrics.load_run(run_dir)
    diverged = frame[(frame["phase"] == "train") & (frame["metric"] == "diverged")]["step"]
    out: dict[str, Any] = {"status": status, "steps_done": int(steps_done), "ended_at": _now()}
    if len(diverged):
        first = int(diverged.min())
        out.update(status="diverged", diverged_at_step=first)
        out["end_reason"] = (
            f"TD loss non-finite at step {first}; trained on to step {steps_done} (on_divergence=continue)"
            if on_divergence == "continue"
            else f"TD loss non-finite at step {first} (on_divergence=stop)"
        )
    else:
        out["end_reason"] = f"reached total_steps ({steps_done})" if status == "complete" else status
    return out


# ---------------------------------------------------------------------------------- reading


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(Path(lock_path).read_text())
        return f"PID {info['pid']} on host {info['hostname']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def lock_held(run_dir: str | os.PathLike) -> bool | None:
    """Whether a live process holds the run directory's lock (None: no lock file, cannot tell)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def effective_status(run_dir: str | os.PathLike, meta: dict[str, Any]) -> str | None:
    """``run.json``'s status, except ``stale`` for a ``running`` run whose lock no process holds."""
    status = meta.get("status")
    if status == "running" and lock_held(run_dir) is False:
        return "stale"
    return status
