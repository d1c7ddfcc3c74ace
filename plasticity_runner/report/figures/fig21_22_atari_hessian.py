"""Figures 21 and 22, appendix B.3: the Hessian eigenvalue spectrum of Double DQN on Atari over
training, one seed per game ("we did not observe any obvious correlations between the spectrum of
the Hessian and the agent's performance")."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import names as N
from ..data import load_step_arrays, spread_steps
from ..plotting import FigureResult, MissingData, panel_grid, run_name, step_scale
from .fig2_brownian import DENSITY_FLOOR
from .fig19_20_atari_gradcov import atari_runs


def figure21_22_atari_hessian(frame: pd.DataFrame, max_curves: int = 10, max_panels: int = 12) -> FigureResult:
    """Figures 21 / 22: per game and intervention, the Hessian eigenvalue density
    (``hessian/density`` on ``hessian/grid``) of one run (the first by seed) at up to
    ``max_curves`` pauses, coloured by training step, log density axis.

    Needs ``env.name=atari`` runs that stored the curvature arrays. The table gives, per curve,
    the largest eigenvalue on the grid with density above ``DENSITY_FLOOR`` of the peak.
    """
    keys = [N.HESSIAN_DENSITY, N.HESSIAN_GRID]
    runs = atari_runs(frame, keys)
    if runs.empty:
        raise MissingData(f"no atari run stored {N.HESSIAN_DENSITY} and {N.HESSIAN_GRID}")
    notes = []
    if len(runs) > max_panels:
        notes.append(
            f"{len(runs) - max_panels} of {len(runs)} game / intervention panels not drawn (max_panels={max_panels})."
        )
    shown = runs.head(max_panels)
    scale = step_scale(set().union(*shown["steps"]))
    fig, axes = panel_grid(len(shown), 4, (3.6, 2.9), (1.2, 0.4))
    table = []
    for ax, (_, row) in zip(axes, shown.iterrows()):
        top = 0.0
        for step in spread_steps(row["steps"], max_curves):
            arr = load_step_arrays(row["run_dir"], step, keys)
            d, grid = np.asarray(arr[N.HESSIAN_DENSITY], float), np.asarray(arr[N.HESSIAN_GRID], float)
            peak = float(np.nanmax(d)) if d.size else 0.0
            top = max(top, peak)
            ax.plot(grid, np.maximum(d, 1e-300), color=scale.to_rgba(step), lw=1)
            support = grid[d > peak * DENSITY_FLOOR] if peak > 0 else grid[:0]
            table.append(
                {
                    "game": row["game"],
                    "intervention": row["intervention"],
                    "run": run_name(row["run_dir"]),
                    "step": step,
                    "max_eigenvalue_on_grid": float(support.max()) if support.size else math.nan,
                }
            )
        ax.set_yscale("log")
        if top > 0:
            ax.set_ylim(top * DENSITY_FLOOR, top * 2)
        ax.set_title(f"{row['game']}: {row['intervention']}", fontsize="small")
        ax.set_xlabel("eigenvalue (squared Q units per squared parameter unit)", fontsize="x-small")
        ax.set_ylabel("density (log)", fontsize="small")
        ax.tick_params(labelsize="x-small")
    fig.colorbar(scale, ax=list(axes), label="training step")
    return FigureResult(
        name="figure21_22_atari_hessian",
        title="Figures 21 / 22: Hessian spectrum over training on Atari",
        caption="Hessian eigenvalue density (stochastic Lanczos quadrature) of one seed per game "
        "and agent at checkpoints over training.",
        figure=fig,
        tables={"spectra": pd.DataFrame(table)},
        notes=notes,
        bands="one run per panel (the first by seed); no band",
        runs=sorted(shown["run_dir"]),
    )
