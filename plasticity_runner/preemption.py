"""Stopping well under a scheduler: a checkpoint on preemption, and failures that reach the job's log.

``PreemptionGuard`` turns the scheduler's stop signal into a checkpoint at the current step.
Under Hydra's submitit launcher (``hydra/launcher=slurm`` or ``local``), submitit answers SIGUSR2
(sent by Slurm ``signal_delay_s`` before the time limit, or at once on preemption) by requeueing
the job and exiting at whatever Python line is running; the requeued job then resumes from the
run's newest complete checkpoint, i.e. from the last pause. Inside the guard the signal is only
recorded; the trainer checks ``guard.requested`` at its next log point (a step where the train
metrics window closes, so nothing in flight is lost), writes the metrics shard and a checkpoint of
that step, and calls ``guard.stop()``, which hands the signal to the handler that was there before
(submitit: requeue and exit; none: the signal's default action, i.e. the process ends). A restart
from that checkpoint gives the metrics of an uninterrupted run, as a restart from a pause does.

If no log point comes within ``max_wait_s`` seconds, or a second stop signal arrives (Slurm's
SIGTERM at the end of the preemption grace time), the signal is handed on at once and the restart
resumes from the last checkpoint instead. Signals that are ignored (SIG_IGN) stay ignored.

``LogJobFailure`` is a Hydra callback (set by ``configs/hydra/launcher/*.yaml``): when a run of a
multirun raises, Hydra keeps the exception for the submitting process only; the callback writes its
traceback to the run's own log (``<run_dir>/cli.log`` and submitit's ``.out``/``.err`` logs) too.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("plasticity_runner")

DEFAULT_MAX_WAIT_S = 20.0  # seconds from the signal to the hand-over (Slurm's KillWait defaults to 30)


def stop_signals() -> tuple[int, ...]:
    """submitit's preemption signal (``SUBMITIT_PREEMPT_SIGNAL``, default USR2) and SIGTERM."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    usr = getattr(signal, name, signal.SIGUSR2)
    return tuple(dict.fromkeys([usr, signal.SIGTERM]))


class PreemptionGuard:
    """Context manager: defer stop signals to a safe point of the training loop.

    Usage (``with PreemptionGuard() as guard:``, or ``install()`` ... ``uninstall()`` in a finally)::

        guard = PreemptionGuard().install()
        try:
            while ...:
                ...                                    # at a log point:
                if guard.requested:
                    guard.stop(save=write_checkpoint)  # hands the signal on; usually does not return
        finally:
            guard.uninstall()

    Outside the main thread (where Python cannot install handlers) the guard does nothing and
    ``requested`` stays False.
    """

    def __init__(
        self,
        signals: Iterable[int] | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        on_hand_over: Callable[[int], object] | None = None,
        on_resume: Callable[[], object] | None = None,
    ):
        self.signals = tuple(signals) if signals is not None else stop_signals()
        self.max_wait_s = float(max_wait_s)
        # called with the signal just before it is handed on (the process may end right after:
        # record that it was interrupted), and when the previous handler returned (training goes on)
        self.on_hand_over, self.on_resume = on_hand_over, on_resume
        self._previous: dict[int, Any] = {}
        self._pending: int | None = None
        self._saving = False
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ install / restore
    def install(self) -> PreemptionGuard:
        """Put the guard's handler on the stop signals (``uninstall()`` puts the previous ones back)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return self
        for sig in self.signals:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN or previous is None:  # ignored, or set outside Python: leave it
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        self._cancel_timer()
        self._pending = None
        self._restore()

    def __enter__(self) -> PreemptionGuard:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived: stop at this safe point (checkpoint, then ``stop()``)."""
        return self._pending is not None

    # ------------------------------------------------------------------ signal side
    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self._pending is None:
            self._pending = signum
            log.warning(
                "caught %s: checkpoint at the next log point, then hand the signal on (at most %.0f s from now)",
                name,
                self.max_wait_s,
            )
            self._timer = threading.Timer(self.max_wait_s, self._deadline)
            self._timer.daemon = True
            self._timer.start()
        elif self._saving:
            log.warning("caught %s while writing the preemption checkpoint: stopping right after it", name)
        else:
            log.warning(
                "caught %s while waiting for a log point: stopping now without a new checkpoint "
                "(a restart resumes from the last one)",
                name,
            )
            self._hand_over()

    def _deadline(self) -> None:
        # timer thread: re-send the pending signal; the main thread's handler then hands it over at once
        signum = self._pending
        if signum is not None and not self._saving:
            log.warning("no log point within %.0f s of the stop signal", self.max_wait_s)
            os.kill(os.getpid(), signum)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ loop side
    def stop(self, save: Callable[[], object] | None = None) -> None:
        """At a safe point after a signal: run ``save`` (write a checkpoint), then hand the signal on.

        Under submitit this requeues the job and exits (SystemExit); with no previous handler the
        process ends by the signal's default action. Returns only if the previous handler returns
        (e.g. submitit's SIGTERM handler, which just logs), and then the guard is armed again.
        """
        self._cancel_timer()
        if save is not None:
            self._saving = True
            try:
                save()
            finally:
                self._saving = False
        self._hand_over()

    def _hand_over(self) -> None:
        self._cancel_timer()
        signum, self._pending = self._pending, None
        if signum is None:
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        name = getattr(previous, "__name__", str(previous))
        log.info("handing %s on to %s", signal.Signals(signum).name, name)
        if self.on_hand_over is not None:
            self.on_hand_over(signum)
        if callable(previous):
            previous(signum, None)
            if self.on_resume is not None:
                self.on_resume()
            return
        # default action (terminate): take the guard out of the way and deliver the signal again
        self._restore()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        raise SystemExit(128 + signum)  # only if the signal was blocked in this thread


# ---------------------------------------------------------------------------------- failure logs
try:
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency of the package
    Callback = object  # type: ignore[assignment,misc]


class LogJobFailure(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: log the traceback of a failed run into the run's own log files.

    In a multirun Hydra catches the run's exception and re-raises it only in the submitting process
    (which then exits non-zero); without this callback the job's logs just say "completed".
    """

    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        exc = getattr(job_return, "_return_value", None)
        overrides = " ".join(job_return.overrides or [])
        if getattr(exc, "exit_code", None) is not None:  # hydra_glue.RunFailed: its message says it all
            log.error("run failed (overrides: %s): %s", overrides, exc)
        elif isinstance(exc, BaseException):
            log.error("run failed (overrides: %s)", overrides, exc_info=(type(exc), exc, exc.__traceback__))
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        else:
            log.error("run failed (overrides: %s): %r", overrides, exc)
        sys.stderr.flush()
