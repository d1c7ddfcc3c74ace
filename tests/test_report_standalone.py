"""Figures and tables that stand alone: each names its data set, architecture, seeds and budget,
its axes' units and what its bands mean (read back from the saved files), and statistics honest
about n (the small-n rule of report/intervals.py, figure 3's minimum, degenerate figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from plasticity_runner.metrics import load_sweep
from plasticity_runner.report import build_report
from plasticity_runner.report import intervals as I
from plasticity_runner.report.figures import figure3_falsification, figure4_probe_curves
from plasticity_runner.report.figures.fig3_falsification import FIG3_MIN_N
from plasticity_runner.report.plotting import MissingData
from plasticity_runner.report.provenance import COLUMNS

from .test_report import classification_sweep, config, make_run, probe_values


def budget(cfg: dict, steps: int = 300, probe_steps: int = 50, targets: int = 3) -> dict:
    return {**cfg, "total_steps": steps, "probe": {"enabled": True, "steps": probe_steps, "num_targets": targets}}


def test_every_figure_names_data_arch_seeds_and_budget_in_its_files(tmp_path):
    rng = np.random.default_rng(0)
    for interv in ("none", "layer_norm"):
        for seed in range(3):
            losses = rng.uniform(0.1, 1.0, size=2)
            make_run(
                tmp_path,
                f"{interv}_{seed}",
                budget(config(seed, dataset="digits", interventions=interv)),
                {
                    0: {"probe": probe_values(losses[0]), "stats": {"param_norm": 1.0}},
                    100: {"probe": probe_values(losses[1]), "stats": {"param_norm": 2.0}},
                },
                arrays={
                    0: {"probe/curve_loss": np.ones((3, 4)), "probe/curve_steps": np.arange(4) * 5},
                    100: {"probe/curve_loss": np.ones((3, 4)) * 2, "probe/curve_steps": np.arange(4) * 5},
                },
            )
    report = build_report(tmp_path, formats=["png", "pdf"])
    assert report.errors == {}
    drawn = {r.name: r for r in report.figures}
    assert {
        "plasticity_over_training",
        "figure4_probe_curves",
        "figure6_interventions",
        "interval_estimates",
        "figure10_11_probe_loss",
    } <= set(drawn)
    want = "data: digits · architecture: mlp · 3 seeds (6 runs) · 300 training steps · probe: 3 targets x 50 steps"
    for name, result in drawn.items():
        png = Image.open(tmp_path / "report" / f"{name}.png")
        assert png.text["Title"] == result.title, name
        assert want in png.text["Description"], name  # the metadata: the line as one string
        assert result.bands and result.bands in png.text["Description"], name  # every figure says what its marks are
        shown = " ".join(result.figure.get_suptitle().split())  # on the image: the title block, wrapped
        assert shown.startswith(result.title) and " ".join(want.split()) in shown, name
        assert (tmp_path / "report" / f"{name}.pdf").read_bytes().count(result.title.encode()[:20]) >= 1, name
        for tname in result.tables:
            csv = pd.read_csv(tmp_path / "report" / "tables" / f"{name}__{tname}.csv")
            assert set(COLUMNS) <= set(csv.columns), (name, tname)
            assert (csv["seeds"] == 3).all() and (csv["total_steps"].astype(str) == "300").all(), (name, tname)
            assert (csv["probe_steps"].astype(str) == "50").all() and (csv["dataset"] == "digits").all()
    # the probe loss carries its unit on the axis
    for name in ("plasticity_over_training", "figure4_probe_curves", "figure10_11_probe_loss"):
        labels = [ax.get_ylabel() for ax in drawn[name].figure.axes if ax.get_ylabel()]
        assert any("squared Q units" in label for label in labels), (name, labels)
    assert "±1 std over seeds" in drawn["plasticity_over_training"].bands
    # the page leaves out the columns that hold one value (named in each figure's header); the CSVs keep them
    page = report.html.read_text()
    assert "<th>probe_steps</th>" not in page and "<th>seeds</th>" not in page


def test_a_figure_names_only_the_runs_it_drew(tmp_path):
    # memorisation runs (figure 1) beside classification runs: figure 6 names only its own
    for seed in range(2):
        make_run(
            tmp_path,
            f"cls{seed}",
            budget(config(seed, dataset="cifar10", arch="cnn")),
            {0: {"probe": probe_values(0.2)}, 100: {"probe": probe_values(0.3)}},
        )
    mem = config(0, env="memorization", optimizer="adam")
    mem["env"].update(num_iterations=4, iteration_steps=250)
    make_run(tmp_path, "mem", mem, {250 * (i + 1): {"eval": {"accuracy": 0.5}} for i in range(4)})
    report = build_report(tmp_path, formats=["png"], figures=["figure6_interventions", "figure1_optimizer_instability"])
    drawn = {r.name: " ".join(r.figure.get_suptitle().split()) for r in report.figures}  # unwrapped
    assert "data: cifar10 · architecture: cnn · 2 seeds (2 runs) · 300 training steps" in drawn["figure6_interventions"]
    # the memorisation study's budget: iterations x steps per iteration
    assert "1 seed (1 run) · 1000 training steps" in drawn["figure1_optimizer_instability"]


def test_small_n_shows_the_range_and_refuses_the_iqm():
    three = np.array([0.3, -0.1, 0.8])
    row = I.aggregate_row([three])
    assert (
        row["interval"] == "n = 3: range shown (fewer than 10 runs: no bootstrap interval); IQM refused "
        "(fewer than 4 runs: it would be the mean)"
    )
    assert (row["mean_low"], row["mean_high"]) == (-0.1, 0.8)  # the data's min and max
    assert row["mean"] == pytest.approx(three.mean(), abs=1e-15)
    assert np.isnan(row["iqm"]) and np.isnan(row["iqm_low"])
    five = np.array([5.0, 1.0, 2.0, 3.0, 4.0])
    row = I.aggregate_row([five])
    assert row["interval"].startswith("n = 5: range shown") and "IQM" not in row["interval"]
    assert row["iqm"] == pytest.approx(3.0) and (row["iqm_low"], row["iqm_high"]) == (1.0, 5.0)
    # from MIN_INTERVAL_N runs: the bootstrap, strictly inside the range for these scores
    ten = np.arange(I.MIN_INTERVAL_N, dtype=float)
    row = I.aggregate_row([ten])
    assert row["interval"] == "n = 10: 95% percentile stratified bootstrap"
    assert ten.min() < row["mean_low"] < row["mean"] < row["mean_high"] < ten.max()
    assert (row["mean"], row["mean_low"], row["mean_high"]) == I.interval(I.mean, [ten])


def test_small_n_refuses_the_profile_and_improvement_intervals():
    scores = {"none": {"pong": np.array([0.1, 0.2, 0.3])}, "layer_norm": {"pong": np.array([0.5, 0.6, 0.7])}}
    profile = I.performance_profiles(scores, taus=np.array([0.4]))
    assert profile["low"].isna().all() and profile["interval"].str.contains("refused").all()
    assert profile.set_index("intervention").loc["layer_norm", "fraction_above"] == 1.0
    pi = I.improvement_table(scores).iloc[0]
    assert pi["probability_of_improvement"] == 1.0 and np.isnan(pi["low"]) and "refused" in pi["interval"]


def test_statistics_are_rliables_own():
    rly = pytest.importorskip("rliable.metrics")
    x, y = np.array([[1.0, 0.5], [2.0, 0.7], [3.0, 0.2]]), np.array([[0.0, 0.5], [2.5, 0.1], [1.5, 0.3]])
    tx, ty = [x[:, j] for j in range(2)], [y[:, j] for j in range(2)]
    assert I.iqm(tx) == pytest.approx(float(rly.aggregate_iqm(x)), abs=1e-15)
    assert I.mean(tx) == pytest.approx(float(rly.aggregate_mean(x)), abs=1e-15)
    assert I.probability_of_improvement(tx, ty) == pytest.approx(float(rly.probability_of_improvement(x, y)), abs=1e-15)


def test_figure3_flags_correlations_below_the_minimum_and_is_refused_without_any(tmp_path):
    classification_sweep(tmp_path / "few", np.random.default_rng(0), datasets=("mnist",), seeds=FIG3_MIN_N - 1)
    with pytest.raises(MissingData, match=f"n = {FIG3_MIN_N - 1} point"):
        figure3_falsification(load_sweep(tmp_path / "few"))
    classification_sweep(tmp_path / "mixed", np.random.default_rng(0), datasets=("mnist", "cifar10"), seeds=6)
    result = figure3_falsification(load_sweep(tmp_path / "mixed"))
    corr = result.tables["correlations"]
    assert (corr["n"] == np.where(corr["group"] == "(all)", 12, 6)).all()
    assert (corr["reliable"] == (corr["n"] >= FIG3_MIN_N)).all()  # the groups of 6 flagged, the pooled 12 not
    summary = result.tables["summary"]
    assert (summary["min_n"] == 6).all() and not summary["reliable"].any()
    labels = result.figure.axes[0].get_legend_handles_labels()[1]
    assert labels and all(f"n=6 < {FIG3_MIN_N}: unreliable" in label for label in labels)


def test_probe_curves_of_one_point_are_not_drawn(tmp_path):
    for seed in range(2):
        make_run(
            tmp_path,
            f"r{seed}",
            config(seed),
            {0: {"probe": probe_values(0.2)}},
            arrays={0: {"probe/curve_loss": np.ones((3, 1)), "probe/curve_steps": np.array([0])}},
        )
    with pytest.raises(MissingData, match="one point"):
        figure4_probe_curves(load_sweep(tmp_path))
    report = build_report(tmp_path, formats=["png"], figures=["figure4_probe_curves", "figure17_18_probe_curves_ln"])
    assert "one point" in report.missing["figure4_probe_curves"]
    assert "one point" in report.missing["figure17_18_probe_curves_ln"]
