"""Figures 12 (CIFAR-10) and 13 (MNIST), appendix B.1: agent performance on the easy and hard tasks
per intervention, over training.

The classification MDP never ends an episode, so performance is the mean reward per environment
step (``train/reward_mean``, the return per step); on the hard task (``sparse_reward``) it stays
near 0 until the agent learns the chain to state 9. ``intervention_curves`` is shared with figures
15 / 16 (TD loss).
"""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..data import natural_key, select, series
from ..plotting import (
    BAND_STD_SEEDS,
    FigureResult,
    MissingData,
    curve_summary,
    draw_curve_grid,
    interventions_of,
    order_values,
)
from .fig6_interventions import ARCH_ORDER

PANEL_ROW_KEYS = (N.DATASET, N.TASK)  # one row of panels per observation space and task


def _task_label(task: object) -> str:
    return N.TASK_LABELS.get(str(task), str(task))


def dataset_task(frame: pd.DataFrame, run_dirs: pd.Series) -> list[str] | str:
    """Per run of ``run_dirs``: its dataset and task (``PANEL_ROW_KEYS``, the task named easy / hard),
    joined by ``, ``; ``""`` when the sweep has neither key."""
    cfg = frame.groupby("run_dir", sort=True)[[k for k in PANEL_ROW_KEYS if k in frame.columns]].first()
    parts = [run_dirs.map(cfg[k]).map(_task_label if k == N.TASK else str) for k in cfg.columns]
    return [", ".join(p) for p in zip(*parts)] if parts else ""


def intervention_curves(frame: pd.DataFrame, metric: tuple[str, str]) -> pd.DataFrame:
    """``metric`` over training of the classification runs, one row per run and step, with the
    panel (``row``: dataset and task, easy / hard named; ``col``: architecture) and the ``line``
    (the run's interventions, ``none`` when it has none)."""
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    s = series(frame, metric)
    if s.empty:
        return s
    s = s[["run_dir", "step", "value"]].copy()
    s["row"] = dataset_task(frame, s["run_dir"])
    s["col"] = s["run_dir"].map(frame.groupby("run_dir")[N.ARCH].first()).astype(str) if N.ARCH in frame.columns else ""
    s["line"] = s["run_dir"].map(interventions_of(frame))
    return s


def curves_table(s: pd.DataFrame) -> pd.DataFrame:
    """``curve_summary`` of ``intervention_curves`` per panel and line, its columns named."""
    return curve_summary(s, ["row", "col", "line"]).rename(
        columns={"row": "dataset_task", "col": "architecture", "line": "intervention"}
    )


def draw_intervention_curves(s: pd.DataFrame, ylabel: str, log: bool = False):
    """``draw_curve_grid`` of ``intervention_curves``: rows sorted (easy before hard), architectures
    in the paper's order, the baseline ``none`` first among the lines."""
    rows = sorted(s["row"].unique(), key=lambda r: natural_key(r.replace("easy", "0").replace("hard", "1")))
    cols = order_values(s["col"], ARCH_ORDER)
    lines = order_values(s["line"], (N.NO_INTERVENTION,))
    return draw_curve_grid(s, rows, cols, lines, ylabel=ylabel, log=log)


def figure12_13_returns(frame: pd.DataFrame) -> FigureResult:
    """Figures 12 / 13: return per step (``train/reward_mean``) over training on the easy and hard
    tasks, per intervention.

    Needs classification runs logging ``train/reward_mean``. One row of panels per observation
    space and task (easy = true_label, hard = sparse_reward, our reading of B.1), one column per
    architecture, one line per intervention (mean over seeds, +-1 std band, runs thin). The table
    gives each line's first and last value (mean, std over seeds).
    """
    s = intervention_curves(frame, N.REWARD_MEAN)
    if s.empty:
        raise MissingData(f"no classification run with {'/'.join(N.REWARD_MEAN)}")
    fig = draw_intervention_curves(s, "mean reward per environment step (reward units)")
    return FigureResult(
        name="figure12_13_returns",
        title="Figures 12 / 13: performance on the easy and hard tasks per intervention",
        caption="Mean reward per environment step of the classification MDP over training (figure 12: "
        "CIFAR-10, figure 13: MNIST observations); rows: observation space and task (easy = "
        "true_label, hard = sparse_reward), columns: architecture, lines: interventions.",
        figure=fig,
        tables={"curves": curves_table(s)},
        bands=BAND_STD_SEEDS,
        runs=sorted(s["run_dir"].unique()),
    )
