"""Figures and an HTML report of a run or multirun directory (``plasticity-report PATH``).

Each figure function takes the frame of ``plasticity_runner.metrics.load_sweep`` and returns a
``FigureResult`` (a matplotlib figure plus the tables of its numbers), or raises ``MissingData``
when the sweep lacks what the figure needs. ``make_report(path)`` draws all of them.
"""

from .builder import Report, build_report, make_report
from .data import NoRunsError, ReportData, load_report_data
from .figures import (
    FIGURES,
    FigureResult,
    MissingData,
    atari_table,
    falsification_contrasts,
    falsification_points,
    falsification_table,
    figure1_optimizer_instability,
    figure2_brownian,
    figure3_falsification,
    figure4_probe_curves,
    figure5_width,
    figure6_interventions,
    figure7_atari_layer_norm,
    intervention_table,
    optimizer_table,
    pearson,
    plasticity_loss,
    plasticity_over_training,
    plasticity_table,
    probe_curves,
    probe_loss_change,
    process_table,
    width_table,
)

__all__ = [
    "FIGURES",
    "FigureResult",
    "MissingData",
    "NoRunsError",
    "Report",
    "ReportData",
    "atari_table",
    "build_report",
    "falsification_contrasts",
    "falsification_points",
    "falsification_table",
    "figure1_optimizer_instability",
    "figure2_brownian",
    "figure3_falsification",
    "figure4_probe_curves",
    "figure5_width",
    "figure6_interventions",
    "figure7_atari_layer_norm",
    "intervention_table",
    "load_report_data",
    "make_report",
    "optimizer_table",
    "pearson",
    "plasticity_loss",
    "plasticity_over_training",
    "plasticity_table",
    "probe_curves",
    "probe_loss_change",
    "process_table",
    "width_table",
]
