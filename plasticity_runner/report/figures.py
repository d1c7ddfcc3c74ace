"""The report's figures, each reproducing one figure of Lyle et al. (2023) from a sweep's metrics.

Every figure function takes the long-format frame of ``load_sweep`` (arrays are read from each
row's ``run_dir``) and returns a ``FigureResult``: a matplotlib ``Figure`` (drawn on the Agg
canvas, without pyplot, so no global backend is touched) and the tables of the numbers it plots.
A function raises ``MissingData`` with the reason when the sweep lacks what the figure needs, so
the report can say why a figure is absent. The ``*_table`` functions compute the numbers alone.

Names of metrics, arrays and config keys come from ``names.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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
from .data import (
    assign_groups,
    first_last,
    first_row,
    group_label,
    is_group_key,
    label_keys,
    last_row,
    load_step_arrays,
    natural_key,
    select,
    series,
    spread_steps,
    steps_with_arrays,
    with_config,
)


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


# ------------------------------------------------------------------------------ helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    ax.legend(fontsize="x-small" if n > 6 else "small", ncol=1 + n // 12, frameon=False)


def _wrap(label: str, width: int) -> str:
    """Wrap a ``k=v, k=v`` label at its commas into lines of about ``width`` characters."""
    lines, line = [], ""
    for part in label.split(", "):
        if line and len(line) + 2 + len(part) > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return "\n".join([*lines, line])


def _run_name(run_dir: str) -> str:
    return Path(run_dir).name


def _local_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Regroup a figure's subset so labels name only the keys that vary within it."""
    return assign_groups(frame)[0]


def _nonfinite(values: pd.Series) -> int:
    return int((~np.isfinite(values.to_numpy(dtype=float))).sum())


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def _plot_group_curves(ax, s: pd.DataFrame, color, label: str, x: str = "step") -> None:
    """Thin line per run, bold mean over runs per x, band of +-1 std (over seeds)."""
    for _, run in s.groupby("run_dir", sort=True):
        ax.plot(run[x], run["value"], color=color, lw=0.7, alpha=0.3)
    agg = s.groupby(x)["value"].agg(["mean", "std", "size"]).reset_index()
    n_runs = s["run_dir"].nunique()
    ax.plot(agg[x], agg["mean"], color=color, lw=2, label=f"{label} (n={n_runs})")
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


# ------------------------------------------------------------------------------ probe over training


def plasticity_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group: runs, last pause reached, final probe loss and plasticity loss (mean, std over seeds).

    ``final_probe_loss`` is each run's probe loss at its last pause; ``plasticity_loss`` is each
    run's P(last pause) - P(first pause); both are then averaged over the group's finite values
    (``nonfinite`` counts the runs whose value is NaN or inf, e.g. diverged runs).
    """
    frame = frame if "group" in frame.columns else _local_groups(frame)
    loss = series(frame, N.PROBE_LOSS, finite=False)
    rows = []
    final = last_row(loss) if len(loss) else pd.DataFrame(columns=["step", "value"])
    ploss = plasticity_loss(frame).set_index("run_dir")
    runs_of = frame.groupby("group")["run_dir"].unique()
    for group in sorted(runs_of.index, key=natural_key):
        run_dirs = runs_of[group]
        f = final.reindex([r for r in run_dirs if r in final.index])
        p = ploss.reindex([r for r in run_dirs if r in ploss.index])
        if f.empty and p.empty:
            continue
        m, s = _mean_std(f["value"])
        pm, ps = _mean_std(p["value"])
        steps = pd.concat([f["step"], p.get("last_step", pd.Series(dtype=float))])
        rows.append(
            {
                "group": group,
                "runs": len(set(f.index) | set(p.index)),
                "last_step_min": int(steps.min()) if len(steps) else None,
                "last_step_max": int(steps.max()) if len(steps) else None,
                "final_probe_loss_mean": m,
                "final_probe_loss_std": s,
                "plasticity_loss_mean": pm,
                "plasticity_loss_std": ps,
                "nonfinite": max(_nonfinite(f["value"]), _nonfinite(p["value"])),
            }
        )
    return pd.DataFrame(rows)


def plasticity_over_training(frame: pd.DataFrame, max_lines: int = 8, max_panels: int = 30) -> FigureResult:
    """Probe loss and plasticity loss over training, per run and per group (section 3.1, eq. 5).

    Needs ``probe/probe_loss`` and/or ``probe/plasticity`` at the pauses of any run. With at most
    ``max_lines`` groups: left panel the probe loss (mean final loss over the probe targets) at
    each pause, right panel the plasticity loss P(t) - P(t0) of eq. 5 (negative = plasticity
    lost), one colour per group. With more groups: one small panel per group (at most
    ``max_panels``) of the plasticity loss (the probe loss when plasticity is not logged). Thin
    lines are runs, bold lines the mean over the seeds of a group, the band +-1 std over seeds.
    """
    frame = _local_groups(frame[frame["phase"] == N.PROBE_LOSS[0]])
    loss = series(frame, N.PROBE_LOSS)
    plast = series(frame, N.PLASTICITY)
    if len(plast):
        plast["value"] = plast["value"] - plast.groupby("run_dir")["value"].transform("first")
    panels = [(s, t) for s, t in [(loss, "probe loss (mean over targets)"),
                                  (plast, "plasticity loss P(t) - P(t0)")] if len(s)]
    if not panels:
        raise MissingData("no probe metrics (probe/probe_loss, probe/plasticity)")
    group_of = frame.groupby("run_dir")["group"].first()
    runs = set().union(*[set(s["run_dir"]) for s, _ in panels])
    groups = sorted(set(group_of[group_of.index.isin(runs)]), key=natural_key)
    notes = []
    if len(groups) <= max_lines:
        colors = dict(zip(groups, _colors(len(groups))))
        long_labels = max(len(g) for g in groups) > 40
        fig = _figure(4.8 * len(panels) + (3.0 if long_labels else 0), 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (s, title) in zip(axes, panels):
            s = s.assign(group=s["run_dir"].map(group_of))
            for g in groups:
                sg = s[s["group"] == g]
                if len(sg):
                    _plot_group_curves(ax, sg, colors[g], _wrap(g, 45) if long_labels else g)
            ax.set_xlabel("training step")
            ax.set_title(title)
            if "plasticity loss" in title:
                ax.axhline(0, color="grey", lw=0.8, ls="--")
        if long_labels:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside right upper", fontsize="x-small", frameon=False)
        else:
            _legend(axes[0], len(groups))
    else:
        s, title = panels[-1]
        s = s.assign(group=s["run_dir"].map(group_of))
        shown = [g for g in groups if (s["group"] == g).any()]
        if len(shown) > max_panels:
            notes.append(f"{len(shown) - max_panels} of {len(shown)} groups not drawn (max_panels={max_panels}); "
                         "all are in the table.")
            shown = shown[:max_panels]
        ncols = min(5, len(shown))
        nrows = math.ceil(len(shown) / ncols)
        fig = _figure(3.2 * ncols, 2.5 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
        for ax, g in zip(axes, shown):
            _plot_group_curves(ax, s[s["group"] == g], "tab:blue", g)
            ax.set_title(_wrap(g, 38), fontsize="x-small")
            ax.tick_params(labelsize="x-small")
            if "plasticity loss" in title:
                ax.axhline(0, color="grey", lw=0.8, ls="--")
        for ax in axes[len(shown):]:
            ax.set_axis_off()
        fig.suptitle(f"{title} against training step, one panel per group")
    return FigureResult(
        name="plasticity_over_training",
        title="Probe loss and plasticity loss over training",
        caption="Per group (runs with equal config but the seed): mean over seeds (bold), "
        "+-1 std band, single runs thin. Plasticity loss is P(t) - P(t0), negative when the "
        "network lost plasticity (eq. 5).",
        figure=fig,
        tables={"groups": plasticity_table(frame)},
        notes=notes,
    )


# ------------------------------------------------------------------------------ figure 1


def _iterations(s: pd.DataFrame) -> pd.DataFrame:
    s = s.copy()
    s["iteration"] = s.groupby("run_dir").cumcount() + 1
    return s


def optimizer_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 1 numbers per group (optimizer): final accuracy and dead fraction, min accuracy."""
    frame = _local_groups(select(frame, N.ENV, N.ENV_MEMORIZATION))
    acc, dead = series(frame, N.ACCURACY), series(frame, N.EVAL_DEAD_FRAC)
    group_of = frame.groupby("run_dir")["group"].first()
    rows = []
    for g in sorted(group_of.unique(), key=natural_key):
        runs = group_of.index[group_of == g]
        a = acc[acc["run_dir"].isin(runs)]
        d = dead[dead["run_dir"].isin(runs)]
        if a.empty and d.empty:
            continue
        am, as_ = _mean_std(a.groupby("run_dir")["value"].last()) if len(a) else (math.nan, math.nan)
        dm, ds = _mean_std(d.groupby("run_dir")["value"].last()) if len(d) else (math.nan, math.nan)
        rows.append(
            {
                "group": g,
                "runs": len(set(a["run_dir"]) | set(d["run_dir"])),
                "iterations": int(max(a.groupby("run_dir").size().max() if len(a) else 0,
                                      d.groupby("run_dir").size().max() if len(d) else 0)),
                "final_accuracy_mean": am,
                "final_accuracy_std": as_,
                "min_accuracy_mean": _mean_std(a.groupby("run_dir")["value"].min())[0] if len(a) else math.nan,
                "final_dead_frac_mean": dm,
                "final_dead_frac_std": ds,
            }
        )
    return pd.DataFrame(rows)


def figure1_optimizer_instability(frame: pd.DataFrame) -> FigureResult:
    """Figure 1: accuracy and dead-unit fraction per iteration, default vs tuned Adam.

    Needs runs with ``env.name=memorization`` (all runs if the config lacks ``env.name``) logging
    ``eval/accuracy`` and/or ``eval/dead_frac`` at the end of each iteration (labels are
    re-randomised between iterations); ``eval/adam_update_norm`` adds a third panel. One line per
    group, normally ``optimizer.name`` = adam (default) vs adam_tuned; mean over seeds, +-1 std.
    """
    frame = _local_groups(select(frame, N.ENV, N.ENV_MEMORIZATION))
    metrics = [(N.ACCURACY, "accuracy"), (N.EVAL_DEAD_FRAC, "dead unit fraction"),
               (N.ADAM_UPDATE_NORM, "Adam update norm")]
    panels = [(series(frame, m), t) for m, t in metrics]
    panels = [(s, t) for s, t in panels if len(s)]
    if not any(t in ("accuracy", "dead unit fraction") for _, t in panels):
        raise MissingData("no memorization run with eval/accuracy or eval/dead_frac")
    group_of = frame.groupby("run_dir")["group"].first()
    groups = sorted(group_of.unique(), key=natural_key)
    colors = dict(zip(groups, _colors(len(groups))))
    fig = _figure(4.5 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (s, title) in zip(axes, panels):
        s = _iterations(s).assign(group=lambda d: d["run_dir"].map(group_of))
        for g in groups:
            sg = s[s["group"] == g]
            if len(sg):
                _plot_group_curves(ax, sg, colors[g], g, x="iteration")
        ax.set_xlabel("iteration (labels re-randomised after each)")
        ax.set_title(title)
        if title == "Adam update norm" and (s["value"] > 0).all():
            ax.set_yscale("log")
        if title != "Adam update norm":
            ax.set_ylim(-0.02, 1.02)
    _legend(axes[0], len(groups))
    return FigureResult(
        name="figure1_optimizer_instability",
        title="Figure 1: optimizer instability under label re-randomisation",
        caption="Memorization of randomly relabelled images; after each iteration the labels are "
        "re-randomised. Mean over seeds (bold), +-1 std band, single runs thin.",
        figure=fig,
        tables={"final": optimizer_table(frame)},
    )


# ------------------------------------------------------------------------------ figure 2


def process_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 2 scalars: per process and metric, the mean over seeds at the first and last step."""
    frame = select(frame, N.ENV, N.ENV_BROWNIAN)
    rows = []
    for metric, label in N.PROCESS_METRICS.items():
        for process, pname in N.PROCESSES.items():
            s = series(frame, (process, metric))
            if s.empty:
                continue
            g = s.groupby("run_dir")
            rows.append(
                {
                    "metric": metric,
                    "process": pname,
                    "runs": s["run_dir"].nunique(),
                    "first_step": int(g["step"].first().min()),
                    "first_mean": float(g["value"].first().mean()),
                    "last_step": int(g["step"].last().max()),
                    "last_mean": float(g["value"].last().mean()),
                }
            )
    return pd.DataFrame(rows)


DENSITY_FLOOR = 1e-6  # figure 2 density axes start this far below the highest density


def figure2_brownian(frame: pd.DataFrame, max_heatmaps: int = 4) -> FigureResult:
    """Figure 2: Hessian eigenvalue densities over time and gradient-covariance heatmaps, GD vs Brownian.

    Needs runs with ``env.name=brownian`` holding any of: arrays ``gd/hessian/density`` +
    ``gd/hessian/grid`` (and the ``brownian/`` ones) for the density rows, one curve per pause
    coloured by training step; scalars ``hessian_top_eig``, ``gradcov_offdiag_mean``,
    ``gradcov_neg_frac`` in phases ``gd`` and ``brownian`` (mean over seeds, +-1 std); arrays
    ``gd/gradcov/matrix`` and ``brownian/gradcov/matrix`` (k-means ordered) for the heatmap rows,
    at up to ``max_heatmaps`` pauses. Arrays come from one run (the first by seed).
    """
    frame = select(frame, N.ENV, N.ENV_BROWNIAN)
    if frame.empty:
        raise MissingData("no env.name=brownian run")
    seeds = frame.groupby("run_dir")[N.SEED].first() if N.SEED in frame.columns else None
    run_dirs = sorted(frame["run_dir"].unique(), key=lambda r: natural_key(f"{seeds[r] if seeds is not None else ''} {r}"))
    dens_keys = {p: [N.process_array(p, N.HESSIAN_DENSITY), N.process_array(p, N.HESSIAN_GRID)] for p in N.PROCESSES}
    cov_keys = {p: [N.process_array(p, N.GRADCOV_MATRIX)] for p in N.PROCESSES}

    def first_run_with(keys_of):
        for r in run_dirs:
            steps = {p: steps_with_arrays(r, keys) for p, keys in keys_of.items()}
            if any(steps.values()):
                return r, steps
        return None, {}

    dens_run, dens_steps = first_run_with(dens_keys)
    cov_run, cov_steps = first_run_with(cov_keys)
    scalars = [(m, label, {p: series(frame, (p, m)) for p in N.PROCESSES}) for m, label in N.PROCESS_METRICS.items()]
    scalars = [x for x in scalars if any(len(s) for s in x[2].values())]
    if dens_run is None and cov_run is None and not scalars:
        raise MissingData("no brownian run with Hessian densities, gradient covariances or gd/brownian scalars")

    cov_procs = [p for p in N.PROCESSES if cov_steps.get(p)]
    rows = [("density", 3.2)] if dens_run else []
    rows += [("scalars", 3.0)] if scalars else []
    rows += [(("cov", p), 2.6) for p in cov_procs]
    fig = _figure(max(10.0, 2.6 * max_heatmaps), sum(h for _, h in rows))
    subfigs = fig.subfigures(len(rows), 1, height_ratios=[h for _, h in rows], squeeze=False)[:, 0]
    notes = []
    colors = dict(zip(N.PROCESSES, ["tab:red", "tab:blue"]))
    for sub, (kind, _) in zip(subfigs, rows):
        if kind == "density":
            procs = list(N.PROCESSES)
            axes = sub.subplots(1, len(procs), sharey=True, squeeze=False)[0]
            all_steps = sorted(set().union(*dens_steps.values()))
            norm = Normalize(min(all_steps), max(max(all_steps), min(all_steps) + 1))
            cmap = colormaps["viridis"]
            top = 0.0
            for ax, p in zip(axes, procs):
                for step in spread_steps(dens_steps.get(p, []), 12):
                    arr = load_step_arrays(dens_run, step, dens_keys[p])
                    d, grid = np.asarray(arr[dens_keys[p][0]], float), arr[dens_keys[p][1]]
                    top = max(top, float(np.nanmax(d)) if d.size else 0.0)
                    ax.plot(grid, np.maximum(d, 1e-300), color=cmap(norm(step)), lw=1)
                ax.set_yscale("log")
                ax.set_xlabel("eigenvalue")
                ax.set_title(f"Hessian spectrum density: {N.PROCESSES[p]}")
                if not dens_steps.get(p):
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
            axes[0].set_ylabel("density")
            if top > 0:
                axes[0].set_ylim(top * DENSITY_FLOOR, top * 2)
            sub.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="training step")
            notes.append(f"Hessian densities from run {_run_name(dens_run)}.")
        elif kind == "scalars":
            axes = sub.subplots(1, len(scalars), squeeze=False)[0]
            for ax, (m, label, by_proc) in zip(axes, scalars):
                for p, s in by_proc.items():
                    if len(s):
                        _plot_group_curves(ax, s, colors[p], N.PROCESSES[p])
                ax.set_title(label, fontsize="medium")
                ax.set_xlabel("training step")
            _legend(axes[0], 2)
        else:
            p = kind[1]
            steps = spread_steps(cov_steps[p], max_heatmaps)
            axes = sub.subplots(1, max_heatmaps, squeeze=False)[0]
            im = None
            for ax, step in zip(axes, steps):
                mat = load_step_arrays(cov_run, step, cov_keys[p])[cov_keys[p][0]]
                im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
                ax.set_title(f"step {step}", fontsize="small")
                ax.set_xticks([])
                ax.set_yticks([])
            for ax in axes[len(steps):]:
                ax.set_axis_off()
            axes[0].set_ylabel(N.PROCESSES[p])
            sub.suptitle(f"gradient covariance C_k: {N.PROCESSES[p]}", fontsize="medium")
            if im is not None:
                sub.colorbar(im, ax=list(axes), label="normalised gradient dot product")
    if cov_run:
        notes.append(f"Gradient covariance matrices from run {_run_name(cov_run)}.")
    return FigureResult(
        name="figure2_brownian",
        title="Figure 2: gradient descent vs Brownian motion",
        caption="Evolution of the Hessian spectrum and gradient covariance of a probe regression "
        "loss under gradient descent and under a random walk with the same step norms.",
        figure=fig,
        tables={"scalars": process_table(frame)},
        notes=notes,
    )


# ------------------------------------------------------------------------------ figure 3

FIG3_COLOR_KEYS = (N.ENV, N.DATASET, N.TASK)
FIG3_CONFIG_KEYS = (N.DATASET, N.TASK, N.ARCH, N.OPTIMIZER)  # config columns copied onto each point
FIG3_Y = {  # y axis of figure 3: name -> axis label
    "plasticity_loss": "plasticity loss P(T) - P(0) (< 0: plasticity lost)",
    "plasticity": "plasticity P(T) = b - probe loss",
}
# The two contrasts of section 5.2 / the caption of figure 3: name -> (the config key whose values
# are the groups, the statistics the paper says flip sign along it). Every statistic is tested along
# both; ``paper`` marks the pairs the paper names.
FIG3_CONTRASTS = {
    "observation space": (N.DATASET, ("weight norm", "weight rank")),
    "reward structure": (N.TASK, ("feature rank", "dead units")),
}


def falsification_points(
    frame: pd.DataFrame,
    statistics: Mapping[str, tuple[str, str]] | None = None,
    y: str = "plasticity_loss",
    color_keys: Iterable[str] = FIG3_COLOR_KEYS,
) -> pd.DataFrame:
    """Figure 3 points: one per run and statistic.

    ``plasticity`` is the run's plasticity loss ``P(T) - P(0)`` (``y="plasticity_loss"``, the
    default; section 2.2, with ``P = probe/plasticity = b - probe loss`` of eq. 5, so a negative
    value is plasticity lost) with ``T`` its last probe pause, or ``P(T)`` itself
    (``y="plasticity"``). ``value`` is the statistic at the step nearest ``T`` (the earlier one on a
    tie). A run whose first probe pause is not step 0 has no ``P(0)``, and one probed at step 0
    only has no ``T > 0``: for ``plasticity_loss`` they are left out and listed in
    ``points.attrs["no_step0"]`` and ``points.attrs["only_step0"]``. A non-finite plasticity (diverged run)
    is kept here and left out of the correlations. ``group`` labels environment and observation
    space (the ``color_keys`` that vary among the points); the columns of ``FIG3_CONFIG_KEYS`` that
    the sweep has hold each run's config values.
    """
    if y not in FIG3_Y:
        raise ValueError(f"y must be one of {', '.join(map(repr, FIG3_Y))}, not {y!r}")
    statistics = dict(N.STATISTICS if statistics is None else statistics)
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    plast = series(frame, N.PLASTICITY, finite=False)
    if plast.empty:
        return pd.DataFrame(columns=["run_dir", "statistic", "step", "value", "plasticity", "group"])
    last = last_row(plast)
    no_step0: list[str] = []
    only_step0: list[str] = []
    if y == "plasticity_loss":
        first = first_row(plast)
        no_step0 = sorted(first.index[first["step"] != 0])
        only_step0 = sorted(last.index[last["step"] == 0])  # no later pause yet: T = 0, no loss to show
        last = last.drop(index=no_step0 + only_step0)
        last["value"] = last["value"] - first.loc[last.index, "value"]
    rows = []
    for stat, metric in statistics.items():
        s = series(frame, metric)
        for run_dir, rs in s.groupby("run_dir"):
            if run_dir not in last.index:
                continue
            target = last.loc[run_dir, "step"]
            i = int(np.argmin(np.abs(rs["step"].to_numpy() - target)))
            rows.append({"run_dir": run_dir, "statistic": stat, "step": int(rs["step"].iloc[i]),
                         "value": float(rs["value"].iloc[i]), "plasticity": float(last.loc[run_dir, "value"])})
    points = pd.DataFrame(rows, columns=["run_dir", "statistic", "step", "value", "plasticity"])
    keys = [k for k in color_keys if k in frame.columns]
    cfg = frame.groupby("run_dir")[keys].first() if keys else pd.DataFrame(index=frame["run_dir"].unique())
    cfg = cfg.loc[cfg.index.isin(points["run_dir"])]
    varying = [k for k in keys if cfg[k].astype(str).nunique() > 1]
    labels = cfg.apply(lambda r: ", ".join(str(r[k]) for k in varying) or "all runs", axis=1) if len(cfg) else pd.Series(dtype=str)
    points["group"] = points["run_dir"].map(labels)
    config_keys = [k for k in FIG3_CONFIG_KEYS if k in frame.columns]
    if config_keys:
        values = frame.groupby("run_dir")[config_keys].first()
        for k in config_keys:
            points[k] = points["run_dir"].map(values[k])
    points.attrs["no_step0"] = no_step0
    points.attrs["only_step0"] = only_step0
    return points


def falsification_table(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3 tables from ``falsification_points``.

    ``correlations``: per statistic and group (and ``(all)``): points and Pearson r of plasticity
    against the statistic (``np.corrcoef``; NaN below 3 points or without variance) and its sign.
    ``summary``: per statistic, how many groups correlate positively / negatively and whether
    the sign flips between groups (the paper's falsification criterion).
    """
    corr_rows, summary_rows = [], []
    for stat, ps in points.groupby("statistic", sort=False):
        signs = []
        for g, pg in ps.groupby("group", sort=True):
            r = pearson(pg["value"], pg["plasticity"])
            signs.append(sign(r))
            corr_rows.append({"statistic": stat, "group": g, "n": len(pg), "pearson_r": r, "sign": sign(r)})
        r_all = pearson(ps["value"], ps["plasticity"])
        corr_rows.append({"statistic": stat, "group": "(all)", "n": len(ps), "pearson_r": r_all, "sign": sign(r_all)})
        summary_rows.append(
            {
                "statistic": stat,
                "groups": len(signs),
                "positive": signs.count("+"),
                "negative": signs.count("-"),
                "sign_flips": "yes" if "+" in signs and "-" in signs else "no",
                "pooled_r": r_all,
            }
        )
    cols = ["statistic", "group", "n", "pearson_r", "sign"]
    return pd.DataFrame(corr_rows, columns=cols), pd.DataFrame(summary_rows)


def falsification_contrasts(
    points: pd.DataFrame, contrasts: Mapping[str, tuple[str, Iterable[str]]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sign flips of figure 3 along the contrasts of section 5.2 (``FIG3_CONTRASTS``).

    For each contrast (its config key, e.g. ``env.dataset`` for the observation space) and each
    statistic: the runs of each value of the key, pooled over everything else (tasks, optimizers,
    architectures, seeds), give a Pearson r of plasticity (the points' y) against the statistic.
    ``contrast_correlations``: contrast, key, statistic, paper (the paper names this pair), level
    (the key's value), n, pearson_r, sign. ``contrast_summary``: per contrast and statistic, the
    levels with a finite r, how many are positive / negative, and ``sign_flips`` (yes when one
    level is positive and another negative). A contrast whose key the points lack is left out.
    """
    contrasts = dict(FIG3_CONTRASTS if contrasts is None else contrasts)
    rows, summary = [], []
    for name, (key, paper_stats) in contrasts.items():
        if key not in points.columns:
            continue
        for stat, ps in points.groupby("statistic", sort=False):
            signs = []
            for level, pl in ps.groupby(ps[key].astype(str), sort=True):
                r = pearson(pl["value"], pl["plasticity"])
                signs.append(sign(r))
                rows.append({"contrast": name, "key": key, "statistic": stat, "paper": stat in paper_stats,
                             "level": level, "n": len(pl), "pearson_r": r, "sign": sign(r)})
            finite = [s for s in signs if s != "n/a"]
            summary.append({"contrast": name, "key": key, "statistic": stat, "paper": stat in paper_stats,
                            "levels": len(finite), "positive": finite.count("+"), "negative": finite.count("-"),
                            "sign_flips": "yes" if "+" in finite and "-" in finite else "no"})
    cols = ["contrast", "key", "statistic", "paper", "level", "n", "pearson_r", "sign"]
    scols = ["contrast", "key", "statistic", "paper", "levels", "positive", "negative", "sign_flips"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(summary, columns=scols)


def figure3_falsification(
    frame: pd.DataFrame,
    statistics: Mapping[str, tuple[str, str]] | None = None,
    y: str = "plasticity_loss",
) -> FigureResult:
    """Figure 3: the falsification scatter of plasticity loss against four network statistics.

    Needs ``env.name=classification`` runs (all runs if the config lacks ``env.name``) with
    ``probe/plasticity`` and any of the statistics in ``names.STATISTICS`` (weight norm
    ``stats/param_norm``, feature rank ``stats/feature_srank_delta0.01``, weight rank
    ``stats/weight_rank_mean``, dead units ``stats/dead_frac``). One point per run: its
    plasticity loss ``P(T) - P(0)`` (``y="plasticity_loss"``) or plasticity ``P(T)``
    (``y="plasticity"``) at its last probe pause ``T`` against the statistic at that pause,
    coloured by environment (task) and observation space (dataset); the tables give each group's
    Pearson correlation and its sign, whether the sign flips between groups, and the sign flips
    along the paper's two contrasts (``falsification_contrasts``).
    """
    statistics = dict(N.STATISTICS if statistics is None else statistics)
    points = falsification_points(frame, statistics, y=y)
    if points.empty:
        raise MissingData("no classification run with probe/plasticity and a statistic ("
                          + ", ".join(f"{p}/{m}" for p, m in statistics.values()) + ")")
    corr, summary = falsification_table(points)
    contrast_corr, contrast_summary = falsification_contrasts(points)
    stats = [s for s in statistics if s in set(points["statistic"])]
    groups = sorted(points["group"].unique(), key=natural_key)
    colors = dict(zip(groups, _colors(len(groups))))
    arch = frame.groupby("run_dir")[N.ARCH].first() if N.ARCH in frame.columns else None
    archs = sorted(arch[arch.index.isin(points["run_dir"])].astype(str).unique()) if arch is not None else []
    markers = dict(zip(archs, "osD^vP*X"))
    fig = _figure(3.6 * len(stats), 3.9)
    axes = fig.subplots(1, len(stats), squeeze=False)[0]
    for ax, stat in zip(axes, stats):
        ps = points[points["statistic"] == stat]
        for g in groups:
            pg = ps[ps["group"] == g]
            if pg.empty:
                continue
            r = corr[(corr["statistic"] == stat) & (corr["group"] == g)]["pearson_r"].iloc[0]
            label = f"{g} (r={r:+.2f})" if np.isfinite(r) else f"{g} (r=n/a)"
            pg_arch = pg["run_dir"].map(arch).astype(str) if arch is not None else pd.Series("", index=pg.index)
            for a, pa_ in pg.groupby(pg_arch, sort=True):
                ax.scatter(pa_["value"], pa_["plasticity"], color=colors[g], marker=markers.get(a, "o"),
                           s=22, alpha=0.8, label=label)
                label = None  # one legend entry per group
        phase, metric = statistics[stat]
        ax.set_xlabel(f"{stat} ({metric})")
        ax.set_title(stat)
        ax.legend(fontsize="xx-small", frameon=False)
    axes[0].set_ylabel(FIG3_Y[y])
    notes = []
    if points.attrs.get("no_step0"):
        skipped = points.attrs["no_step0"]
        notes.append(f"Left out, no probe at step 0 (no P(0)): {len(skipped)} run(s): "
                     + ", ".join(_run_name(r) for r in skipped[:10]) + (" ..." if len(skipped) > 10 else "") + ".")
    if points.attrs.get("only_step0"):
        skipped = points.attrs["only_step0"]
        notes.append(f"Left out, probed at step 0 only (no P(T) with T > 0 yet): {len(skipped)} run(s): "
                     + ", ".join(_run_name(r) for r in skipped[:10]) + (" ..." if len(skipped) > 10 else "") + ".")
    if len(archs) > 1:
        notes.append("Marker shape is the architecture: " + ", ".join(f"{a} {markers[a]}" for a in archs) + ".")
    points_out = points.assign(run=points["run_dir"].map(_run_name)).drop(columns="run_dir")
    return FigureResult(
        name="figure3_falsification",
        title="Figure 3: falsification of candidate explanations of plasticity loss",
        caption=f"One point per run: {FIG3_Y[y]} at its last probe pause T against a statistic of "
        "the network at that pause. A statistic whose correlation with plasticity changes sign "
        "between groups (across observation spaces, across reward structures) cannot be a "
        "consistent cause of plasticity loss.",
        figure=fig,
        tables={"correlations": corr, "summary": summary, "contrast_correlations": contrast_corr,
                "contrast_summary": contrast_summary, "points": points_out},
        notes=notes,
    )


# ------------------------------------------------------------------------------ figure 4


def probe_curves(frame: pd.DataFrame, max_pauses: int = 8) -> pd.DataFrame:
    """Figure 4 curves: per group and pause, the probe learning curve averaged over targets and seeds.

    Columns: group, step (training step of the checkpoint), runs, targets, curve_steps and curve
    (numpy arrays), std (std over targets and seeds per probe step), initial/final/mean loss.
    """
    keys = [N.PROBE_CURVE_LOSS, N.PROBE_CURVE_STEPS]
    steps_of = {r: steps_with_arrays(r, keys) for r in sorted(frame["run_dir"].unique())}
    steps_of = {r: s for r, s in steps_of.items() if s}
    rows = []
    if not steps_of:
        return pd.DataFrame(rows)
    frame = _local_groups(frame[frame["run_dir"].isin(steps_of)])
    for g, gf in sorted(frame.groupby("group"), key=lambda kv: natural_key(kv[0])):
        by_run = {r: steps_of[r] for r in sorted(gf["run_dir"].unique())}
        for step in spread_steps(sorted(set().union(*by_run.values())), max_pauses):
            curves, xs = [], None
            for r, steps in by_run.items():
                if step not in steps:
                    continue
                arr = load_step_arrays(r, step, keys)
                loss = np.atleast_2d(arr[N.PROBE_CURVE_LOSS]).astype(float)
                if xs is None:
                    xs = np.asarray(arr[N.PROBE_CURVE_STEPS], dtype=float)
                if loss.shape[1] == len(xs):
                    curves.append(loss)
            if not curves:
                continue
            allc = np.concatenate(curves, axis=0)
            mean = np.nanmean(allc, axis=0)
            rows.append({"group": g, "step": int(step), "runs": len(curves), "targets": allc.shape[0],
                         "curve_steps": xs, "curve": mean, "std": np.nanstd(allc, axis=0),
                         "initial_loss": float(mean[0]), "final_loss": float(mean[-1]),
                         "mean_loss": float(mean.mean())})
    return pd.DataFrame(rows)


def figure4_probe_curves(frame: pd.DataFrame, max_pauses: int = 8, max_panels: int = 6) -> FigureResult:
    """Figure 4: probe learning curves from checkpoints taken at different training steps.

    Needs arrays ``probe/curve_loss`` [targets, K] and ``probe/curve_steps`` [K] at the pauses of
    any run. One panel per group (at most ``max_panels``), one curve per pause (at most
    ``max_pauses``, evenly spread), the mean over targets and seeds, coloured by the training step
    of the checkpoint, with a +-1 std band over targets and seeds. Flatter curves at later
    checkpoints are the paper's "slower training progress rather than higher plateaus".
    """
    curves = probe_curves(frame, max_pauses=max_pauses)
    if curves.empty:
        raise MissingData(f"no run stored arrays {N.PROBE_CURVE_LOSS} and {N.PROBE_CURVE_STEPS}")
    groups = list(dict.fromkeys(curves["group"]))  # already in natural order
    notes = []
    if len(groups) > max_panels:
        notes.append(f"{len(groups) - max_panels} of {len(groups)} groups not drawn (max_panels={max_panels}); "
                     "their numbers are in the table.")
    shown = groups[:max_panels]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = _figure(4.3 * ncols + 1, 3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    norm = Normalize(curves["step"].min(), max(curves["step"].max(), curves["step"].min() + 1))
    cmap = colormaps["viridis"]
    positive = all((c > 0).all() for c in curves["curve"])
    for ax, g in zip(axes, shown):
        for _, row in curves[curves["group"] == g].iterrows():
            c = cmap(norm(row["step"]))
            ax.plot(row["curve_steps"], row["curve"], color=c, lw=1.4)
            lo = row["curve"] - row["std"]
            if positive:
                lo = np.maximum(lo, row["curve"] * 1e-3)
            ax.fill_between(row["curve_steps"], lo, row["curve"] + row["std"], color=c, alpha=0.12, lw=0)
        if positive:
            ax.set_yscale("log")
        ax.set_title(_wrap(g, 50), fontsize="x-small")
        ax.set_xlabel("probe optimisation step")
        ax.set_ylabel("probe loss")
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[: len(shown)]), label="training step of checkpoint")
    table = curves.drop(columns=["curve_steps", "curve", "std"])
    return FigureResult(
        name="figure4_probe_curves",
        title="Figure 4: probe learning curves from checkpoints at different training steps",
        caption="Loss on new random regression targets while training from a checkpoint, one "
        "curve per checkpoint (mean over targets and seeds, +-1 std band).",
        figure=fig,
        tables={"curves": table},
        notes=notes,
    )


# ------------------------------------------------------------------------------ figure 5

FIG5_PANEL_KEYS = (N.ARCH, N.DATASET, N.TASK)


def width_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 5 numbers: per panel (architecture/dataset/task), line and width, the plasticity loss
    P(last pause) - P(first pause) averaged over runs (mean, std, runs).

    A line is a target-update period, or more generally the runs equal in every config key but
    the width, the panel keys and the seed (so runs of another sweep at one width, say with an
    intervention, form a line of their own). Lines with fewer than two widths are dropped.
    """
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    if N.WIDTH not in frame.columns:
        return pd.DataFrame()
    frame = frame[frame[N.WIDTH].notna()]
    pl = plasticity_loss(frame)
    if pl.empty:
        return pd.DataFrame()
    frame = frame[frame["run_dir"].isin(pl["run_dir"])]
    configs = frame.groupby("run_dir", sort=True)[[c for c in frame.columns if is_group_key(c)]].first()
    panel_keys = label_keys(configs, [k for k in FIG5_PANEL_KEYS if k in configs.columns], first=FIG5_PANEL_KEYS)
    others = [k for k in configs.columns if k not in panel_keys and k != N.WIDTH]
    # the lines: runs equal in everything but the width (the period first, as in the paper's legend)
    line_keys = [k for k in label_keys(configs, [*panel_keys, *others], first=(*panel_keys, N.TARGET_UPDATE))
                 if k not in panel_keys]
    pl = pl.merge(configs, left_on="run_dir", right_index=True)
    pl["panel"] = pl.apply(lambda r: ", ".join(str(r[k]) for k in panel_keys) or "all runs", axis=1)
    pl["line"] = pl.apply(lambda r: group_label(r, line_keys) if line_keys else "all runs", axis=1)
    pl["target_update_steps"] = (pl[N.TARGET_UPDATE].map(lambda v: None if pd.isna(v) else int(v))
                                 if N.TARGET_UPDATE in pl.columns else None)
    pl["width"] = pl[N.WIDTH].astype(float).astype(int)
    rows = []
    for (panel, line, width), g in pl.groupby(["panel", "line", "width"], sort=True):
        m, s = _mean_std(g["value"])
        rows.append({"panel": panel, "line": line, "target_update_steps": g["target_update_steps"].iloc[0],
                     "width": width, "runs": len(g), "plasticity_loss_mean": m, "plasticity_loss_std": s,
                     "nonfinite": _nonfinite(g["value"])})
    table = pd.DataFrame(rows)
    widths = table.groupby(["panel", "line"])["width"].transform("nunique")
    return table[widths >= 2].reset_index(drop=True)


def figure5_width(frame: pd.DataFrame) -> FigureResult:
    """Figure 5: plasticity loss against network width, one line per target-update period.

    Needs ``env.name=classification`` runs with ``architecture.width`` at two or more values and
    ``probe/plasticity`` at two or more pauses; ``agent.target_update_steps`` separates the lines
    (so does any other config key that varies, see ``width_table``). Plasticity loss is
    P(last pause) - P(first pause) per run (eq. 5), mean +-1 std over runs. One panel per
    architecture / dataset / task combination with a width sweep.
    """
    table = width_table(frame)
    if table.empty:
        raise MissingData(f"needs classification runs at two or more {N.WIDTH} values with probe/plasticity at two pauses")
    panels = sorted(table["panel"].unique(), key=natural_key)
    fig = _figure(4.2 * len(panels) + 1.5, 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    lines = sorted(table["line"].unique(), key=natural_key)
    colors = dict(zip(lines, _colors(len(lines))))
    only_period = set(table["line"].map(lambda v: v.startswith(N.TARGET_UPDATE + "=") and "," not in v)) == {True}
    for ax, panel in zip(axes, panels):
        t = table[table["panel"] == panel]
        for line in lines:
            tl = t[t["line"] == line].sort_values("width")
            if tl.empty:
                continue
            label = f"target update {tl['target_update_steps'].iloc[0]}" if only_period else _wrap(line, 40)
            ax.errorbar(tl["width"], tl["plasticity_loss_mean"], yerr=tl["plasticity_loss_std"].fillna(0),
                        color=colors[line], marker="o", capsize=3, label=label)
        widths = sorted(t["width"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("width")
        ax.set_title(panel, fontsize="small")
    axes[0].set_ylabel("plasticity loss P(T) - P(0)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="x-small", frameon=False)
    return FigureResult(
        name="figure5_width",
        title="Figure 5: plasticity loss against width",
        caption="Plasticity loss (P at the last pause minus P at the first; below 0 means "
        "plasticity was lost) for networks of increasing width, per target-network update period.",
        figure=fig,
        tables={"width": table},
    )


# ------------------------------------------------------------------------------ figure 6 / 8

ARCH_ORDER = ("mlp", "cnn", "resnet18", "vit", "nature_cnn")
FIG6_FACET_KEY = N.DATASET


def intervention_table(frame: pd.DataFrame, facet: str | None = FIG6_FACET_KEY) -> pd.DataFrame:
    """Figure 6 / 8 numbers: per facet (dataset), architecture and intervention, the change in
    probe loss between each run's first and last pause, averaged over runs (mean, std, runs)."""
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    if N.ARCH not in frame.columns:
        return pd.DataFrame()
    ch = with_config(probe_loss_change(frame), frame, [N.ARCH, N.INTERVENTIONS] + ([facet] if facet else []))
    if ch.empty:
        return pd.DataFrame()
    ch[N.INTERVENTIONS] = ch[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    ch["facet"] = ch[facet].astype(str) if facet else "all runs"
    rows = []
    for (f, a, i), g in ch.groupby(["facet", N.ARCH, N.INTERVENTIONS], sort=True):
        m, s = _mean_std(g["value"])
        rows.append({"facet": f, "architecture": a, "intervention": i, "runs": len(g),
                     "probe_loss_change_mean": m, "probe_loss_change_std": s, "nonfinite": _nonfinite(g["value"]),
                     "first_step": int(g["first_step"].min()), "last_step_min": int(g["last_step"].min()),
                     "last_step_max": int(g["last_step"].max())})
    return pd.DataFrame(rows)


def _order(values: Iterable[str], preferred: Iterable[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    pref = [p for p in preferred if p in values]
    return pref + sorted(v for v in values if v not in pref)


def figure6_interventions(frame: pd.DataFrame, facet: str | None = FIG6_FACET_KEY) -> FigureResult:
    """Figures 6 and 8/9: change in probe loss, architecture x intervention heatmap.

    Needs ``env.name=classification`` runs with ``architecture.name`` and ``probe/probe_loss`` at
    two or more pauses; ``interventions`` names the columns (missing = ``none``). Each cell is
    the mean over runs of probe_loss(last pause) - probe_loss(first pause), written in the cell;
    darker shading = smaller increase = less plasticity loss. One panel per ``facet`` value
    (the dataset: figure 8 is CIFAR-10, figure 9 MNIST), on a shared colour scale.
    """
    table = intervention_table(frame, facet)
    if table.empty:
        raise MissingData(f"needs classification runs with {N.ARCH} and probe/probe_loss at two or more pauses")
    facets = sorted(table["facet"].unique())
    archs = _order(table["architecture"].astype(str), ARCH_ORDER)
    intervs = _order(table["intervention"].astype(str), (N.NO_INTERVENTION,))
    vals = table["probe_loss_change_mean"].to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = Normalize(vmin, vmax)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # dark = low = less plasticity loss
    fig = _figure(max(4.5, 0.9 * len(intervs) + 2.5) * len(facets), 0.55 * len(archs) + 2.6)
    axes = fig.subplots(1, len(facets), squeeze=False)[0]
    im = None
    for ax, f in zip(axes, facets):
        t = table[table["facet"] == f]
        grid = np.full((len(archs), len(intervs)), np.nan)
        for _, row in t.iterrows():
            grid[archs.index(str(row["architecture"])), intervs.index(str(row["intervention"]))] = row["probe_loss_change_mean"]
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        for i in range(len(archs)):
            for j in range(len(intervs)):
                v = grid[i, j]
                text = "-" if not np.isfinite(v) else f"{v:.3g}"
                color = "black" if not np.isfinite(v) or norm(v) > 0.6 else "white"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
        ax.set_xticks(range(len(intervs)), intervs, rotation=40, ha="right")
        ax.set_yticks(range(len(archs)), archs)
        ax.set_title(f if facet else "all runs")
    fig.colorbar(im, ax=list(axes), label="change in probe loss (last - first pause)")
    notes = []
    used = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    used = used[used["run_dir"].isin(probe_loss_change(used)["run_dir"])]
    configs = used.groupby("run_dir")[[c for c in used.columns if is_group_key(c)]].first()
    cell_keys = tuple(k for k in ([facet] if facet else []) + [N.ARCH, N.INTERVENTIONS] if k in configs.columns)
    mixed = [k for k in label_keys(configs, list(configs.columns), first=cell_keys) if k not in cell_keys]
    if mixed:
        notes.append("Cells average over runs that also differ in: " + ", ".join(mixed) + ".")
    return FigureResult(
        name="figure6_interventions",
        title="Figures 6 / 8: effect of interventions on plasticity loss",
        caption="Change in loss on the probe targets between the first and last pause of training, "
        "mean over runs; darker = less plasticity loss. Grey cells: no run.",
        figure=fig,
        tables={"cells": table},
        notes=notes,
    )


# ------------------------------------------------------------------------------ figure 7


def atari_table(frame: pd.DataFrame, last_n: int = 5) -> pd.DataFrame:
    """Figure 7 numbers: per game, human-normalised score of the baseline and of layer norm and the
    human-normalised improvement of layer norm over the baseline (Wang et al., 2016).

    A run's score is the mean of its last ``last_n`` ``eval/human_normalized_score`` values; a
    method's score on a game is the mean over its runs (seeds). With human-normalised scores
    h = (s - random) / (human - random), the improvement (s_ln - s_base) / (max(human, s_base) -
    random) equals (h_ln - h_base) / max(1, h_base); ``improvement_pct`` is it in percent.
    """
    frame = select(frame, N.ENV, N.ENV_ATARI)
    if N.GAME not in frame.columns:
        return pd.DataFrame()
    s = series(frame, N.HUMAN_NORMALIZED_SCORE)
    if s.empty:
        return pd.DataFrame()
    score = s.groupby("run_dir")["value"].apply(lambda v: float(v.tail(last_n).mean()))  # s is sorted by step
    runs = with_config(score.rename("score").reset_index(), frame, [N.GAME, N.INTERVENTIONS])
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    rows = []
    for game, g in runs.groupby(N.GAME, sort=True):
        base = g[g[N.INTERVENTIONS] == N.NO_INTERVENTION]["score"]
        ln = g[g[N.INTERVENTIONS] == N.LAYER_NORM]["score"]
        if base.empty or ln.empty:
            continue
        hb, hl = float(base.mean()), float(ln.mean())
        rows.append({"game": game, "baseline_hns": hb, "layer_norm_hns": hl, "baseline_runs": len(base),
                     "layer_norm_runs": len(ln), "improvement_pct": 100.0 * (hl - hb) / max(1.0, hb)})
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("improvement_pct", kind="stable", ignore_index=True)
    return table


def figure7_atari_layer_norm(frame: pd.DataFrame, last_n: int = 5) -> FigureResult:
    """Figure 7: human-normalised improvement of layer norm over the baseline DDQN, per game, sorted.

    Needs ``env.name=atari`` runs with ``env.game`` and ``eval/human_normalized_score``, on each
    game both with ``interventions=none`` and ``interventions=layer_norm``. When those runs also
    stored ``gradcov/matrix`` arrays, a second row shows the last gradient covariance of the
    baseline and layer-norm runs of the games with the largest and smallest improvement (the
    paper's bottom row: Freeway and Kangaroo).
    """
    table = atari_table(frame, last_n=last_n)
    if table.empty:
        raise MissingData(f"needs atari runs with {N.GAME} and eval/human_normalized_score for both "
                          f"interventions={N.NO_INTERVENTION} and {N.LAYER_NORM} on a game")
    frame = select(frame, N.ENV, N.ENV_ATARI)
    runs = with_config(pd.DataFrame({"run_dir": sorted(frame["run_dir"].unique())}), frame, [N.GAME, N.INTERVENTIONS])
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    # gradient covariance of the games with the largest and smallest improvement, when stored
    cov = []
    games = list(dict.fromkeys([table["game"].iloc[-1], table["game"].iloc[0]]))
    for game in games:
        for interv in (N.NO_INTERVENTION, N.LAYER_NORM):
            sel = runs[(runs[N.GAME] == game) & (runs[N.INTERVENTIONS] == interv)]
            for r in sel["run_dir"]:
                steps = steps_with_arrays(r, [N.GRADCOV_MATRIX])
                if steps:
                    cov.append((game, interv, r, steps[-1]))
                    break
    n = len(table)
    fig = _figure(max(6.0, 0.28 * n + 2), 3.8 + (3.0 if cov else 0))
    if cov:
        top, bottom = fig.subfigures(2, 1, height_ratios=[3.8, 3.0])
    else:
        top, bottom = fig, None
    ax = top.subplots()
    colors = ["tab:green" if v >= 0 else "tab:red" for v in table["improvement_pct"]]
    ax.bar(range(n), table["improvement_pct"], color=colors)
    ax.set_xticks(range(n), table["game"], rotation=90 if n > 8 else 30, fontsize="small" if n < 30 else "x-small")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("human-normalised improvement (%)")
    ax.set_title("layer norm over baseline")
    if table["improvement_pct"].abs().max() > 1000:
        ax.set_yscale("symlog", linthresh=100)
    notes = [f"A run's score is the mean of its last {last_n} human-normalised evaluation scores."]
    if cov:
        axes = bottom.subplots(1, len(cov), squeeze=False)[0]
        im = None
        for a, (game, interv, r, step) in zip(axes, cov):
            mat = load_step_arrays(r, step, [N.GRADCOV_MATRIX])[N.GRADCOV_MATRIX]
            im = a.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            a.set_title(f"{game}: {interv}\nstep {step}", fontsize="small")
            a.set_xticks([])
            a.set_yticks([])
        bottom.colorbar(im, ax=list(axes), label="gradient covariance")
        notes.append("Gradient covariance from the first run (by directory) of each game and method.")
    return FigureResult(
        name="figure7_atari_layer_norm",
        title="Figure 7: layer normalisation in double DQN on Atari",
        caption="Human-normalised improvement (Wang et al., 2016) of adding layer normalisation "
        "over the baseline agent, per game, sorted.",
        figure=fig,
        tables={"games": table},
        notes=notes,
    )


# ------------------------------------------------------------------------------ registry

FIGURES: list[tuple[str, Callable[[pd.DataFrame], FigureResult]]] = [
    ("plasticity_over_training", plasticity_over_training),
    ("figure1_optimizer_instability", figure1_optimizer_instability),
    ("figure2_brownian", figure2_brownian),
    ("figure3_falsification", figure3_falsification),
    ("figure4_probe_curves", figure4_probe_curves),
    ("figure5_width", figure5_width),
    ("figure6_interventions", figure6_interventions),
    ("figure7_atari_layer_norm", figure7_atari_layer_norm),
]

__all__ = [
    "FIGURES",
    "FigureResult",
    "MissingData",
    "atari_table",
    "falsification_contrasts",
    "falsification_points",
    "falsification_table",
    "figure1_optimizer_instability",
    "figure2_brownian",
    "figure3_falsification",
    "figure4_probe_curves",
    "figure5_width",
    "figure6_interventions",
    "figure7_atari_layer_norm",
    "intervention_table",
    "optimizer_table",
    "pearson",
    "plasticity_loss",
    "plasticity_over_training",
    "plasticity_table",
    "probe_curves",
    "probe_loss_change",
    "process_table",
    "width_table",
]

from .intervals import figure_interval_estimates  # noqa: E402 (intervals imports FigureResult from here)

FIGURES.append(("interval_estimates", figure_interval_estimates))
