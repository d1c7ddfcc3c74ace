"""The report's figures, one module per figure of Lyle et al. (2023), and their registry.

Every figure function takes the long-format frame of ``load_sweep`` (arrays are read from each
row's ``run_dir``) and returns a ``FigureResult``: a matplotlib ``Figure`` and the tables of the
numbers it plots. A function raises ``MissingData`` with the reason when the sweep lacks what the
figure needs, so the report can say why a figure is absent. The ``*_table`` functions compute the
numbers alone. Shared helpers live in ``report/plotting.py``; names of metrics, arrays and config
keys in ``report/names.py``.

A new figure is one module here and one line in ``FIGURES``.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ..intervals import figure_interval_estimates
from ..plotting import FigureResult, MissingData, pearson, plasticity_loss, probe_loss_change
from .fig1_optimizer import figure1_optimizer_instability, optimizer_table
from .fig2_brownian import DENSITY_FLOOR, figure2_brownian, process_table
from .fig3_falsification import (
    FIG3_COLOR_KEYS,
    FIG3_CONFIG_KEYS,
    FIG3_CONTRASTS,
    FIG3_Y,
    falsification_contrasts,
    falsification_points,
    falsification_table,
    figure3_falsification,
)
from .fig4_probe_curves import figure4_probe_curves, probe_curves
from .fig5_width import FIG5_PANEL_KEYS, figure5_width, width_table
from .fig6_interventions import ARCH_ORDER, FIG6_FACET_KEY, figure6_interventions, intervention_table
from .fig7_atari import atari_table, figure7_atari_layer_norm
from .fig10_11_probe_loss import figure10_11_probe_loss, initial_final_table
from .fig12_13_returns import figure12_13_returns, intervention_curves
from .fig14_sharpness import figure14_sharpness, sharpness_curves
from .fig15_16_td_loss import figure15_16_td_loss
from .fig17_18_probe_curves_ln import figure17_18_probe_curves_ln, probe_curves_by_layer_norm
from .fig19_20_atari_gradcov import figure19_20_atari_gradcov
from .fig21_22_atari_hessian import figure21_22_atari_hessian
from .plasticity import plasticity_over_training, plasticity_table
from .stats_over_training import stats_over_training, stats_series

FIGURES: list[tuple[str, Callable[[pd.DataFrame], FigureResult]]] = [
    ("plasticity_over_training", plasticity_over_training),
    ("figure1_optimizer_instability", figure1_optimizer_instability),
    ("figure2_brownian", figure2_brownian),
    ("figure3_falsification", figure3_falsification),
    ("figure4_probe_curves", figure4_probe_curves),
    ("figure5_width", figure5_width),
    ("figure6_interventions", figure6_interventions),
    ("figure7_atari_layer_norm", figure7_atari_layer_norm),
    ("interval_estimates", figure_interval_estimates),
    ("stats_over_training", stats_over_training),
    # appendix B
    ("figure10_11_probe_loss", figure10_11_probe_loss),
    ("figure12_13_returns", figure12_13_returns),
    ("figure14_sharpness", figure14_sharpness),
    ("figure15_16_td_loss", figure15_16_td_loss),
    ("figure17_18_probe_curves_ln", figure17_18_probe_curves_ln),
    ("figure19_20_atari_gradcov", figure19_20_atari_gradcov),
    ("figure21_22_atari_hessian", figure21_22_atari_hessian),
]

__all__ = [
    "ARCH_ORDER",
    "DENSITY_FLOOR",
    "FIG3_COLOR_KEYS",
    "FIG3_CONFIG_KEYS",
    "FIG3_CONTRASTS",
    "FIG3_Y",
    "FIG5_PANEL_KEYS",
    "FIG6_FACET_KEY",
    "FIGURES",
    "FigureResult",
    "MissingData",
    "atari_table",
    "falsification_contrasts",
    "falsification_points",
    "falsification_table",
    "figure10_11_probe_loss",
    "figure12_13_returns",
    "figure14_sharpness",
    "figure15_16_td_loss",
    "figure17_18_probe_curves_ln",
    "figure19_20_atari_gradcov",
    "figure1_optimizer_instability",
    "figure21_22_atari_hessian",
    "figure2_brownian",
    "figure3_falsification",
    "figure4_probe_curves",
    "figure5_width",
    "figure6_interventions",
    "figure7_atari_layer_norm",
    "initial_final_table",
    "intervention_curves",
    "intervention_table",
    "optimizer_table",
    "pearson",
    "plasticity_loss",
    "plasticity_over_training",
    "plasticity_table",
    "probe_curves",
    "probe_curves_by_layer_norm",
    "probe_loss_change",
    "process_table",
    "sharpness_curves",
    "stats_over_training",
    "stats_series",
    "width_table",
]
