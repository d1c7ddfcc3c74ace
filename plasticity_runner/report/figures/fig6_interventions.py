"""Figures 6 and 8/9: change in probe loss per architecture and intervention."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize

from ... import registry
from .. import names as N
from ..data import (
    is_group_key,
    label_keys,
    select,
)
from ..plotting import (
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    count_nonfinite,
    mean_std,
    new_figure,
    order_values,
    pause_span,
    probe_loss_change,
    probe_loss_runs,
)

# the architectures' columns: their registered order (``order=`` of each body's registration in nets/)
ARCH_ORDER = tuple(registry.parts("architecture"))
FIG6_FACET_KEY = N.DATASET


def intervention_table(frame: pd.DataFrame, facet: str | None = FIG6_FACET_KEY) -> pd.DataFrame:
    """Figure 6 / 8 numbers: per facet (dataset), architecture and intervention, the change in
    probe loss between each run's first and last pause, averaged over runs (mean, std, runs)."""
    if N.ARCH not in frame.columns:
        return pd.DataFrame()
    ch = probe_loss_runs(frame, facet)
    if ch.empty:
        return pd.DataFrame()
    rows = []
    for (f, a, i), g in ch.groupby(["facet", N.ARCH, N.INTERVENTIONS], sort=True):
        m, s = mean_std(g["value"])
        rows.append(
            {
                "facet": f,
                "architecture": a,
                "intervention": i,
                "runs": len(g),
                "probe_loss_change_mean": m,
                "probe_loss_change_std": s,
                "nonfinite": count_nonfinite(g["value"]),
                **pause_span(g),
            }
        )
    return pd.DataFrame(rows)


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
    archs = order_values(table["architecture"].astype(str), ARCH_ORDER)
    intervs = order_values(table["intervention"].astype(str), (N.NO_INTERVENTION,))
    vals = table["probe_loss_change_mean"].to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    norm = Normalize(vmin, vmax)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # dark = low = less plasticity loss
    fig = new_figure(max(4.5, 0.9 * len(intervs) + 2.5) * len(facets), 0.55 * len(archs) + 2.6)
    axes = fig.subplots(1, len(facets), squeeze=False)[0]
    im = None
    for ax, f in zip(axes, facets):
        t = table[table["facet"] == f]
        grid = np.full((len(archs), len(intervs)), np.nan)
        count = np.zeros((len(archs), len(intervs)), dtype=int)
        for _, row in t.iterrows():
            cell = archs.index(str(row["architecture"])), intervs.index(str(row["intervention"]))
            grid[cell] = row["probe_loss_change_mean"]
            count[cell] = row["runs"] - row["nonfinite"]
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        for i in range(len(archs)):
            for j in range(len(intervs)):
                v = grid[i, j]
                text = "-" if not np.isfinite(v) else f"{v:.3g}\nn={count[i, j]}"
                color = "black" if not np.isfinite(v) or norm(v) > 0.6 else "white"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
        ax.set_xticks(range(len(intervs)), intervs, rotation=40, ha="right")
        ax.set_yticks(range(len(archs)), archs)
        ax.set_xlabel("intervention")
        ax.set_ylabel("architecture")
        ax.set_title(f if facet else "all runs")
    fig.colorbar(im, ax=list(axes), label=f"change in probe loss,\nlast - first pause ({PROBE_LOSS_UNIT})")
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
        bands="cell: mean over runs of the change, n = finite runs per cell (written under the value); "
        "spread in the table (std) and in the interval estimates",
        runs=sorted(used["run_dir"].unique()),
    )
