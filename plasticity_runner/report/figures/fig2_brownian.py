"""Figure 2: Hessian spectra and gradient covariances, gradient descent vs Brownian motion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...probes import curvature as _curvature
from ...probes import gradcov as _gradcov
from .. import names as N
from ..data import (
    load_step_arrays,
    natural_key,
    select,
    series,
    spread_steps,
    steps_with_arrays,
)
from ..plotting import (
    FigureResult,
    MissingData,
    draw_gradcov,
    legend,
    new_figure,
    plot_group_curves,
    run_name,
    step_scale,
)


def process_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 2 scalars: per process and metric, the mean over seeds at the first and last step."""
    frame = select(frame, N.ENV, N.ENV_BROWNIAN)
    rows = []
    for metric in N.PROCESS_METRICS:
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


# y axis of the scalar panels (names.PROCESS_METRICS' keys)
SCALAR_UNITS = {
    _curvature.HESSIAN_TOP_EIG: "λ1 (squared target units per squared parameter unit)",
    _gradcov.OFFDIAG_MEAN: "mean normalised gradient dot product (-1 to 1)",
    _gradcov.NEG_FRAC: "fraction of entries < 0",
}


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
    run_dirs = sorted(
        frame["run_dir"].unique(), key=lambda r: natural_key(f"{seeds[r] if seeds is not None else ''} {r}")
    )
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
    fig = new_figure(max(10.0, 2.6 * max_heatmaps), sum(h for _, h in rows))
    subfigs = fig.subfigures(len(rows), 1, height_ratios=[h for _, h in rows], squeeze=False)[:, 0]
    notes = []
    colors = dict(zip(N.PROCESSES, ["tab:red", "tab:blue"]))
    for sub, (kind, _) in zip(subfigs, rows):
        if kind == "density":
            procs = list(N.PROCESSES)
            axes = sub.subplots(1, len(procs), sharey=True, squeeze=False)[0]
            scale = step_scale(set().union(*dens_steps.values()))
            top = 0.0
            for ax, p in zip(axes, procs):
                for step in spread_steps(dens_steps.get(p, []), 12):
                    arr = load_step_arrays(dens_run, step, dens_keys[p])
                    d, grid = np.asarray(arr[dens_keys[p][0]], float), arr[dens_keys[p][1]]
                    top = max(top, float(np.nanmax(d)) if d.size else 0.0)
                    ax.plot(grid, np.maximum(d, 1e-300), color=scale.to_rgba(step), lw=1)
                ax.set_yscale("log")
                ax.set_xlabel(
                    "eigenvalue (squared regression-target units per squared parameter unit)", fontsize="small"
                )
                ax.set_title(f"Hessian spectrum density: {N.PROCESSES[p]}")
                if not dens_steps.get(p):
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
            axes[0].set_ylabel("density (per eigenvalue unit)")
            if top > 0:
                axes[0].set_ylim(top * DENSITY_FLOOR, top * 2)
            sub.colorbar(scale, ax=list(axes), label="training step")
            notes.append(f"Hessian densities from run {run_name(dens_run)}.")
        elif kind == "scalars":
            axes = sub.subplots(1, len(scalars), squeeze=False)[0]
            for ax, (m, label, by_proc) in zip(axes, scalars):
                for p, s in by_proc.items():
                    if len(s):
                        plot_group_curves(ax, s, colors[p], N.PROCESSES[p])
                ax.set_title(label, fontsize="medium")
                ax.set_xlabel("training step")
                ax.set_ylabel(SCALAR_UNITS.get(m, "value"), fontsize="small")
            legend(axes[0], 2)
        else:
            p = kind[1]
            steps = spread_steps(cov_steps[p], max_heatmaps)
            axes = sub.subplots(1, max_heatmaps, squeeze=False)[0]
            im = None
            for ax, step in zip(axes, steps):
                mat = load_step_arrays(cov_run, step, cov_keys[p])[cov_keys[p][0]]
                im = draw_gradcov(ax, mat, f"step {step}")
            for ax in axes[len(steps) :]:
                ax.set_axis_off()
            axes[0].set_ylabel(N.PROCESSES[p])
            sub.suptitle(f"gradient covariance C_k: {N.PROCESSES[p]}", fontsize="medium")
            if im is not None:
                sub.colorbar(im, ax=list(axes), label="normalised gradient dot product")
    if cov_run:
        notes.append(f"Gradient covariance matrices from run {run_name(cov_run)}.")
    return FigureResult(
        name="figure2_brownian",
        title="Figure 2: gradient descent vs Brownian motion",
        caption="Evolution of the Hessian spectrum and gradient covariance of a probe regression "
        "loss under gradient descent and under a random walk with the same step norms.",
        figure=fig,
        tables={"scalars": process_table(frame)},
        notes=notes,
        bands="scalars: mean over seeds (bold) ±1 std over seeds (sample std), n = runs per curve in the legend; "
        "densities and heatmaps: one run (named below the figure)",
        runs=run_dirs,
    )
