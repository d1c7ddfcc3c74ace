"""Figures 10 (CIFAR-10) and 11 (MNIST), appendix B.1: initial and final probe loss per intervention.

"Some interventions improve trainability even from initialization ... in addition to reducing the
final probe task loss": per architecture and intervention, the probe loss at a run's first pause
(the network at initialisation, step 0) next to the one at its last pause.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import names as N
from ..plotting import (
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    count_nonfinite,
    mean_std,
    new_figure,
    order_values,
    pause_span,
    probe_loss_runs,
)
from .fig6_interventions import ARCH_ORDER, FIG6_FACET_KEY


def initial_final_table(frame: pd.DataFrame, facet: str | None = FIG6_FACET_KEY) -> pd.DataFrame:
    """Per facet (dataset), architecture and intervention: runs, the probe loss at each run's first
    pause (``initial``) and at its last (``final``), mean and std over runs (finite values), and
    the steps of those pauses. Runs probed at fewer than two pauses are left out."""
    fl = probe_loss_runs(frame, facet)
    if fl.empty:
        return pd.DataFrame()
    fl["architecture"] = fl[N.ARCH].astype(str)
    rows = []
    for (f, a, i), g in fl.groupby(["facet", "architecture", N.INTERVENTIONS], sort=True):
        im, is_ = mean_std(g["first"])
        fm, fs = mean_std(g["last"])
        rows.append(
            {
                "facet": f,
                "architecture": a,
                "intervention": i,
                "runs": len(g),
                "initial_mean": im,
                "initial_std": is_,
                "final_mean": fm,
                "final_std": fs,
                **pause_span(g),
                "nonfinite": max(count_nonfinite(g["first"]), count_nonfinite(g["last"])),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["runs"] = sorted(fl["run_dir"].unique())
    return out


def figure10_11_probe_loss(frame: pd.DataFrame, facet: str | None = FIG6_FACET_KEY) -> FigureResult:
    """Figures 10 / 11: initial and final probe loss per architecture and intervention.

    Needs classification runs with ``probe/probe_loss`` at two or more pauses. One row of panels
    per ``facet`` value (the dataset: figure 10 is CIFAR-10, 11 MNIST), one panel per
    architecture; in each, a pair of points per intervention: the probe loss at the first pause
    (open) and at the last (filled), mean over runs with +-1 std whiskers. Points, not bars: the
    axis is logarithmic when every mean is positive, and a bar on a log axis has no zero to start
    from, so its height would show the ratio to an arbitrary cut-off.
    """
    table = initial_final_table(frame, facet)
    if table.empty:
        raise MissingData(f"needs classification runs with {'/'.join(N.PROBE_LOSS)} at two or more pauses")
    facets = sorted(table["facet"].unique())
    archs = order_values(table["architecture"], ARCH_ORDER)
    intervs = order_values(table["intervention"], (N.NO_INTERVENTION,))
    fig = new_figure(max(3.5, 0.45 * len(intervs) + 1.2) * len(archs) + 1.0, 3.4 * len(facets) + 0.8)
    axes = fig.subplots(len(facets), len(archs), squeeze=False, sharey=True)
    positive = bool((table[["initial_mean", "final_mean"]].to_numpy(dtype=float) > 0).all())
    x = np.arange(len(intervs))
    for i, f in enumerate(facets):
        for j, a in enumerate(archs):
            ax = axes[i, j]
            t = table[(table["facet"] == f) & (table["architecture"] == a)].set_index("intervention").reindex(intervs)
            for k, (col, label, face) in enumerate(
                (("initial", "first pause (initial)", "white"), ("final", "last pause (final)", "tab:blue"))
            ):
                ax.errorbar(
                    x + (k - 0.5) * 0.3,
                    t[f"{col}_mean"],
                    yerr=t[f"{col}_std"].fillna(0),
                    fmt="o",
                    color="tab:blue",
                    mfc=face,
                    capsize=2,
                    label=label,
                    lw=0.8,
                    ms=5,
                )
            n = t["runs"].fillna(0).astype(int)
            intervs_n = [f"{name} (n={runs})" for name, runs in zip(intervs, n)]
            ax.set_xticks(x, intervs_n, rotation=60, ha="right", fontsize="x-small")
            ax.set_xlim(-0.6, len(intervs) - 0.4)
            if i == len(facets) - 1:
                ax.set_xlabel("intervention")
            ax.set_title(f"{f}, {a}" if facet else a, fontsize="small")
            if positive:
                ax.set_yscale("log")
        axes[i, 0].set_ylabel(f"probe loss ({PROBE_LOSS_UNIT})" + (", log scale" if positive else ""))
    axes[0, 0].legend(fontsize="x-small", frameon=False)
    return FigureResult(
        name="figure10_11_probe_loss",
        title="Figures 10 / 11: initial and final probe loss per intervention",
        caption="Loss on the probe targets at the first pause (the network at initialisation) and at "
        "the last pause of training, per architecture and intervention; mean over runs, +-1 std.",
        figure=fig,
        tables={"cells": table},
        bands="point: mean over runs; whisker: ±1 std over runs (sample std); n = runs, under each intervention",
        runs=table.attrs["runs"],
    )
