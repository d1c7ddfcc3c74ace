"""Probe loss and plasticity loss over training, per run and per group (section 3.1, eq. 5)."""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..data import (
    last_row,
    natural_key,
    series,
)
from ..plotting import (
    BAND_STD_SEEDS,
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    count_nonfinite,
    legend,
    local_groups,
    mean_std,
    new_figure,
    palette,
    panel_grid,
    plasticity_loss,
    plot_group_curves,
    wrap_label,
)


def plasticity_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group: runs, last pause reached, final probe loss and plasticity loss (mean, std over seeds).

    ``final_probe_loss`` is each run's probe loss at its last pause; ``plasticity_loss`` is each
    run's P(last pause) - P(first pause); both are then averaged over the group's finite values
    (``nonfinite`` counts the runs whose value is NaN or inf, e.g. diverged runs).
    """
    frame = frame if "group" in frame.columns else local_groups(frame)
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
        m, s = mean_std(f["value"])
        pm, ps = mean_std(p["value"])
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
                "nonfinite": max(count_nonfinite(f["value"]), count_nonfinite(p["value"])),
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
    frame = local_groups(frame[frame["phase"] == N.PROBE_LOSS[0]])
    loss = series(frame, N.PROBE_LOSS)
    plast = series(frame, N.PLASTICITY)
    if len(plast):
        plast["value"] = plast["value"] - plast.groupby("run_dir")["value"].transform("first")
    panels = [
        (s, t) for s, t in [(loss, "probe loss (mean over targets)"), (plast, "plasticity loss P(t) - P(t0)")] if len(s)
    ]
    ylabels = {
        "probe loss (mean over targets)": f"probe loss ({PROBE_LOSS_UNIT})",
        "plasticity loss P(t) - P(t0)": f"P(t) - P(t0) ({PROBE_LOSS_UNIT})",
    }
    if not panels:
        raise MissingData("no probe metrics (probe/probe_loss, probe/plasticity)")
    group_of = frame.groupby("run_dir")["group"].first()
    runs = set().union(*[set(s["run_dir"]) for s, _ in panels])
    groups = sorted(set(group_of[group_of.index.isin(runs)]), key=natural_key)
    notes = []
    if len(groups) <= max_lines:
        colors = dict(zip(groups, palette(len(groups))))
        long_labels = max(len(g) for g in groups) > 40
        fig = new_figure(4.8 * len(panels) + (3.0 if long_labels else 0), 3.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (s, title) in zip(axes, panels):
            s = s.assign(group=s["run_dir"].map(group_of))
            for g in groups:
                sg = s[s["group"] == g]
                if len(sg):
                    plot_group_curves(ax, sg, colors[g], wrap_label(g, 45) if long_labels else g)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabels[title])
            ax.set_title(title)
            if "plasticity loss" in title:
                ax.axhline(0, color="grey", lw=0.8, ls="--")
        if long_labels:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside right upper", fontsize="x-small", frameon=False)
        else:
            legend(axes[0], len(groups))
    else:
        s, title = panels[-1]
        s = s.assign(group=s["run_dir"].map(group_of))
        shown = [g for g in groups if (s["group"] == g).any()]
        if len(shown) > max_panels:
            notes.append(
                f"{len(shown) - max_panels} of {len(shown)} groups not drawn (max_panels={max_panels}); "
                "all are in the table."
            )
            shown = shown[:max_panels]
        fig, axes = panel_grid(len(shown), 5, (3.2, 2.5), (0, 0.4), sharex=True, sharey=True)
        for ax, g in zip(axes, shown):
            plot_group_curves(ax, s[s["group"] == g], "tab:blue", g)
            ax.set_title(wrap_label(g, 38), fontsize="x-small")
            ax.tick_params(labelsize="x-small")
            if "plasticity loss" in title:
                ax.axhline(0, color="grey", lw=0.8, ls="--")
        fig.suptitle(f"{title} against training step, one panel per group")
        fig.supxlabel("training step", fontsize="small")
        fig.supylabel(ylabels[title], fontsize="small")
    return FigureResult(
        name="plasticity_over_training",
        title="Probe loss and plasticity loss over training",
        caption="Per group (runs with equal config but the seed): mean over seeds (bold), "
        "+-1 std band, single runs thin. Plasticity loss is P(t) - P(t0), negative when the "
        "network lost plasticity (eq. 5).",
        figure=fig,
        tables={"groups": plasticity_table(frame)},
        notes=notes,
        bands=BAND_STD_SEEDS,
        runs=sorted(runs),
    )
