"""What a figure was run on: its data set, architecture, number of seeds and budget.

A PNG or a CSV leaves the report page on its own (into a paper, a slide, a notebook), so each
carries this line itself: the builder writes it under the figure's title (``stamp_figure``), into
the saved files' metadata, and as columns of every table the figure writes (``stamp_table``).
It is computed from the runs the figure drew (``FigureResult.runs``; every used run when a figure
does not say).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from . import names as N
from .data import natural_key

# Columns every table of the report carries (a table's own column of the same name wins: it is
# per row, these are per figure).
COLUMNS = ("dataset", "architecture", "seeds", "runs", "total_steps", "probe_steps")


@dataclass(frozen=True)
class Provenance:
    dataset: str  # e.g. "digits", "atari pong, breakout" ("" when no run says)
    architecture: str  # e.g. "mlp", "cnn, mlp"
    seeds: int  # distinct seed values
    runs: int  # run directories
    total_steps: str  # training steps of the runs, e.g. "300" or "300-1000"
    probe_steps: str  # optimizer steps per probe target ("off" when the probe is disabled)
    probe_targets: str  # targets per probe pause

    def line(self) -> str:
        """One line naming what the figure was run on, e.g. ``data: digits · architecture: mlp ·
        3 seeds (6 runs) · 300 training steps · probe: 3 targets x 50 steps``."""
        parts = [
            f"data: {self.dataset or 'unknown'}",
            f"architecture: {self.architecture or 'unknown'}",
            f"{self.seeds} seed{'s' if self.seeds != 1 else ''} ({self.runs} run{'s' if self.runs != 1 else ''})",
            f"{self.total_steps} training steps",
        ]
        if self.probe_steps == "off":
            parts.append("probe off")
        elif self.probe_steps:
            targets = f"{self.probe_targets} targets x " if self.probe_targets else ""
            parts.append(f"probe: {targets}{self.probe_steps} steps")
        return " · ".join(parts)

    def columns(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "architecture": self.architecture,
            "seeds": self.seeds,
            "runs": self.runs,
            "total_steps": self.total_steps,
            "probe_steps": self.probe_steps,
        }


def _values(values: Iterable) -> str:
    """Distinct values as text, naturally sorted and comma-joined; a numeric range as ``lo-hi``."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return ""
    try:
        nums = sorted({float(v) for v in vals})
    except (TypeError, ValueError):
        nums = None
    if nums is not None and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals):
        fmt = lambda x: str(int(x)) if x.is_integer() else f"{x:g}"
        return fmt(nums[0]) if len(nums) == 1 else f"{fmt(nums[0])}-{fmt(nums[-1])}"
    return ", ".join(sorted({str(v) for v in vals}, key=natural_key))


def _dataset(run: pd.Series) -> str | None:
    env = run.get(N.ENV)
    if env in (N.ENV_ATARI, N.ENV_MINATAR) and isinstance(run.get(N.GAME), str):
        return f"{env} {run[N.GAME]}"
    dataset = run.get(N.DATASET)
    if isinstance(dataset, str):
        return dataset
    return env if isinstance(env, str) else None


def _steps(run: pd.Series) -> float | None:
    """A run's training (optimizer) steps: ``total_steps``, or iterations x steps per iteration
    for the memorisation study."""
    if run.get(N.ENV) == N.ENV_MEMORIZATION:
        it, per = run.get(N.MEM_ITERATIONS), run.get(N.MEM_ITERATION_STEPS)
        if it is not None and per is not None:
            return float(it) * float(per)
    steps = run.get(N.TOTAL_STEPS)
    return None if steps is None else float(steps)


def provenance(frame: pd.DataFrame, runs: Iterable[str] | None = None) -> Provenance:
    """The provenance of the runs ``runs`` (run directories; all runs of ``frame`` when None)."""
    if frame.empty:
        return Provenance("", "", 0, 0, "", "", "")
    configs = frame.groupby("run_dir", sort=True).first()
    if runs is not None:
        configs = configs.loc[configs.index.isin(set(runs))]
    col = lambda k: configs[k] if k in configs.columns else pd.Series(None, index=configs.index, dtype=object)
    rows = [r for _, r in configs.iterrows()]
    seeds = col(N.SEED).dropna().nunique()
    probe_on = col(N.PROBE_ENABLED)
    probed = [
        r
        for r in rows
        if r.get(N.PROBE_ENABLED) is not False and r.get(N.ENV) != N.ENV_MEMORIZATION and r.get(N.ENV) != N.ENV_BROWNIAN
    ]
    probe_steps = _values(r.get(N.PROBE_STEPS) for r in probed) if probed else ("off" if probe_on.notna().any() else "")
    return Provenance(
        dataset=_values(_dataset(r) for r in rows),
        architecture=_values(col(N.ARCH)),
        seeds=int(seeds) if seeds else len(rows),
        runs=len(rows),
        total_steps=_values(_steps(r) for r in rows),
        probe_steps=probe_steps,
        probe_targets=_values(r.get(N.PROBE_TARGETS) for r in probed),
    )


def stamp_table(table: pd.DataFrame, prov: Provenance) -> pd.DataFrame:
    """``table`` with the provenance columns appended (those it lacks)."""
    table = table.copy()
    for k, v in prov.columns().items():
        if k not in table.columns:
            table[k] = v
    return table
