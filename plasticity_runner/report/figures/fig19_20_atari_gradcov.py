"""Figures 19 and 20, appendix B.3: the gradient covariance of Double DQN on Atari over training,
beside its learning curve ("when agents fail to learn, they tend to exhibit highly degenerate
gradient structure")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import names as N
from ..data import load_step_arrays, natural_key, select, series, spread_steps, steps_with_arrays
from ..plotting import (
    FigureResult,
    MissingData,
    draw_gradcov,
    interventions_of,
    new_figure,
    plot_group_curves,
    run_name,
)


def atari_runs(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (game, intervention) of the Atari runs: the first run (by seed, then directory) that
    stored the arrays ``keys``, its steps with them, and all the runs of the pair."""
    frame = select(frame, N.ENV, N.ENV_ATARI)
    if frame.empty:
        return pd.DataFrame()
    interv = interventions_of(frame)
    cfg = frame.groupby("run_dir", sort=True)[[k for k in (N.GAME, N.SEED) if k in frame.columns]].first()
    rows = []
    game_of = cfg[N.GAME].astype(str) if N.GAME in cfg.columns else pd.Series("atari", index=cfg.index)
    for (game, iv), runs in cfg.groupby([game_of, cfg.index.map(interv)], sort=True):
        order = sorted(runs.index, key=lambda r: natural_key(f"{runs.loc[r].get(N.SEED, '')} {r}"))
        for r in order:
            steps = steps_with_arrays(r, keys)
            if steps:
                rows.append({"game": game, "intervention": iv, "run_dir": r, "steps": steps, "runs": order})
                break
    return pd.DataFrame(rows)


def offdiag_mean(matrix: np.ndarray) -> float:
    """Mean of the off-diagonal entries of a square matrix (NaN for 1x1)."""
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    return float((m.sum() - np.trace(m)) / (n * n - n)) if n > 1 else float("nan")


def figure19_20_atari_gradcov(frame: pd.DataFrame, max_heatmaps: int = 5, max_rows: int = 6) -> FigureResult:
    """Figures 19 / 20: per game and intervention, the learning curve and the gradient covariance
    ``gradcov/matrix`` (k-means ordered) at up to ``max_heatmaps`` pauses spread over training.

    Needs ``env.name=atari`` runs that stored ``gradcov/matrix``. One row per (game,
    intervention) (at most ``max_rows``): first panel ``eval/episode_return`` over training (mean
    over the pair's seeds, +-1 std, runs thin; empty when not logged), then the heatmaps of one
    run (the first by seed), coloured -1 (blue) to 1 (red). The table has, per heatmap, the mean
    off-diagonal entry: near 1 is the degenerate, colinear structure of a stalled agent.
    """
    runs = atari_runs(frame, [N.GRADCOV_MATRIX])
    if runs.empty:
        raise MissingData(f"no atari run stored {N.GRADCOV_MATRIX}")
    notes = []
    if len(runs) > max_rows:
        notes.append(f"{len(runs) - max_rows} of {len(runs)} game / intervention rows not drawn (max_rows={max_rows}).")
    shown = runs.head(max_rows)
    returns = series(select(frame, N.ENV, N.ENV_ATARI), N.EPISODE_RETURN)
    n_heat = min(max_heatmaps, max(len(s) for s in shown["steps"]))
    fig = new_figure(2.4 * (n_heat + 1) + 1.2, 2.4 * len(shown) + 0.4)
    axes = fig.subplots(len(shown), n_heat + 1, squeeze=False)
    table, im = [], None
    for i, (_, row) in enumerate(shown.iterrows()):
        label = f"{row['game']}: {row['intervention']}"
        ax = axes[i, 0]
        r = returns[returns["run_dir"].isin(row["runs"])]
        if len(r):
            plot_group_curves(ax, r, "tab:blue", label)
        ax.set_title(label, fontsize="small")
        ax.set_ylabel("episode return (game score)", fontsize="small")
        ax.tick_params(labelsize="x-small")
        steps = spread_steps(row["steps"], n_heat)
        for j, step in enumerate(steps):
            mat = load_step_arrays(row["run_dir"], step, [N.GRADCOV_MATRIX])[N.GRADCOV_MATRIX]
            im = draw_gradcov(axes[i, j + 1], mat, f"step {step}", fontsize="x-small")
            table.append(
                {
                    "game": row["game"],
                    "intervention": row["intervention"],
                    "run": run_name(row["run_dir"]),
                    "step": step,
                    "k": mat.shape[0],
                    "offdiag_mean": offdiag_mean(mat),
                }
            )
        for a in axes[i, len(steps) + 1 :]:
            a.set_axis_off()
    axes[-1, 0].set_xlabel("training step", fontsize="small")
    if im is not None:
        fig.colorbar(im, ax=list(axes[:, 1:].ravel()), label="normalised gradient dot product", shrink=0.8)
    return FigureResult(
        name="figure19_20_atari_gradcov",
        title="Figures 19 / 20: gradient covariance against performance on Atari",
        caption="Per game and agent: the learning curve and the gradient covariance C_k of one seed "
        "over training. Large off-diagonal values are colinear, interfering gradients.",
        figure=fig,
        tables={"heatmaps": pd.DataFrame(table)},
        notes=notes,
        bands="learning curves: mean over seeds (bold) ±1 std over seeds, n in each panel's legend; heatmaps: one run",
        runs=sorted({r for rs in shown["runs"] for r in rs}),
    )
