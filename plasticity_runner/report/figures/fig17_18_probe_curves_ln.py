"""Figures 17 and 18, appendix B.2.2: probe learning curves of networks trained with and without
layer norm ("markedly different trajectories ... when tasked with a new optimization objective")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import names as N
from ..data import assign_groups, natural_key, select
from ..plotting import PROBE_LOSS_UNIT, FigureResult, MissingData, interventions_of, new_figure, step_scale, wrap_label
from .fig4_probe_curves import check_curves, probe_curves

FIG17_COLUMNS = (N.NO_INTERVENTION, N.LAYER_NORM)


def probe_curves_by_layer_norm(frame: pd.DataFrame, max_pauses: int = 6) -> pd.DataFrame:
    """``probe_curves`` of the classification runs whose interventions are ``none`` or
    ``layer_norm``, with ``row`` (the runs' other config keys that vary: architecture, dataset,
    task, ...) and ``column`` (the intervention) added."""
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    interv = interventions_of(frame)
    frame = frame[frame["run_dir"].map(interv).isin(FIG17_COLUMNS)]
    if frame.empty:
        return pd.DataFrame()
    rows_of = (
        assign_groups(frame.drop(columns=[N.INTERVENTIONS], errors="ignore"))[0].groupby("run_dir")["group"].first()
    )
    out, drawn = [], []
    for (row, col), runs in rows_of.groupby([rows_of, rows_of.index.map(interv)]):
        curves = probe_curves(frame[frame["run_dir"].isin(runs.index)], max_pauses=max_pauses)
        if len(curves):
            out.append(curves.assign(row=row, column=col))
            drawn += curves.attrs["runs"]
    result = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    result.attrs["runs"] = sorted(drawn)
    return result


def figure17_18_probe_curves_ln(frame: pd.DataFrame, max_pauses: int = 6, max_rows: int = 6) -> FigureResult:
    """Figures 17 / 18: probe learning curves from checkpoints, without and with layer norm.

    Needs arrays ``probe/curve_loss`` and ``probe/curve_steps`` of classification runs with
    ``interventions`` ``none`` and/or ``layer_norm``. Columns: without / with layer norm; rows: the
    other config keys that vary (architecture, dataset, task; at most ``max_rows``). In each
    panel one curve per checkpoint (at most ``max_pauses``, evenly spread), the mean over targets
    and seeds, coloured by the checkpoint's training step, as in figure 4.
    """
    curves = probe_curves_by_layer_norm(frame, max_pauses=max_pauses)
    if curves.empty:
        raise MissingData(
            f"no classification run with interventions none or layer_norm storing "
            f"{N.PROBE_CURVE_LOSS} and {N.PROBE_CURVE_STEPS}"
        )
    check_curves(curves)
    rows = sorted(curves["row"].unique(), key=natural_key)
    notes = []
    if len(rows) > max_rows:
        notes.append(
            f"{len(rows) - max_rows} of {len(rows)} rows not drawn (max_rows={max_rows}); all are in the table."
        )
        rows = rows[:max_rows]
    cols = [c for c in FIG17_COLUMNS if (curves["column"] == c).any()]
    fig = new_figure(4.0 * len(cols) + 1.2, 3.0 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharey="row")
    scale = step_scale(curves["step"])
    positive = all((np.asarray(c) > 0).all() for c in curves["curve"])
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            sel = curves[(curves["row"] == r) & (curves["column"] == c)]
            for _, row in sel.iterrows():
                ax.plot(row["curve_steps"], row["curve"], color=scale.to_rgba(row["step"]), lw=1.3)
            if sel.empty:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", color="grey")
            elif positive:
                ax.set_yscale("log")
            label = "with layer norm" if c == N.LAYER_NORM else "without layer norm"
            ax.set_title(wrap_label(f"{r}, {label}", 45), fontsize="x-small")
            ax.set_xlabel("probe optimisation step")
        axes[i, 0].set_ylabel(f"probe loss ({PROBE_LOSS_UNIT})")
    fig.colorbar(scale, ax=list(axes.ravel()), label="training step of checkpoint")
    table = curves.drop(columns=["curve_steps", "curve", "std", "group"])
    return FigureResult(
        name="figure17_18_probe_curves_ln",
        title="Figures 17 / 18: probe learning curves with and without layer norm",
        caption="Loss on new random regression targets while training from checkpoints at different "
        "training steps (mean over targets and seeds), networks trained without (left) and with "
        "(right) layer normalisation.",
        figure=fig,
        tables={"curves": table[["row", "column", *[k for k in table.columns if k not in ("row", "column")]]]},
        notes=notes,
        bands="curves: mean over targets and seeds (n = targets x seeds per curve, column 'targets' of the table); "
        "no band",
        runs=curves.attrs["runs"],
    )
