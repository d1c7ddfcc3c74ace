"""Figure 1: accuracy and dead units per iteration of label re-randomisation, default vs tuned Adam."""

from __future__ import annotations

import math

import pandas as pd

from .. import names as N
from ..data import (
    natural_key,
    select,
    series,
)
from ..plotting import (
    BAND_STD_SEEDS,
    FigureResult,
    MissingData,
    legend,
    local_groups,
    mean_std,
    new_figure,
    palette,
    plot_group_curves,
)


def _iterations(s: pd.DataFrame) -> pd.DataFrame:
    s = s.copy()
    s["iteration"] = s.groupby("run_dir").cumcount() + 1
    return s


def optimizer_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 1 numbers per group (optimizer): final accuracy and dead fraction, min accuracy."""
    frame = local_groups(select(frame, N.ENV, N.ENV_MEMORIZATION))
    acc, dead = series(frame, N.ACCURACY), series(frame, N.EVAL_DEAD_FRAC)
    group_of = frame.groupby("run_dir")["group"].first()
    rows = []
    for g in sorted(group_of.unique(), key=natural_key):
        runs = group_of.index[group_of == g]
        a = acc[acc["run_dir"].isin(runs)]
        d = dead[dead["run_dir"].isin(runs)]
        if a.empty and d.empty:
            continue
        am, as_ = mean_std(a.groupby("run_dir")["value"].last()) if len(a) else (math.nan, math.nan)
        dm, ds = mean_std(d.groupby("run_dir")["value"].last()) if len(d) else (math.nan, math.nan)
        rows.append(
            {
                "group": g,
                "runs": len(set(a["run_dir"]) | set(d["run_dir"])),
                "iterations": int(
                    max(
                        a.groupby("run_dir").size().max() if len(a) else 0,
                        d.groupby("run_dir").size().max() if len(d) else 0,
                    )
                ),
                "final_accuracy_mean": am,
                "final_accuracy_std": as_,
                "min_accuracy_mean": mean_std(a.groupby("run_dir")["value"].min())[0] if len(a) else math.nan,
                "final_dead_frac_mean": dm,
                "final_dead_frac_std": ds,
            }
        )
    return pd.DataFrame(rows)


def iteration_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 1 numbers per group (optimizer) and iteration: accuracy, dead fraction and the mean
    update norm at the end of the iteration, mean / min / max over the group's runs."""
    frame = local_groups(select(frame, N.ENV, N.ENV_MEMORIZATION))
    group_of = frame.groupby("run_dir")["group"].first()
    parts = []
    for metric, name in (
        (N.ACCURACY, "accuracy"),
        (N.EVAL_DEAD_FRAC, "dead_frac"),
        (N.ADAM_UPDATE_NORM, "update_norm"),
    ):
        s = _iterations(series(frame, metric))
        if s.empty:
            continue
        s["group"] = s["run_dir"].map(group_of)
        stats = s.groupby(["group", "iteration"])["value"].agg(["mean", "min", "max", "count"])
        stats.columns = [f"{name}_{c}" if c != "count" else f"{name}_runs" for c in stats.columns]
        parts.append(stats)
    if not parts:
        return pd.DataFrame(columns=["group", "iteration", "runs"])
    out = pd.concat(parts, axis=1).reset_index()
    out.insert(2, "runs", out[[c for c in out.columns if c.endswith("_runs")]].max(axis=1).astype(int))
    out = out.drop(columns=[c for c in out.columns if c.endswith("_runs")])
    order = sorted(out["group"].unique(), key=natural_key)
    return out.sort_values(
        ["group", "iteration"], key=lambda c: c.map(order.index) if c.name == "group" else c, ignore_index=True
    )


def figure1_optimizer_instability(frame: pd.DataFrame) -> FigureResult:
    """Figure 1: accuracy and dead-unit fraction per iteration, default vs tuned Adam.

    Needs runs with ``env.name=memorization`` (all runs if the config lacks ``env.name``) logging
    ``eval/accuracy`` and/or ``eval/dead_frac`` at the end of each iteration (labels are
    re-randomised between iterations); ``eval/adam_update_norm`` adds a third panel. One line per
    group, normally ``optimizer.name`` = adam (default) vs adam_tuned; mean over seeds, +-1 std.
    """
    frame = local_groups(select(frame, N.ENV, N.ENV_MEMORIZATION))
    metrics = [
        (N.ACCURACY, "accuracy"),
        (N.EVAL_DEAD_FRAC, "dead unit fraction"),
        (N.ADAM_UPDATE_NORM, "Adam update norm"),
    ]
    panels = [(series(frame, m), t) for m, t in metrics]
    panels = [(s, t) for s, t in panels if len(s)]
    if not any(t in ("accuracy", "dead unit fraction") for _, t in panels):
        raise MissingData("no memorization run with eval/accuracy or eval/dead_frac")
    group_of = frame.groupby("run_dir")["group"].first()
    groups = sorted(group_of.unique(), key=natural_key)
    colors = dict(zip(groups, palette(len(groups))))
    fig = new_figure(4.5 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (s, title) in zip(axes, panels):
        s = _iterations(s).assign(group=lambda d: d["run_dir"].map(group_of))
        for g in groups:
            sg = s[s["group"] == g]
            if len(sg):
                plot_group_curves(ax, sg, colors[g], g, x="iteration")
        ax.set_xlabel("iteration (labels re-randomised after each)")
        ax.set_title(title)
        ax.set_ylabel(
            {
                "accuracy": "accuracy (fraction of images)",
                "dead unit fraction": "dead units (fraction)",
                "Adam update norm": "Adam update norm (L2, parameter units)",
            }[title]
        )
        if title == "Adam update norm" and (s["value"] > 0).all():
            ax.set_yscale("log")
        if title != "Adam update norm":
            ax.set_ylim(-0.02, 1.02)
    legend(axes[0], len(groups))
    return FigureResult(
        name="figure1_optimizer_instability",
        title="Figure 1: optimizer instability under label re-randomisation",
        caption="Memorization of randomly relabelled images; after each iteration the labels are "
        "re-randomised. Mean over seeds (bold), +-1 std band, single runs thin.",
        figure=fig,
        tables={"final": optimizer_table(frame), "iterations": iteration_table(frame)},
        bands=BAND_STD_SEEDS.replace("at each step", "at each iteration"),
        runs=sorted(group_of.index),
    )
