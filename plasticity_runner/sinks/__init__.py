"""Logging sinks: every row written to parquet, mirrored to TensorBoard and/or Weights & Biases.

Parquet (``metrics.MetricsWriter``) stays the source of truth. A sink receives, at each flush of
a pause shard and only after the shard is on disk, exactly the rows of that shard (tag
``phase/metric``, at the row's step) and the shard's arrays (probe curves, Hessian spectrum) as the
sink's own kinds (figures, histograms). Resume follows the shards: a sink opened on a resumed run
is told the step it resumed from and makes its readers drop what was mirrored after it.

Failures (chosen, and tested in ``tests/test_sinks.py``):

- a sink asked for (``logger=[wandb]``) whose package does not import: ``ConfigError`` naming
  ``logger.<name>`` at validation, before the run starts (exit 2 from the CLI);
- a sink that fails to open or to write during the run: a ``SinkWarning`` (and a log line) naming
  the sink and the error; that sink is closed and gets nothing more in this run; the parquet
  metrics are unaffected.

One module per sink (``tensorboard.py``, ``wandb.py``): a class with ``write(rows, arrays, step)``
and ``close(failed)``, registered in ``SINKS`` with the package it needs.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("plasticity_runner")

# sink name -> (module of this package, the package it imports, the pip extra that installs it)
SINKS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb", "wandb"),
}

Row = tuple[int, str, str, float, float]  # step, phase, metric, value, wall_time_s (MetricsWriter's rows)


class SinkWarning(UserWarning):
    """A logging sink failed to open or write; it is dropped for the rest of the run (parquet is unaffected)."""


def active_loggers(cfg: Any) -> list[str]:
    """Names of the sinks set in ``cfg.logger`` (in the order of ``SINKS``)."""
    node = OmegaConf.select(cfg, "logger") if isinstance(cfg, DictConfig) else getattr(cfg, "logger", None)
    if not node:
        return []
    unknown = sorted(set(node) - set(SINKS))
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"logger.{unknown[0]}", f"unknown logger; choose from {sorted(SINKS)}")
    return [name for name in SINKS if node.get(name) is not None]


def check_loggers(cfg: Any) -> None:
    """Import the package of every sink asked for; ``ConfigError`` naming ``logger.<name>`` if one fails."""
    from ..errors import ConfigError

    for name in active_loggers(cfg):
        _, package, extra = SINKS[name]
        try:
            importlib.import_module(package)
        except Exception as exc:  # ImportError, or a broken install raising anything at import
            raise ConfigError(
                f"logger.{name}",
                f"logger={name} needs the package '{package}', which does not import ({type(exc).__name__}: {exc}); "
                f'install it with pip install -e ".[{extra}]" or drop {name} from logger=[...]',
            ) from exc
    mode = OmegaConf.select(cfg, "logger.wandb.mode") if isinstance(cfg, DictConfig) else None
    if mode is not None and mode not in ("online", "offline", "disabled"):
        raise ConfigError("logger.wandb.mode", f"must be online, offline, disabled or null, got {mode!r}")


class Sinks:
    """The open sinks of a run; ``write`` mirrors one flushed shard to each, dropping one that fails."""

    def __init__(self, sinks: Mapping[str, Any] | None = None):
        self.sinks: dict[str, Any] = dict(sinks or {})

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)

    def write(self, rows: Sequence[Row], arrays: Mapping[str, np.ndarray], step: int) -> None:
        for name, sink in list(self.sinks.items()):
            try:
                sink.write(rows, arrays, step)
            except Exception as exc:  # a sink must never lose or stop the run: parquet is already written
                self._drop(name, f"cannot write step {step}", exc)

    def close(self, failed: bool = False) -> None:
        for name, sink in list(self.sinks.items()):
            try:
                sink.close(failed)
            except Exception as exc:
                self._drop(name, "cannot close", exc)
        self.sinks.clear()

    def _drop(self, name: str, what: str, exc: BaseException) -> None:
        sink = self.sinks.pop(name, None)
        message = (
            f"logger {name} {what} ({type(exc).__name__}: {exc}); it gets no more metrics in this run, "
            "the parquet metrics are unaffected"
        )
        log.warning(message)
        warnings.warn(message, SinkWarning, stacklevel=3)
        if sink is not None and what != "cannot close":
            try:
                sink.close(True)
            except Exception:
                pass


def open_sinks(cfg: Any, run_dir: Path, run_id: str, config: Mapping[str, Any], resumed_from: int | None) -> Sinks:
    """Open every sink of ``cfg.logger`` for the run in ``run_dir``.

    ``config``: the resolved config as written to ``run.json`` (W&B logs it flattened);
    ``resumed_from``: the checkpoint step the run resumed from (None: the run starts at step 0),
    so that a sink drops what was mirrored after it. A sink that fails to open gives a
    ``SinkWarning`` and is left out.
    """
    out = Sinks()
    for name in active_loggers(cfg):
        module = importlib.import_module(f"{__name__}.{SINKS[name][0]}")
        try:
            out.sinks[name] = module.open_sink(cfg.logger[name], Path(run_dir), run_id, config, resumed_from)
        except Exception as exc:
            message = f"logger {name} cannot open ({type(exc).__name__}: {exc}); the parquet metrics are unaffected"
            log.warning(message)
            warnings.warn(message, SinkWarning, stacklevel=2)
    return out


def rows_by_step(rows: Sequence[Row]) -> dict[int, dict[str, float]]:
    """``{step: {"phase/metric": value}}`` of ``rows``, steps in increasing order."""
    out: dict[int, dict[str, float]] = {}
    for step, phase, metric, value, _ in rows:
        out.setdefault(int(step), {})[f"{phase}/{metric}"] = float(value)
    return dict(sorted(out.items()))


def probe_curve_figure(curve: np.ndarray, curve_steps: np.ndarray, step: int):
    """A matplotlib figure of the probe's training-loss curves (one line per target, figure 4)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=80)
    ax = fig.add_subplot()
    for j, row in enumerate(np.atleast_2d(curve)):
        ax.plot(curve_steps, row, lw=1, label=f"target {j}")
    ax.set_yscale("log")
    ax.set_xlabel("probe step")
    ax.set_ylabel("minibatch loss")
    ax.set_title(f"probe fit at training step {step}")
    fig.tight_layout()
    return fig


def figure_rgb(fig) -> np.ndarray:
    """The figure rendered to an ``[H, W, 3]`` uint8 image (Agg; no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def hessian_histogram(arrays: Mapping[str, np.ndarray], bins: int = 64) -> tuple[np.ndarray, np.ndarray] | None:
    """The Hessian spectral density as a histogram ``(counts, edges)``: the Ritz values weighted by
    their quadrature weights (stochastic Lanczos quadrature, ``probes/curvature.py``), counts
    summing to 1 per start vector averaged; None when the pause has no spectrum."""
    if "hessian/ritz_values" not in arrays:
        return None
    values = np.asarray(arrays["hessian/ritz_values"], dtype=np.float64).ravel()
    weights = np.asarray(arrays["hessian/ritz_weights"], dtype=np.float64).ravel()
    finite = np.isfinite(values) & np.isfinite(weights)
    if not finite.any():
        return None
    values, weights = values[finite], weights[finite]
    counts, edges = np.histogram(values, bins=bins, weights=weights / max(weights.sum(), 1e-300))
    return counts, edges
