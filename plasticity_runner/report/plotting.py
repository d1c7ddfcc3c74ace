"""Shared plotting helpers of the report's figures: the result type, canvas, colours, legends,
group curves (mean over seeds, +-1 std band, single runs thin) and the per-run quantities that
several figures plot (plasticity loss, probe-loss change, Pearson r).

Figures are drawn on the Agg canvas without pyplot, so no global backend is touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from . import names as N
from .data import assign_groups, first_last, select, with_config

# What the band of ``plot_group_curves`` / ``draw_curve_grid`` is (FigureResult.bands).
BAND_STD_SEEDS = (
    "band: mean over seeds (bold) ±1 std over seeds at each step (sample std, n - 1), runs thin; "
    "n = runs per curve, in the legend"
)
# Units of the quantities the figures plot: the probe regresses Q-values on targets a + sin(...),
# so its loss (and P = b - loss) is in squared Q units; so is the TD loss.
PROBE_LOSS_UNIT = "squared Q units"


class MissingData(LookupError):
    """The sweep lacks the metrics or arrays a figure needs (the message says which)."""


@dataclass
class FigureResult:
    name: str  # file stem, e.g. "figure3_falsification"
    title: str
    caption: str
    figure: Figure
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What a band, bar or whisker of the figure is, with its n (e.g. "band: +-1 std over seeds, n
    # per curve in the legend"); written on the figure under its title. Empty: the figure has none.
    bands: str = ""
    # The run directories the figure drew (None: every used run); their data set, architecture,
    # seeds and budget are named on the figure and in its tables (report/provenance.py).
    runs: list[str] | None = None


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panel_grid(
    n: int, max_cols: int, panel: tuple[float, float], margin: tuple[float, float] = (0.0, 0.0), **subplots_kw
) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels in rows of at most ``max_cols``, each ``panel`` inches (plus
    ``margin`` inches for the whole figure); returns it and the ``n`` axes, flat, the grid's
    unused cells switched off. ``subplots_kw`` go to ``Figure.subplots`` (sharex, sharey)."""
    ncols = min(max_cols, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure(panel[0] * ncols + margin[0], panel[1] * nrows + margin[1])
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots_kw).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def step_scale(steps: Iterable[int]) -> ScalarMappable:
    """Viridis over the training steps ``steps`` (at least one step wide): ``.to_rgba(step)``
    colours a curve by its step, and the figure's colorbar takes it whole."""
    steps = list(steps)
    lo, hi = min(steps), max(steps)
    return ScalarMappable(norm=Normalize(lo, max(hi, lo + 1)), cmap=colormaps["viridis"])


def draw_gradcov(ax, matrix: np.ndarray, title: str, fontsize: str = "small"):
    """A gradient covariance matrix as a heatmap, -1 (blue) to 1 (red), no ticks; returns the image
    (for the colorbar)."""
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def palette(n: int) -> list:
    """``n`` distinct colours: tab10, tab20, then evenly spaced turbo."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def legend(ax, n: int) -> None:
    """A frameless legend on ``ax`` sized for ``n`` entries (none when ``n`` is 0)."""
    if n == 0:
        return
    ax.legend(fontsize="x-small" if n > 6 else "small", ncol=1 + n // 12, frameon=False)


def wrap_label(label: str, width: int) -> str:
    """Wrap a ``k=v, k=v`` label at its commas into lines of about ``width`` characters."""
    lines, line = [], ""
    for part in label.split(", "):
        if line and len(line) + 2 + len(part) > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return "\n".join([*lines, line])


def run_name(run_dir: str) -> str:
    return Path(run_dir).name


def local_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Regroup a figure's subset so labels name only the keys that vary within it."""
    return assign_groups(frame)[0]


def count_nonfinite(values: pd.Series) -> int:
    return int((~np.isfinite(values.to_numpy(dtype=float))).sum())


def mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def plot_group_curves(ax, s: pd.DataFrame, color, label: str, x: str = "step") -> None:
    """Thin line per run, bold mean over runs per x, band of +-1 std (over seeds)."""
    for _, run in s.groupby("run_dir", sort=True):
        ax.plot(run[x], run["value"], color=color, lw=0.7, alpha=0.3)
    agg = s.groupby(x)["value"].agg(["mean", "std", "size"]).reset_index()
    n_runs = s["run_dir"].nunique()
    # one step only: a marker, or the curve would be invisible
    ax.plot(
        agg[x], agg["mean"], color=color, lw=2, label=f"{label} (n={n_runs})", marker="o" if len(agg) == 1 else None
    )
    band = agg["std"].fillna(0.0)
    if (agg["size"] > 1).any():
        ax.fill_between(agg[x], agg["mean"] - band, agg["mean"] + band, color=color, alpha=0.2, lw=0)


def pearson(x: Iterable[float], y: Iterable[float]) -> float:
    """Pearson correlation of finite pairs (``np.corrcoef``); NaN below 3 points or zero variance."""
    x, y = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def sign(r: float) -> str:
    if not np.isfinite(r):
        return "n/a"
    return "+" if r > 0 else "-" if r < 0 else "0"


def plasticity_loss(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run with two or more probe pauses: P(last pause) - P(first pause) (eq. 5; < 0 = lost)."""
    fl = first_last(frame, N.PLASTICITY)
    fl["value"] = fl["last"] - fl["first"]
    return fl


def probe_loss_change(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run with two or more probe pauses: probe_loss(last pause) - probe_loss(first pause)."""
    fl = first_last(frame, N.PROBE_LOSS)
    fl["value"] = fl["last"] - fl["first"]
    return fl


def probe_loss_runs(frame: pd.DataFrame, facet: str | None) -> pd.DataFrame:
    """The classification runs of ``probe_loss_change`` (first, last, value = last - first, their
    steps) with their config ``architecture.name``, ``interventions`` (``none`` when unset) and
    ``facet``: the value of config key ``facet`` as a string (``all runs`` when ``facet`` is None).
    The per-run rows behind the cells of figures 6 / 8 and 10 / 11."""
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    runs = with_config(probe_loss_change(frame), frame, [N.ARCH, N.INTERVENTIONS] + ([facet] if facet else []))
    if runs.empty:
        return runs
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    runs["facet"] = runs[facet].astype(str) if facet else "all runs"
    return runs


def pause_span(runs: pd.DataFrame) -> dict[str, int]:
    """Of per-run rows with first_step and last_step: the earliest first pause and the range of last pauses."""
    return {
        "first_step": int(runs["first_step"].min()),
        "last_step_min": int(runs["last_step"].min()),
        "last_step_max": int(runs["last_step"].max()),
    }


def interventions_of(frame: pd.DataFrame) -> pd.Series:
    """Per run (index run_dir): its ``interventions`` label, ``none`` when the config lacks it."""
    if N.INTERVENTIONS not in frame.columns:
        return pd.Series(N.NO_INTERVENTION, index=sorted(frame["run_dir"].unique()), dtype=object)
    return frame.groupby("run_dir", sort=True)[N.INTERVENTIONS].first().fillna(N.NO_INTERVENTION).astype(str)


def order_values(values: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """The distinct ``values``: those in ``preferred`` first, in its order, then the rest sorted."""
    values = list(dict.fromkeys(values))
    pref = [p for p in preferred if p in values]
    return pref + sorted((v for v in values if v not in pref), key=str)


def draw_curve_grid(
    s: pd.DataFrame,
    rows: list[str],
    cols: list[str],
    lines: list[str],
    ylabel: str,
    xlabel: str = "training step",
    log: bool = False,
    panel_size: tuple[float, float] = (3.6, 2.8),
) -> Figure:
    """A grid of panels (``s["row"]`` x ``s["col"]``), one curve per ``s["line"]`` in each: thin
    lines the runs, bold the mean over them per step, band +-1 std (``plot_group_curves``). One
    legend for the figure; a panel without data says so."""
    fig = new_figure(panel_size[0] * len(cols) + 2.2, panel_size[1] * len(rows) + 0.6)
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex=True)
    colors = dict(zip(lines, palette(len(lines))))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            sp = s[(s["row"] == r) & (s["col"] == c)]
            for line in lines:
                sl = sp[sp["line"] == line]
                if len(sl):
                    plot_group_curves(ax, sl, colors[line], line)
            if sp.empty:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", color="grey")
            elif log and (sp["value"] > 0).all():
                ax.set_yscale("log")
            ax.set_title(wrap_label(", ".join(x for x in (r, c) if x), 40), fontsize="small")
            ax.tick_params(labelsize="x-small")
            if i == len(rows) - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
    handles = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            key = lab.rsplit(" (n=", 1)[0]
            handles.setdefault(key, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="x-small", frameon=False)
    return fig


def curve_summary(s: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys`` group of a long series (run_dir, step, value): runs, each run's first and last
    value averaged over runs (mean, std), and the last step reached (min, max over runs)."""
    rows = []
    for values, g in s.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        per_run = g.sort_values("step").groupby("run_dir")
        first, last = per_run["value"].first(), per_run["value"].last()
        fm, fs = mean_std(first)
        lm, ls = mean_std(last)
        steps = per_run["step"].last()
        rows.append(
            {
                **dict(zip(keys, values)),
                "runs": len(first),
                "first_mean": fm,
                "first_std": fs,
                "last_mean": lm,
                "last_std": ls,
                "last_step_min": int(steps.min()),
                "last_step_max": int(steps.max()),
                "nonfinite": count_nonfinite(last),
            }
        )
    return pd.DataFrame(rows)
