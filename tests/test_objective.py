"""The run's objective for a sweeper (plasticity_runner/objective.py), ``hydra/sweeper=optuna`` and the
``tune_adam_plasticity`` preset through the real CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from plasticity_runner.cli import config_dir
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import load_run_metadata
from plasticity_runner.objective import Objective, ObjectiveError, for_sweeper, objective_value, parse_objective

from .conftest import make_cfg
from .test_cli import run_cli
from .test_presets import COMMON, TINY
from .test_report import config, make_run, probe_values


@pytest.mark.parametrize(
    "spec, want",
    [
        ("probe/plasticity@last", Objective("probe", "plasticity", "last")),
        ("probe/plasticity", Objective("probe", "plasticity", "last")),
        ("eval/human_normalized_score@mean", Objective("eval", "human_normalized_score", "mean")),
        ("stats/feature_srank_delta0.01@max", Objective("stats", "feature_srank_delta0.01", "max")),
        ("probe/probe_loss@5000", Objective("probe", "probe_loss", "step", 5000)),
        ("probe/plasticity@change", Objective("probe", "plasticity", "change")),
    ],
)
def test_parse_objective(spec, want):
    assert parse_objective(spec) == want
    assert parse_objective(str(want)) == want


@pytest.mark.parametrize(
    "spec",
    [
        "plasticity",
        "probe/plasticity@median",
        "probe/plasticity@step",
        "probe/plasticity@-3",
        "probe/@last",
        "/plasticity",
        "probe/a@last@mean",
    ],
)
def test_malformed_objective_is_a_config_error_before_the_run(spec):
    with pytest.raises(ObjectiveError, match="expected"):
        parse_objective(spec)
    with pytest.raises(ConfigError, match="config key 'objective'"):
        validate(make_cfg([f"objective={spec}"]))


def probe_run(root, name, plasticity, status=None):
    """A run whose probe/plasticity is ``plasticity[i]`` at step 1000 i."""
    scalars = {1000 * i: {"probe": probe_values(1.0 - p)} for i, p in enumerate(plasticity)}
    return make_run(root, name, config(0), scalars, status=status)


def test_objective_reductions_against_hand_made_metrics(tmp_path):
    p = [0.9, 0.5, 0.7, 0.4]
    run = probe_run(tmp_path, "run", p)
    assert objective_value(run, "probe/plasticity@last") == pytest.approx(0.4)
    assert objective_value(run, "probe/plasticity@mean") == pytest.approx(np.mean(p))
    assert objective_value(run, "probe/plasticity@min") == pytest.approx(0.4)
    assert objective_value(run, "probe/plasticity@max") == pytest.approx(0.9)
    assert objective_value(run, "probe/plasticity@change") == pytest.approx(0.4 - 0.9)
    assert objective_value(run, "probe/probe_loss@1000") == pytest.approx(0.5)
    with pytest.raises(ObjectiveError, match="at steps \\[0, 1000, 2000, 3000\\], not at 1500"):
        objective_value(run, "probe/plasticity@1500")
    with pytest.raises(
        ObjectiveError,
        match="recorded no eval/human_normalized_score; it has "
        "probe/plasticity, probe/probe_baseline, probe/probe_loss",
    ):
        objective_value(run, "eval/human_normalized_score@last")
    one = probe_run(tmp_path, "one", [0.9])
    with pytest.raises(ObjectiveError, match="@change needs two"):
        objective_value(one, "probe/plasticity@change")


def test_a_step_written_twice_counts_once_as_its_mean(tmp_path):
    run = probe_run(tmp_path, "run", [0.9, 0.5])
    from plasticity_runner.metrics import MetricsWriter

    writer = MetricsWriter(run, load_run_metadata(run)["run_id"])
    writer.add_many(1000, "probe", {"plasticity": 0.3})  # step 1000 again, in another shard (as the report reads it)
    writer.flush(1001)
    assert objective_value(run, "probe/plasticity@last") == pytest.approx((0.5 + 0.3) / 2)
    assert objective_value(run, "probe/plasticity@mean") == pytest.approx((0.9 + 0.4) / 2)


def test_a_diverged_run_is_nan_never_an_earlier_value(tmp_path):
    run = probe_run(tmp_path, "diverged", [0.9, 0.5, 0.7], status="diverged")
    assert math.isnan(objective_value(run, "probe/plasticity@last"))
    nonfinite = probe_run(tmp_path, "nan", [0.9, float("nan")])
    assert math.isnan(objective_value(nonfinite, "probe/plasticity@last"))
    assert math.isnan(objective_value(nonfinite, "probe/plasticity@mean"))
    assert objective_value(nonfinite, "probe/plasticity@0") == pytest.approx(0.9)
    # Optuna gets the worst value of its direction; a sweeper without one gets the NaN
    assert for_sweeper(math.nan, "maximize") == -math.inf
    assert for_sweeper(math.nan, ["minimize"]) == math.inf
    assert math.isnan(for_sweeper(math.nan, None))
    assert for_sweeper(0.25, "maximize") == 0.25
    with pytest.raises(ObjectiveError, match="2 directions"):
        for_sweeper(math.nan, ["maximize", "minimize"])


def hydra_sweeper(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra.sweeper


def test_optuna_replaces_the_summary_sweeper_cleanly():
    assert hydra_sweeper([])._target_.endswith("summary_sweeper.SummarySweeper")
    for overrides in (["hydra/sweeper=optuna"], ["experiment=tune_adam_plasticity"]):
        sweeper = hydra_sweeper(overrides)
        assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
        assert "max_batch_size" not in sweeper  # nothing of the basic sweeper's config is left
    preset = hydra_sweeper(["experiment=tune_adam_plasticity"])
    assert preset.direction == "maximize" and set(preset.params) == {"optimizer.b2", "optimizer.eps_root"}
    assert make_cfg(["experiment=tune_adam_plasticity"]).objective == "probe/plasticity@change"


@pytest.mark.slow
def test_optuna_without_an_objective_fails_before_training(tmp_path):
    res = run_cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=1",
            "optimizer.lr=interval(1e-4, 1e-3)",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *COMMON,
            *TINY["tune_adam_plasticity"],
        ],
        cwd=tmp_path,
    )
    assert res.returncode != 0
    assert "config key 'objective': the sweeper optimises each run's objective" in res.stderr
    assert not list((tmp_path / "sweep").glob("*/metrics/*.parquet"))


def test_tune_adam_plasticity_preset_runs_two_trials(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(
        [
            "-m",
            "experiment=tune_adam_plasticity",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep}",
            *COMMON,
            *TINY["tune_adam_plasticity"],
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    runs = sorted(p.parent for p in sweep.glob("*/run.json"))
    assert len(runs) == 2
    values = {}
    for run in runs:
        meta = json.loads((run / "run.json").read_text())
        assert meta["status"] == "complete"
        cfg = meta["config"]
        assert 0.9 <= cfg["optimizer.b2"] <= 0.9999 and 1e-9 <= cfg["optimizer.eps_root"] <= 1e-2
        assert cfg["optimizer.eps"] == 1e-9  # A.1's eps outside the root, not tuned
        values[(cfg["optimizer.b2"], cfg["optimizer.eps_root"])] = objective_value(run, "probe/plasticity@change")
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(values, key=values.get)
    assert result["best_value"] == pytest.approx(values[best], abs=0)
    assert (result["best_params"]["optimizer.b2"], result["best_params"]["optimizer.eps_root"]) == best


@pytest.mark.slow
def test_a_stopped_study_resumes_by_replaying_its_finished_trials(tmp_path):
    """The seeded sampler proposes the same trials again; finished runs return their objective at once."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=tune_adam_plasticity", f"hydra.sweep.dir={sweep}", *COMMON, *TINY["tune_adam_plasticity"]]
    first = run_cli(args + ["hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    again = run_cli(args + ["hydra.sweeper.n_trials=3"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert (again.stdout + again.stderr).count("is already complete") == 2
    assert len(list(sweep.glob("*/run.json"))) == 3


def test_the_objective_changes_no_number_so_a_restart_may_change_it(tmp_path):
    from plasticity_runner.lifecycle import RESTART_MAY_CHANGE
    from plasticity_runner.report import names as N

    assert "objective" in RESTART_MAY_CHANGE and "objective" in N.GROUP_IGNORE_KEYS
