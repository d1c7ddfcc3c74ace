"""Progress of a run: its training loop (``Progress``) and each pause (``PauseProgress``).

``Progress`` is the loop's: a tqdm bar on a terminal (``progress=bar``, or ``auto`` on a tty),
one log line per log point elsewhere (SLURM logs), nothing with ``progress=none``. Every program
(the DQN trainer, the case studies) shows its steps with it. The bar moves every
``TICK_SECONDS`` (``tick``, called each step: a clock read, no device sync), not only at log
points; its one rate is ``steps_per_s``, training steps per second of training (the log window's,
pauses excluded), so tqdm's own rate and time estimate, which would count pause time, are not shown.

The probe's fit and each diagnostic of a pause can take minutes: ``PauseProgress`` is what
``probes.pause.run_pause`` drives for the probe and each diagnostic:

- on a terminal (``progress=bar``, or ``auto`` on a tty): a nested tqdm bar (below the training
  bar, removed when done) during the probe's fit (one tick per probe optimizer step) and during
  each diagnostic;
- elsewhere (``progress=log``, or ``auto`` in a SLURM log): one log line per probe and per
  diagnostic with its wall-clock seconds, the same number as its ``timing/*_s`` row, and during a
  long one a line every ``LOG_SECONDS`` with the steps done so far (the probe's fit: n / total);
- ``progress=none``: nothing.

The probe reports its steps from its Python loop counter, never from a tensor, so progress adds
no host sync to the fit (``tests/test_progress.py``). On a GPU the bar therefore counts the steps
queued, which run ahead of the device; the probe's final loss on all of X waits for the rest.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .errors import choice

log = logging.getLogger("plasticity_runner")

TICK_SECONDS = 2.0  # the training bar moves at least this often between log points
LOG_SECONDS = 30.0  # progress=log: a line at most this often during a long part of a pause
# tqdm's default format less its rate and time estimate (they would count pause time); the postfix
# holds steps_per_s, the training rate
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def resolve_mode(mode: Any) -> str:
    """``auto`` -> ``bar`` on a terminal (stderr is a tty), else ``log``."""
    mode = choice(mode)
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


class Progress:
    """A run's progress over ``total`` steps from ``initial``: a tqdm bar on a terminal (or when
    asked); plain log lines otherwise (SLURM logs)."""

    def __init__(self, mode: Any, total: int, initial: int):
        self.mode, self.total = resolve_mode(mode), total
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, bar_format=BAR_FORMAT)
        self.postfix: dict[str, str] = {}
        self.shown, self.next_tick = initial, time.monotonic() + TICK_SECONDS

    def tick(self, step: int) -> None:
        """Called every training step: move the bar to ``step`` when ``TICK_SECONDS`` have passed."""
        if self.bar is None:
            return
        now = time.monotonic()
        if now >= self.next_tick:
            self.bar.update(step - self.shown)
            self.shown, self.next_tick = step, now + TICK_SECONDS

    def update(self, step: int, n: int, **values: float) -> None:
        """``n`` more steps done, at ``step``; ``values`` are shown beside the bar (or in the log line)."""
        self.postfix.update({k: f"{v:.4g}" for k, v in values.items()})
        if self.bar is not None:
            self.bar.update(step - self.shown)  # the ticks since the last log point moved it part way
            self.shown, self.next_tick = step, time.monotonic() + TICK_SECONDS
            self.bar.set_postfix(self.postfix, refresh=False)
        elif self.mode == "log":
            fields = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            log.info("step %d/%d %s", step, self.total, fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PauseProgress:
    """Progress of the parts of one pause at training step ``step``."""

    def __init__(self, mode: Any, step: int):
        self.mode, self.step = resolve_mode(mode), int(step)
        self.bar = None

    def start(self, name: str, total: int | None = None) -> Callable[[int], None]:
        """Begin part ``name`` (a registered diagnostic: ``probe``, ``statistics``, ...); returns
        ``advance(n)``, to call with the number of steps done since the last call (a Python int)."""
        self.end_bar()
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"pause {self.step}: {name}",
                unit="step",
                leave=False,
                position=1,
                dynamic_ncols=True,
                bar_format=None if total else "{desc} {elapsed}",
            )
            return self.bar.update
        if self.mode == "log" and total:
            return _LogAdvance(self.step, name, int(total))
        return _ignore

    def done(self, name: str, seconds: float, detail: str = "") -> None:
        """Part ``name`` finished after ``seconds`` (the value recorded in ``timing/<name>_s``)."""
        self.end_bar()
        if self.mode == "log":
            log.info("pause at step %d: %s %.3f s%s", self.step, name, seconds, f" ({detail})" if detail else "")

    def end_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _ignore(n: int = 1) -> None:
    return None


class _LogAdvance:
    """``advance(n)`` of ``progress=log``: counts the steps (Python ints), and every
    ``LOG_SECONDS`` logs how many of ``total`` are done."""

    def __init__(self, step: int, name: str, total: int):
        self.step, self.name, self.total, self.done = step, name, total, 0
        self.next_line = time.monotonic() + LOG_SECONDS

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now >= self.next_line:
            log.info("pause at step %d: %s %d/%d steps", self.step, self.name, self.done, self.total)
            self.next_line = now + LOG_SECONDS


class NoProgress:
    """The ``PauseProgress`` interface that does nothing (the default of the probes' callers)."""

    def start(self, name: str, total: int | None = None) -> Callable[[int], None]:
        return _ignore

    def done(self, name: str, seconds: float, detail: str = "") -> None:
        return None

    def end_bar(self) -> None:
        return None
