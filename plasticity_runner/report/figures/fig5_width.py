"""Figure 5: plasticity loss against network width, one line per target-update period."""

from __future__ import annotations

import pandas as pd

from ...nets.scaling import scaled
from .. import names as N
from ..data import (
    group_label,
    is_group_key,
    label_keys,
    natural_key,
    select,
)
from ..plotting import (
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    count_nonfinite,
    mean_std,
    new_figure,
    palette,
    plasticity_loss,
    wrap_label,
)

FIG5_PANEL_KEYS = (N.ARCH, N.DATASET, N.TASK)


def _effective_width(row: pd.Series) -> float:
    """The x of figure 5: the body's width in units when it has ``architecture.width`` (MLP, ResNet;
    times ``architecture.width_multiplier``, as ``nets.scaling.scaled`` builds it), else the multiplier."""
    mult = row.get(N.WIDTH_MULTIPLIER)
    mult = 1.0 if mult is None or pd.isna(mult) else float(mult)
    base = row.get(N.WIDTH)
    if base is None or pd.isna(base):
        return mult
    return float(scaled(int(float(base)), mult))


def width_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 5 numbers: per panel (architecture/dataset/task), line and width, the plasticity loss
    P(last pause) - P(first pause) averaged over runs (mean, std, runs).

    The width is the body's width in units for bodies with ``architecture.width`` (times
    ``architecture.width_multiplier`` when set), and the multiplier itself for the others (the CNN:
    channels and units scale together); ``width_axis`` says which. A line is a target-update
    period, or more generally the runs equal in every config key but the width, the multiplier, the
    panel keys and the seed (so runs of another sweep at one width, say with an intervention, form
    a line of their own). Lines with fewer than two widths are dropped.
    """
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    width_keys = [k for k in (N.WIDTH, N.WIDTH_MULTIPLIER) if k in frame.columns]
    if not width_keys:
        return pd.DataFrame()
    frame = frame[frame[width_keys].notna().any(axis=1)]
    pl = plasticity_loss(frame)
    if pl.empty:
        return pd.DataFrame()
    frame = frame[frame["run_dir"].isin(pl["run_dir"])]
    configs = frame.groupby("run_dir", sort=True)[[c for c in frame.columns if is_group_key(c)]].first()
    panel_keys = label_keys(configs, [k for k in FIG5_PANEL_KEYS if k in configs.columns], first=FIG5_PANEL_KEYS)
    others = [k for k in configs.columns if k not in panel_keys and k not in width_keys]
    # the lines: runs equal in everything but the width (the period first, as in the paper's legend)
    line_keys = [
        k
        for k in label_keys(configs, [*panel_keys, *others], first=(*panel_keys, N.TARGET_UPDATE))
        if k not in panel_keys
    ]
    pl = pl.merge(configs, left_on="run_dir", right_index=True)
    pl["panel"] = pl.apply(lambda r: ", ".join(str(r[k]) for k in panel_keys) or "all runs", axis=1)
    pl["line"] = pl.apply(lambda r: group_label(r, line_keys) if line_keys else "all runs", axis=1)
    pl["target_update_steps"] = (
        pl[N.TARGET_UPDATE].map(lambda v: None if pd.isna(v) else int(v)) if N.TARGET_UPDATE in pl.columns else None
    )
    pl["width"] = pl.apply(_effective_width, axis=1)
    has_units = pl[N.WIDTH].notna() if N.WIDTH in pl.columns else pd.Series(False, index=pl.index)
    pl["width_axis"] = has_units.map({True: "units", False: "multiplier"})
    if (pl["width"] == pl["width"].round()).all():
        pl["width"] = pl["width"].astype(int)
    rows = []
    for (panel, line, width), g in pl.groupby(["panel", "line", "width"], sort=True):
        m, s = mean_std(g["value"])
        rows.append(
            {
                "panel": panel,
                "line": line,
                "target_update_steps": g["target_update_steps"].iloc[0],
                "width": width,
                "width_axis": g["width_axis"].iloc[0],
                "runs": len(g),
                "plasticity_loss_mean": m,
                "plasticity_loss_std": s,
                "nonfinite": count_nonfinite(g["value"]),
            }
        )
    table = pd.DataFrame(rows)
    widths = table.groupby(["panel", "line"])["width"].transform("nunique")
    out = table[widths >= 2].reset_index(drop=True)
    kept = pl.merge(out[["panel", "line", "width"]], on=["panel", "line", "width"])
    out.attrs["runs"] = sorted(kept["run_dir"].unique())
    return out


def figure5_width(frame: pd.DataFrame) -> FigureResult:
    """Figure 5: plasticity loss against network width, one line per target-update period.

    Needs ``env.name=classification`` runs at two or more widths (``architecture.width`` and/or
    ``architecture.width_multiplier``: the MLP's units, the CNN's multiplier, see ``width_table``) and
    ``probe/plasticity`` at two or more pauses; ``agent.target_update_steps`` separates the lines
    (so does any other config key that varies, see ``width_table``). Plasticity loss is
    P(last pause) - P(first pause) per run (eq. 5), mean +-1 std over runs. One panel per
    architecture / dataset / task combination with a width sweep.
    """
    table = width_table(frame)
    if table.empty:
        raise MissingData(
            f"needs classification runs at two or more {N.WIDTH} or {N.WIDTH_MULTIPLIER} values "
            "with probe/plasticity at two pauses"
        )
    panels = sorted(table["panel"].unique(), key=natural_key)
    fig = new_figure(4.2 * len(panels) + 1.5, 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    lines = sorted(table["line"].unique(), key=natural_key)
    colors = dict(zip(lines, palette(len(lines))))
    only_period = set(table["line"].map(lambda v: v.startswith(N.TARGET_UPDATE + "=") and "," not in v)) == {True}
    for ax, panel in zip(axes, panels):
        t = table[table["panel"] == panel]
        for line in lines:
            tl = t[t["line"] == line].sort_values("width")
            if tl.empty:
                continue
            label = f"target update {tl['target_update_steps'].iloc[0]}" if only_period else wrap_label(line, 40)
            label += f" (n={int(tl['runs'].min())}" + (
                f"-{int(tl['runs'].max())})" if tl["runs"].nunique() > 1 else ")"
            )
            ax.errorbar(
                tl["width"],
                tl["plasticity_loss_mean"],
                yerr=tl["plasticity_loss_std"].fillna(0),
                color=colors[line],
                marker="o",
                capsize=3,
                label=label,
            )
        widths = sorted(t["width"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [f"{w:g}" for w in widths])
        ax.minorticks_off()
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("width (units)" if (t["width_axis"] == "units").all() else "width multiplier")
        ax.set_title(panel, fontsize="small")
    axes[0].set_ylabel(f"plasticity loss P(T) - P(0) ({PROBE_LOSS_UNIT})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="x-small", frameon=False)
    return FigureResult(
        name="figure5_width",
        title="Figure 5: plasticity loss against width",
        caption="Plasticity loss (P at the last pause minus P at the first; below 0 means "
        "plasticity was lost) for networks of increasing width, per target-network update period.",
        figure=fig,
        tables={"width": table},
        bands="point: mean over runs; whisker: ±1 std over runs (sample std); n = runs per point, in the legend",
        runs=table.attrs.get("runs"),
    )
