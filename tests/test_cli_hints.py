"""The CLI says what to do next and refuses what it does not know: unknown override keys (with or
without +, with the nearest key by difflib), group-option typos inside lists, the end-of-sweep line
(complete / failed / skipped), the next commands, and Optuna's results file."""

from __future__ import annotations

import difflib

import pytest
from omegaconf import OmegaConf

from plasticity_runner.cli import config_dir
from plasticity_runner.next_steps import OPTUNA_RESULTS, OptunaResults, next_commands
from plasticity_runner.override_check import unknown_override_error

from .conftest import TINY
from .test_cli import run_cli


@pytest.mark.parametrize(
    "override, key, nearest",
    [
        ("+total_step=300", "total_step", "total_steps"),
        ("total_step=300", "total_step", "total_steps"),
        ("probe.step=3", "probe.step", "probe.steps"),
        ("+probe.stepz=3", "probe.stepz", "probe.steps"),
        ("seed=0,1 +agent.batchsize=3", "agent.batchsize", "agent.batch_size"),
    ],
)
def test_unknown_keys_are_refused_even_with_plus(override, key, nearest):
    error = unknown_override_error(override.split(), config_dir())
    assert error is not None and f"config key '{key}' is not in the config" in error
    # the suggestion is difflib's nearest key of the same parent
    assert f"did you mean `{nearest}`?" in error
    assert difflib.get_close_matches(key.rsplit(".", 1)[-1], [nearest.rsplit(".", 1)[-1]], n=1)


@pytest.mark.parametrize(
    "override",
    [
        "intervention=[layer_nrom]",
        "intervention=[none],[layer_nrom]",
        "+intervention=layer_nrom",
        "intervention=layer_nrom",
    ],
)
def test_a_group_option_typo_gets_the_options_alone_or_in_a_list(override):
    error = unknown_override_error([override], config_dir())
    assert error.startswith("config group 'intervention' has no option 'layer_nrom' (did you mean `layer_norm`?)")
    assert "its options: " in error and "shrink_perturb" in error and "none" in error


@pytest.mark.parametrize(
    "overrides",
    [
        ["total_steps=300", "probe.steps=3", "intervention=[layer_norm,redo]", "intervention.redo.tau=0.2"],
        ["+intervention=redo", "env=atari", "env.game=breakout"],
        ["experiment=fig6_quick", "seed=0,1", "hydra.sweep.dir=x", "hydra.job.chdir=true"],
        ["intervention.redo.tau=0.2"],  # an inactive intervention's option: left to its own check
    ],
)
def test_known_keys_pass(overrides):
    assert unknown_override_error(overrides, config_dir()) is None


def test_plus_typo_exits_2_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    res = run_cli([*TINY, f"hydra.run.dir={out}", "+total_step=300"], cwd=tmp_path)
    assert res.returncode == 2
    assert "config key 'total_step' is not in the config (did you mean `total_steps`?)" in res.stderr
    assert not out.exists()


def test_next_commands_name_the_directory_and_offline_wandb_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    text = next_commands(run)
    assert f"plasticity-report {run}" in text and f"load_sweep('{run}')" in text and "wandb" not in text
    (run / "wandb" / "offline-run-20250101_000000-abc").mkdir(parents=True)
    assert f"wandb sync {run}/wandb/offline-run-*" in next_commands(run)
    sweep = tmp_path
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in next_commands(sweep, sweep=True)


def test_optuna_sweep_says_where_its_results_are(tmp_path, capsys):
    cfg = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )
    (tmp_path / OPTUNA_RESULTS).write_text("best_value: 1.0\n")
    OptunaResults().on_multirun_end(cfg)
    out = capsys.readouterr().out
    assert f"best parameters and value: {tmp_path / OPTUNA_RESULTS}" in out and f"plasticity-report {tmp_path}" in out
    cfg.hydra.sweeper._target_ = "hydra_plugins.plasticity_runner_sweeper.summary_sweeper.SummarySweeper"
    OptunaResults().on_multirun_end(cfg)
    assert capsys.readouterr().out == ""  # the summary sweeper prints its own lines


@pytest.mark.slow
def test_sweep_end_line_counts_complete_failed_and_skipped(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "total_steps=20,-1", f"hydra.sweep.dir={sweep}"]  # -1: a config error, that job fails
    res = run_cli(args, cwd=tmp_path)
    assert res.returncode == 2
    assert (
        f"sweep done: 1 complete, 1 failed, 0 skipped (finished before this sweep) of 2 jobs; sweep directory: {sweep}"
        in res.stdout
    )
    again = run_cli(args, cwd=tmp_path)  # the finished run is not run again: skipped
    assert "sweep done: 0 complete, 1 failed, 1 skipped (finished before this sweep) of 2 jobs" in again.stdout
