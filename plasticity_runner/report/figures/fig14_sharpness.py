"""Figure 14, appendix B.1: layer normalisation and the Hessian's sharpness in the CNN trained with
regression ("the added layer normalization prevents an increase in sharpness that occurs in the
default architecture")."""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..data import select, series
from ..plotting import (
    BAND_STD_SEEDS,
    FigureResult,
    MissingData,
    curve_summary,
    draw_curve_grid,
    interventions_of,
    order_values,
)
from .fig12_13_returns import dataset_task

FIG14_ARCH = "cnn"
FIG14_LINES = (N.NO_INTERVENTION, N.LAYER_NORM)  # regression (scalar head) with and without layer norm


def sharpness_curves(frame: pd.DataFrame, arch: str = FIG14_ARCH) -> pd.DataFrame:
    """``curvature/hessian_top_eig`` over training of the classification runs of ``arch`` whose
    interventions are exactly ``none`` or ``layer_norm`` (the regression head); ``col`` is the
    dataset and task, ``line`` the intervention."""
    frame = select(select(frame, N.ENV, N.ENV_CLASSIFICATION), N.ARCH, arch)
    s = series(frame, N.HESSIAN_TOP_EIG)
    if s.empty:
        return s
    s = s[["run_dir", "step", "value"]].copy()
    s["line"] = s["run_dir"].map(interventions_of(frame))
    s = s[s["line"].isin(FIG14_LINES)]
    s["col"] = dataset_task(frame, s["run_dir"])
    s["row"] = ""
    return s


def figure14_sharpness(frame: pd.DataFrame) -> FigureResult:
    """Figure 14: the Hessian's top eigenvalue (``curvature/hessian_top_eig``, the sharpness) over
    training of the CNN with the regression head, with and without layer norm.

    Needs classification runs with ``architecture.name=cnn``, ``interventions`` ``none`` and/or
    ``layer_norm`` (a two-hot run is left out: the figure is about regression) and the curvature
    diagnostic at their pauses. One panel per dataset and task, one line per intervention (mean
    over seeds, +-1 std band, runs thin), log scale when positive.
    """
    s = sharpness_curves(frame)
    if s.empty:
        raise MissingData(
            f"no classification run of architecture {FIG14_ARCH} with interventions none or "
            f"layer_norm logging {'/'.join(N.HESSIAN_TOP_EIG)}"
        )
    cols = sorted(s["col"].unique())
    fig = draw_curve_grid(
        s,
        [""],
        cols,
        order_values(s["line"], FIG14_LINES),
        ylabel="top eigenvalue of the probe loss's Hessian\n(squared Q units per squared parameter unit)",
        log=True,
    )
    return FigureResult(
        name="figure14_sharpness",
        title="Figure 14: layer norm and the sharpness of the CNN (regression)",
        caption="Largest Hessian eigenvalue of the probe loss over training, the CNN with the "
        "regression head with and without layer normalisation, per dataset and task.",
        figure=fig,
        tables={
            "sharpness": curve_summary(s, ["col", "line"]).rename(
                columns={"col": "dataset_task", "line": "intervention"}
            )
        },
        bands=BAND_STD_SEEDS,
        runs=sorted(s["run_dir"].unique()),
    )
