"""Diagnostics in a real run: scalars and arrays at the pauses their cadence picks, no side effects."""

from __future__ import annotations

import pandas as pd
import pytest

from plasticity_runner import load_arrays, load_sweep
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.trainer import train

from .conftest import make_cfg

CANONICAL = {
    "stats": ["param_norm", "feature_srank_delta0.01", "weight_rank_mean", "dead_frac", "dormant_frac_tau0.025"],
    "curvature": ["hessian_top_eig"],
    "gradcov": ["gradcov_offdiag_mean", "gradcov_neg_frac"],
}


def test_run_writes_diagnostics_at_their_cadence_without_changing_training(tmp_path):
    # pauses at 0, 20, 40; curvature every 40; gradcov on the perturbation loss
    cfg = make_cfg(["diagnostics.curvature.every_steps=40", "diagnostics.gradcov.loss=perturbation"])
    train(cfg, tmp_path / "diag")
    df = load_sweep(tmp_path / "diag")
    steps = {phase: sorted(df[df.phase == phase].step.unique()) for phase in CANONICAL}
    assert steps == {"stats": [0, 20, 40], "curvature": [0, 40], "gradcov": [0, 20, 40]}
    for phase, names in CANONICAL.items():
        assert set(names) <= set(df[df.phase == phase].metric)
    timing = df[df.phase == "timing"]
    assert set(timing[timing.step == 20].metric) >= {"probe_s", "statistics_s", "gradcov_s"}
    assert "curvature_s" not in set(timing[timing.step == 20].metric)
    gradcov = df[(df.phase == "gradcov") & (df.metric == "gradcov_neg_frac")]
    assert gradcov.value.between(0, 1).all()

    arrays = load_arrays(tmp_path / "diag")
    assert sorted(arrays) == [0, 20, 40]
    for step, a in arrays.items():
        # every pause keeps its probe learning curve (figure 4): [num_targets, windows] and window ends
        assert a["probe/curve_loss"].shape == (3, 2) and a["probe/curve_steps"].tolist() == [5, 10]
        assert a["gradcov/matrix"].shape == (32, 32) and sorted(a["gradcov/order"].tolist()) == list(range(32))
        assert (a["gradcov/labels"][1:] >= a["gradcov/labels"][:-1]).all()
        assert ("hessian/density" in a) == (step != 20)
    a = arrays[40]
    assert a["hessian/ritz_values"].shape == a["hessian/ritz_weights"].shape == (1, 4)
    assert a["hessian/grid"].shape == a["hessian/density"].shape == (64,)

    # the same run without diagnostics trains identically (and probes identically)
    off = [f"diagnostics.{d}.enabled=false" for d in ("statistics", "curvature", "gradcov")]
    train(make_cfg(off), tmp_path / "plain")
    plain = load_sweep(tmp_path / "plain")
    assert not plain.phase.isin(list(CANONICAL)).any()

    def kept(frame):
        frame = frame[frame.phase.isin(["train", "probe"])]
        return frame[["step", "phase", "metric", "value"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(kept(df), kept(plain), check_exact=True)


def test_cadence_must_be_a_multiple_of_the_pause_interval():
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["diagnostics.gradcov.every_steps=30"]))
    assert err.value.key == "diagnostics.gradcov.every_steps"
    validate(make_cfg(["diagnostics.gradcov.every_steps=30", "diagnostics.gradcov.enabled=false"]))
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["diagnostics.gradcov.num_clusters=40"]))
    assert err.value.key == "diagnostics.gradcov.num_clusters"
    # the default cadence follows probe.every_steps
    assert make_cfg(["probe.every_steps=10"]).diagnostics.statistics.every_steps == 10
