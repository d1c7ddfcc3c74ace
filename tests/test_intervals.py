"""Interval estimates of the report (report/intervals.py) against direct computations: a numpy IQM,
rliable's metric definitions, and the exact bootstrap distribution of a tiny score matrix."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from rliable import metrics as rly_metrics

from plasticity_runner.report import build_report, load_report_data
from plasticity_runner.report import intervals as I

from .test_report import config, make_run, probe_values

# A hand-made score matrix: 3 runs (seeds) x 2 tasks (games).
SCORES = np.array([[0.1, 1.0], [0.4, 3.0], [0.2, 2.0]])


def numpy_iqm(matrix: np.ndarray) -> float:
    """The mean of the middle 50 % of all scores, trimming floor(n / 4) from each end."""
    v = np.sort(matrix.ravel())
    k = len(v) // 4
    return float(v[k : len(v) - k].mean())


def exact_bootstrap(matrix: np.ndarray, statistic) -> tuple[np.ndarray, np.ndarray]:
    """Every stratified resample of ``matrix`` (runs drawn with replacement within each task,
    independently across tasks), each equally likely: the statistic's values, sorted."""
    n, m = matrix.shape
    per_task = [list(itertools.product(range(n), repeat=n)) for _ in range(m)]
    values = []
    for picks in itertools.product(*per_task):
        values.append(statistic(np.stack([matrix[list(p), j] for j, p in enumerate(picks)], axis=1)))
    return np.sort(np.array(values))


def test_iqm_and_interval_against_a_direct_computation():
    tasks = [SCORES[:, j] for j in range(SCORES.shape[1])]
    point, low, high = I.interval(I.iqm, tasks, reps=20000, seed=3)
    assert point == pytest.approx(numpy_iqm(SCORES), abs=1e-12)
    assert point == pytest.approx(float(rly_metrics.aggregate_iqm(SCORES)), abs=1e-12)
    # the percentile interval is the 2.5 % and 97.5 % quantiles of the bootstrap distribution,
    # here known exactly (27 x 27 equally likely resamples); 20000 draws put each bound within
    # one percentage point of its quantile (about 9 standard errors)
    dist = exact_bootstrap(SCORES, numpy_iqm)
    assert np.quantile(dist, 0.015) <= low <= np.quantile(dist, 0.035)
    assert np.quantile(dist, 0.965) <= high <= np.quantile(dist, 0.985)
    assert low < point < high
    # the same seed gives the same interval; the mean is rliable's aggregate_mean
    assert I.interval(I.iqm, tasks, reps=20000, seed=3) == (point, low, high)
    m, ml, mh = I.interval(I.mean, tasks, reps=20000, seed=3)
    assert m == pytest.approx(float(rly_metrics.aggregate_mean(SCORES)), abs=1e-12)
    dist = exact_bootstrap(SCORES, lambda x: float(x.mean()))
    assert np.quantile(dist, 0.015) <= ml <= np.quantile(dist, 0.035)
    assert np.quantile(dist, 0.965) <= mh <= np.quantile(dist, 0.985)


def test_probability_of_improvement_and_profile_match_rliable():
    x = np.array([[1.0, 0.5], [2.0, 0.7], [3.0, 0.2], [2.5, 0.9]])
    y = np.array([[0.0, 0.5], [2.5, 0.1], [1.5, 0.3], [1.0, 0.1]])
    tx, ty = [x[:, j] for j in range(2)], [y[:, j] for j in range(2)]
    p, lo, hi = I.interval(I.probability_of_improvement, tx, ty, reps=2000)
    assert p == pytest.approx(float(rly_metrics.probability_of_improvement(x, y)), abs=1e-12)
    assert 0.0 <= lo <= p <= hi <= 1.0
    for tau in (0.0, 0.5, 1.0):
        assert I.fraction_above(tau)(tx) == pytest.approx(float(np.mean(x > tau)))


def test_a_single_run_per_task_has_a_point_interval_and_nonfinite_scores_are_refused():
    assert I.interval(I.iqm, [np.array([2.0]), np.array([4.0])]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="non-finite"):
        I.interval(I.mean, [np.array([1.0, np.nan])])


def test_report_has_the_interval_tables(tmp_path):
    rng = np.random.default_rng(0)
    changes = {}
    for interv in ("none", "layer_norm"):
        for seed in range(4):
            losses = rng.uniform(0.1, 1.0, size=2)
            make_run(
                tmp_path / "fig6",
                f"{interv}_{seed}",
                config(seed, interventions=interv),
                {0: {"probe": probe_values(losses[0])}, 100: {"probe": probe_values(losses[1])}},
            )
            changes.setdefault(interv, []).append(losses[1] - losses[0])
    hns = {}
    for game in ("pong", "freeway"):
        for interv, base in (("none", 0.5), ("layer_norm", 1.0)):
            for seed in range(3):
                v = base + 0.1 * seed + (0.3 if game == "pong" else 0.0)
                make_run(
                    tmp_path / "fig7",
                    f"{game}_{interv}_{seed}",
                    config(seed, env="atari", arch="nature_cnn", game=game, interventions=interv),
                    {1000: {"eval": {"human_normalized_score": v}}},
                )
                hns.setdefault(interv, {}).setdefault(game, []).append(v)
    report = build_report(tmp_path, formats=["png"], figures=["interval_estimates"])
    assert report.errors == {}
    result = {r.name: r for r in report.figures}["interval_estimates"]
    fig6 = result.tables["probe_loss_change"].set_index("intervention")
    for interv, values in changes.items():
        assert fig6.loc[interv, "runs"] == 4
        assert fig6.loc[interv, "mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert fig6.loc[interv, "iqm"] == pytest.approx(numpy_iqm(np.array(values)), abs=1e-12)
        assert fig6.loc[interv, "iqm_low"] <= fig6.loc[interv, "iqm"] <= fig6.loc[interv, "iqm_high"]
    atari = result.tables["atari_hns"].set_index("intervention")
    for interv, games in hns.items():
        matrix = np.array([games["freeway"], games["pong"]]).T
        assert atari.loc[interv, "iqm"] == pytest.approx(numpy_iqm(matrix), abs=1e-12)
    pi = result.tables["probability_of_improvement"].iloc[0]
    assert pi["probability_of_improvement"] == 1.0  # every layer-norm run beats every baseline run
    profile = result.tables["performance_profile"]
    ln = profile[(profile["intervention"] == "layer_norm") & (profile["tau"] == 1.0)].iloc[0]
    assert ln["fraction_above"] == pytest.approx(np.mean(np.array(list(hns["layer_norm"].values())) > 1.0))
    csv = pd.read_csv(tmp_path / "report" / "tables" / "interval_estimates__probability_of_improvement.csv")
    assert csv["probability_of_improvement"].tolist() == [1.0]
    page = report.html.read_text()
    assert "probability_of_improvement" in page and "iqm_low" in page
    assert load_report_data(tmp_path).skipped.empty
