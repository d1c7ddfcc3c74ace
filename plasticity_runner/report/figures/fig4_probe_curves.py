"""Figure 4: probe learning curves from checkpoints taken at different training steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import names as N
from ..data import (
    load_step_arrays,
    natural_key,
    spread_steps,
    steps_with_arrays,
)
from ..plotting import (
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    local_groups,
    panel_grid,
    step_scale,
    wrap_label,
)


def probe_curves(frame: pd.DataFrame, max_pauses: int = 8) -> pd.DataFrame:
    """Figure 4 curves: per group and pause, the probe learning curve averaged over targets and seeds.

    Columns: group, step (training step of the checkpoint), runs, targets, curve_steps and curve
    (numpy arrays), std (std over targets and seeds per probe step), initial/final/mean loss.
    """
    keys = [N.PROBE_CURVE_LOSS, N.PROBE_CURVE_STEPS]
    steps_of = {r: steps_with_arrays(r, keys) for r in sorted(frame["run_dir"].unique())}
    steps_of = {r: s for r, s in steps_of.items() if s}
    rows = []
    if not steps_of:
        return pd.DataFrame(rows)
    frame = local_groups(frame[frame["run_dir"].isin(steps_of)])
    for g, gf in sorted(frame.groupby("group"), key=lambda kv: natural_key(kv[0])):
        by_run = {r: steps_of[r] for r in sorted(gf["run_dir"].unique())}
        for step in spread_steps(sorted(set().union(*by_run.values())), max_pauses):
            curves, xs = [], None
            for r, steps in by_run.items():
                if step not in steps:
                    continue
                arr = load_step_arrays(r, step, keys)
                loss = np.atleast_2d(arr[N.PROBE_CURVE_LOSS]).astype(float)
                if xs is None:
                    xs = np.asarray(arr[N.PROBE_CURVE_STEPS], dtype=float)
                if loss.shape[1] == len(xs):
                    curves.append(loss)
            if not curves:
                continue
            allc = np.concatenate(curves, axis=0)
            mean = np.nanmean(allc, axis=0)
            rows.append(
                {
                    "group": g,
                    "step": int(step),
                    "runs": len(curves),
                    "targets": allc.shape[0],
                    "curve_steps": xs,
                    "curve": mean,
                    "std": np.nanstd(allc, axis=0),
                    "initial_loss": float(mean[0]),
                    "final_loss": float(mean[-1]),
                    "mean_loss": float(mean.mean()),
                }
            )
    out = pd.DataFrame(rows)
    out.attrs["runs"] = sorted(steps_of)
    return out


def check_curves(curves: pd.DataFrame) -> None:
    """Refuse (``MissingData``) probe curves of one point each: they draw as empty axes."""
    longest = max(len(np.atleast_1d(c)) for c in curves["curve_steps"])
    if longest < 2:
        raise MissingData(
            "each probe curve has one point (probe.steps <= probe.curve_every_steps): a curve "
            "needs two or more; set probe.curve_every_steps below probe.steps"
        )


PROBE_CURVE_BANDS = (
    "band: ±1 std over targets and seeds at each probe step (n = targets x seeds per curve, "
    "column 'targets' of the table)"
)


def figure4_probe_curves(frame: pd.DataFrame, max_pauses: int = 8, max_panels: int = 6) -> FigureResult:
    """Figure 4: probe learning curves from checkpoints taken at different training steps.

    Needs arrays ``probe/curve_loss`` [targets, K] and ``probe/curve_steps`` [K] at the pauses of
    any run. One panel per group (at most ``max_panels``), one curve per pause (at most
    ``max_pauses``, evenly spread), the mean over targets and seeds, coloured by the training step
    of the checkpoint, with a +-1 std band over targets and seeds. Flatter curves at later
    checkpoints are the paper's "slower training progress rather than higher plateaus".
    """
    curves = probe_curves(frame, max_pauses=max_pauses)
    if curves.empty:
        raise MissingData(f"no run stored arrays {N.PROBE_CURVE_LOSS} and {N.PROBE_CURVE_STEPS}")
    check_curves(curves)
    groups = list(dict.fromkeys(curves["group"]))  # already in natural order
    notes = []
    if len(groups) > max_panels:
        notes.append(
            f"{len(groups) - max_panels} of {len(groups)} groups not drawn (max_panels={max_panels}); "
            "their numbers are in the table."
        )
    shown = groups[:max_panels]
    fig, axes = panel_grid(len(shown), 3, (4.3, 3.4), (1, 0))
    scale = step_scale(curves["step"])
    positive = all((c > 0).all() for c in curves["curve"])
    for ax, g in zip(axes, shown):
        for _, row in curves[curves["group"] == g].iterrows():
            c = scale.to_rgba(row["step"])
            ax.plot(row["curve_steps"], row["curve"], color=c, lw=1.4)
            lo = row["curve"] - row["std"]
            if positive:
                lo = np.maximum(lo, row["curve"] * 1e-3)
            ax.fill_between(row["curve_steps"], lo, row["curve"] + row["std"], color=c, alpha=0.12, lw=0)
        if positive:
            ax.set_yscale("log")
        ax.set_title(wrap_label(g, 50), fontsize="x-small")
        ax.set_xlabel("probe optimisation step")
        ax.set_ylabel(f"probe loss ({PROBE_LOSS_UNIT})")
    fig.colorbar(scale, ax=list(axes), label="training step of checkpoint")
    table = curves.drop(columns=["curve_steps", "curve", "std"])
    return FigureResult(
        name="figure4_probe_curves",
        title="Figure 4: probe learning curves from checkpoints at different training steps",
        caption="Loss on new random regression targets while training from a checkpoint, one "
        "curve per checkpoint (mean over targets and seeds, +-1 std band).",
        figure=fig,
        tables={"curves": table},
        notes=notes,
        bands=PROBE_CURVE_BANDS,
        runs=curves.attrs["runs"],
    )
