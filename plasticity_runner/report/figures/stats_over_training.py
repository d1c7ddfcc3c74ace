"""Every per-pause network statistic and training dynamic over training, per group.

The statistics are found by name in the sweep, not listed here: any metric the pause writes in
phase ``stats`` (``probes/statistics.py``: ranks, dead, active and duplicate units, feature and
weight norms) or ``dynamics`` (``probes/dynamics.py``: gradient norm, weight change since
initialisation, greedy-action change between pauses) gets a panel, and so do the log-point
training dynamics of phase ``train`` named in ``names.FIELD_METRICS`` (windowed gradient norm,
relative parameter change).
Panels of phases other than ``stats`` are titled ``<phase>: <metric>``. A metric named ``<family>/<layer>`` is per layer: when the family
has no aggregate of its own (a metric named ``<family>``), its panel shows the mean over layers.
"""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..data import natural_key, series
from ..plotting import (
    BAND_STD_SEEDS,
    FigureResult,
    MissingData,
    curve_summary,
    legend,
    local_groups,
    palette,
    panel_grid,
    plot_group_curves,
    wrap_label,
)

# the phases drawn whole, and the training-phase metrics drawn by name (aggregates only)
PAUSE_PHASES = (N.STATS_PHASE, N.DYNAMICS_PHASE)
TRAIN_DYNAMICS = tuple(m for phase, m in N.FIELD_METRICS.values() if phase == "train")


def stats_metrics(frame: pd.DataFrame, phase: str = N.STATS_PHASE) -> tuple[list[str], dict[str, list[str]]]:
    """The metrics of ``phase`` in the sweep: the aggregates (names without ``/``), and per family of
    per-layer metrics without an aggregate of the same name, its member names."""
    names = sorted(frame.loc[frame["phase"] == phase, "metric"].unique(), key=natural_key)
    aggregates = [m for m in names if "/" not in m]
    families: dict[str, list[str]] = {}
    for m in names:
        if "/" in m:
            family = m.split("/", 1)[0]
            if family not in aggregates:
                families.setdefault(family, []).append(m)
    return aggregates, families


def stats_series(frame: pd.DataFrame) -> pd.DataFrame:
    """The statistics as one long series: ``statistic, run_dir, step, value, group`` (a family of
    per-layer metrics averaged over its layers per run and step, named ``<family>/* (layer mean)``)."""
    frame = local_groups(frame)
    group_of = frame.groupby("run_dir")["group"].first()
    parts = []
    for phase in PAUSE_PHASES:
        label = "" if phase == N.STATS_PHASE else f"{phase}: "
        aggregates, families = stats_metrics(frame, phase)
        for m in aggregates:
            s = series(frame, (phase, m))
            parts.append(s[["run_dir", "step", "value"]].assign(statistic=label + m))
        for family, members in families.items():
            s = pd.concat([series(frame, (phase, m))[["run_dir", "step", "value"]] for m in members])
            s = s.groupby(["run_dir", "step"], as_index=False)["value"].mean()
            parts.append(s.assign(statistic=f"{label}{family}/* (layer mean)"))
    train = set(frame.loc[frame["phase"] == "train", "metric"].unique())
    for m in TRAIN_DYNAMICS:
        if m in train:
            s = series(frame, ("train", m))
            parts.append(s[["run_dir", "step", "value"]].assign(statistic=f"train: {m}"))
    if not parts:
        return pd.DataFrame(columns=["statistic", "run_dir", "step", "value", "group"])
    out = pd.concat(parts, ignore_index=True)
    out["group"] = out["run_dir"].map(group_of)
    return out[["statistic", "run_dir", "step", "value", "group"]]


def stats_over_training(frame: pd.DataFrame, max_lines: int = 8, max_panels: int = 40) -> FigureResult:
    """Each ``stats`` metric of the sweep against training step, one panel per metric, one line per
    group (runs equal in config but the seed): mean over seeds bold, +-1 std band, runs thin.

    Needs any metric in phase ``stats`` or ``dynamics``. At most ``max_lines`` groups (the first in natural order)
    and ``max_panels`` metrics are drawn; the table has every group and metric (first and last
    value, mean and std over seeds).
    """
    s = stats_series(frame)
    if s.empty:
        raise MissingData(f"no metric in phase {N.STATS_PHASE} or {N.DYNAMICS_PHASE}")
    stats = list(dict.fromkeys(s["statistic"]))
    groups = sorted(s["group"].unique(), key=natural_key)
    notes = []
    if len(groups) > max_lines:
        notes.append(
            f"{len(groups) - max_lines} of {len(groups)} groups not drawn (max_lines={max_lines}); all are in the table."
        )
    if len(stats) > max_panels:
        notes.append(
            f"{len(stats) - max_panels} of {len(stats)} statistics not drawn (max_panels={max_panels}); "
            "all are in the table."
        )
    drawn_groups, drawn_stats = groups[:max_lines], stats[:max_panels]
    colors = dict(zip(drawn_groups, palette(len(drawn_groups))))
    ncols = min(4, len(drawn_stats))
    fig, axes = panel_grid(len(drawn_stats), ncols, (3.4, 2.6), (2.0, 0.5), sharex=True)
    for ax, stat in zip(axes, drawn_stats):
        ss = s[s["statistic"] == stat]
        for g in drawn_groups:
            sg = ss[ss["group"] == g]
            if len(sg):
                plot_group_curves(ax, sg, colors[g], g)
        ax.set_title(wrap_label(stat, 40), fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes[-ncols:]:  # the bottom panel of each column
        ax.set_xlabel("training step", fontsize="small")
    fig.supylabel("the metric named over each panel, in its unit (docs/metrics.md)", fontsize="small")
    if len(drawn_groups) > 1:
        legend(axes[0], len(drawn_groups))
    return FigureResult(
        name="stats_over_training",
        title="Network statistics over training",
        caption="Every per-pause statistic of the network (phase stats), every training dynamic (phase "
        "dynamics, and the windowed gradient norm and relative parameter change of phase train) against "
        "training step, one "
        "line per group: mean over seeds, +-1 std band, single runs thin.",
        figure=fig,
        tables={"statistics": curve_summary(s, ["statistic", "group"])},
        notes=notes,
        bands=BAND_STD_SEEDS,
        runs=sorted(s["run_dir"].unique()),
    )
