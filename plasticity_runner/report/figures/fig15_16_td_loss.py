"""Figures 15 (MNIST) and 16 (CIFAR-10), appendix B.2.1: the TD loss over training on the easy and
hard tasks, per intervention (the layout of figures 12 / 13)."""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..plotting import BAND_STD_SEEDS, FigureResult, MissingData
from .fig12_13_returns import curves_table, draw_intervention_curves, intervention_curves


def figure15_16_td_loss(frame: pd.DataFrame) -> FigureResult:
    """Figures 15 / 16: TD loss (``train/td_loss``, the mean squared TD error since the last log
    point) over training, per intervention.

    Needs classification runs logging ``train/td_loss``. Rows: observation space and task (easy =
    true_label, hard = sparse_reward), columns: architecture, lines: interventions (mean over
    seeds, +-1 std band, runs thin); log scale when every value is positive. A two-hot run's TD
    loss is its cross-entropy, not a squared error: compare it within its own line only.
    """
    s = intervention_curves(frame, N.TD_LOSS)
    if s.empty:
        raise MissingData(f"no classification run with {'/'.join(N.TD_LOSS)}")
    fig = draw_intervention_curves(s, "TD loss (squared Q units; two-hot: nats)", log=True)
    notes = []
    if s["line"].str.contains(N.TWO_HOT).any():
        notes.append("Two-hot runs log their cross-entropy as td_loss: not on the scale of the squared TD error.")
    return FigureResult(
        name="figure15_16_td_loss",
        title="Figures 15 / 16: TD loss on the easy and hard tasks per intervention",
        caption="TD loss over training (figure 15: MNIST, figure 16: CIFAR-10 observations); rows: "
        "observation space and task, columns: architecture, lines: interventions.",
        figure=fig,
        tables={"curves": curves_table(s)},
        notes=notes,
        bands=BAND_STD_SEEDS,
        runs=sorted(s["run_dir"].unique()),
    )
