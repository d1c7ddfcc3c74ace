"""Progress of a run: its training loop (``Progress``) and each pause (``PauseProgress``).

``Progress`` is the loop's: a tqdm bar on a terminal (``progress=bar``, or ``auto`` on a tty),
one log line per log point elsewhere (SLURM logs), nothing with ``progress=none``. Every program
(the DQN trainer, the case studies) shows its steps with it.

The probe's fit and each diagnostic of a pause can take minutes: ``PauseProgress`` is what
``probes.pause.run_pause`` drives for the probe and each diagnostic:

- on a terminal (``progress=bar``, or ``auto`` on a tty): a nested tqdm bar (below the training
  bar, removed when done) during the probe's fit (one tick per probe optimizer step) and during
  each diagnostic;
- elsewhere (``progress=log``, or ``auto`` in a SLURM log): one log line per probe and per
  diagnostic with its wall-clock seconds, the same number as its ``timing/*_s`` row;
- ``progress=none``: nothing.

The probe reports its steps from its Python loop counter, never from a tensor, so progress adds
no host sync to the fit (``tests/test_progress.py``). On a GPU the bar therefore counts the steps
queued, which run ahead of the device; the probe's final loss on all of X waits for the rest.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from .errors import choice

log = logging.getLogger("plasticity_runner")


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

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def update(self, step: int, n: int, **values: float) -> None:
        """``n`` more steps done, at ``step``; ``values`` are shown beside the bar (or in the log line)."""
        self.postfix.update({k: f"{v:.4g}" for k, v in values.items()})
        if self.bar is not None:
            self.bar.update(n)
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
                total=total, desc=f"pause {self.step}: {name}", unit="step", leave=False, position=1,
                dynamic_ncols=True, bar_format=None if total else "{desc} {elapsed}",
            )
            return self.bar.update
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


class NoProgress:
    """The ``PauseProgress`` interface that does nothing (the default of the probes' callers)."""

    def start(self, name: str, total: int | None = None) -> Callable[[int], None]:
        return _ignore

    def done(self, name: str, seconds: float, detail: str = "") -> None:
        return None

    def end_bar(self) -> None:
        return None
