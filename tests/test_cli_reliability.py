"""Bad input and unusable outputs through the real CLI: one clear error naming the key or file, the
promised exit status, a sweep that goes on past a failed run, and a run's record that a refused
start leaves alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.plasticity_runner_sweeper.summary_sweeper import summary
from plasticity_runner.hydra_glue import RunFailed
from plasticity_runner.metrics import RunFileError, load_sweep
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_cli import run_cli

# TINY without the two costly diagnostics and with a short run: each CLI call takes a few seconds
FAST = [*TINY, "total_steps=20", "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]


def record(run_dir: Path) -> dict[str, bytes]:
    """The bytes of a run's record: run.json and Hydra's .hydra/*.yaml."""
    files = [run_dir / "run.json", *sorted((run_dir / ".hydra").glob("*"))]
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in files if f.is_file()}


# ----------------------------------------------------------------------------- one bad job of a sweep


def test_failed_run_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *FAST, "probe.num_targets=-1,2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]  # the failed run's status: a config error
    assert json.loads((sweep / "1" / "run.json").read_text())["status"] == "complete"  # job 1 ran
    assert not (sweep / "0" / "run.json").exists()
    assert "1 of 2 runs failed" in res.stderr
    assert "#0 probe.num_targets=-1" in res.stderr and "'probe.num_targets': must be > 0" in res.stderr
    assert str(sweep / "0") in res.stderr
    assert "Traceback" not in res.stderr  # a config error is a message, not a crash
    assert "probe.num_targets" in (sweep / "0" / "cli.log").read_text()  # the run's own log says why


def test_failed_run_does_not_stop_a_local_launcher_sweep(tmp_path):
    # submitit's local launcher: each run is its own process, as under SLURM
    sweep = tmp_path / "sweep"
    res = run_cli(
        ["-m", *FAST, "hydra/launcher=local", "probe.num_targets=-1,2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert json.loads((sweep / "1" / "run.json").read_text())["status"] == "complete"
    assert "1 of 2 runs failed" in res.stderr and "#0 probe.num_targets=-1" in res.stderr
    assert "UncompletedJobError" not in res.stderr


def _failed(num: int, overrides: list[str], exc: BaseException) -> JobReturn:
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=exc)
    ret.hydra_cfg = OmegaConf.create({"hydra": {"job": {"num": num}, "runtime": {"output_dir": f"/s/{num}"}}})
    return ret


def test_summary_exit_status_and_lines():
    config_error = _failed(0, ["seed=0", "probe.num_targets=-1"], RunFailed(2, "Error in config: x"))
    output_error = _failed(1, ["seed=1", "probe.num_targets=2"], RunFailed(3, "Error writing the run's outputs: y"))
    crash = _failed(2, ["seed=2", "probe.num_targets=2"], ValueError("boom\nsecond line"))
    assert summary([config_error], {"probe.num_targets"}, 3)[0] == 2  # one cause: its status
    assert summary([config_error, config_error], {"probe.num_targets"}, 3)[0] == 2
    code, text = summary([config_error, output_error, crash], {"seed"}, 3)
    assert code == 1  # mixed causes
    assert text.splitlines()[0].startswith("plasticity-run: 3 of 3 runs failed")
    assert "#0 seed=0  ->  exit 2: Error in config: x" in text and "/s/0" in text
    assert "#2 seed=2  ->  ValueError: boom" in text and "second line" not in text


def test_run_failed_pickles():
    import pickle

    exc = pickle.loads(pickle.dumps(RunFailed(3, "Error writing the run's outputs: z")))
    assert exc.exit_code == 3 and str(exc) == "Error writing the run's outputs: z"


# ----------------------------------------------------------------------------- the run's record


def test_refused_restart_leaves_the_record_alone(tmp_path):
    out = tmp_path / "run"
    assert run_cli([*FAST, f"hydra.run.dir={out}"], cwd=tmp_path).returncode == 0
    assert "seed: 0" in (out / ".hydra" / "config.yaml").read_text().splitlines()  # written for the run
    assert (out / ".hydra" / "hydra.yaml").exists() and (out / ".hydra" / "overrides.yaml").exists()
    before = record(out)
    res = run_cli([*FAST, "seed=7", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 2 and "seed: 0 -> 7" in res.stderr
    assert record(out) == before  # .hydra/config.yaml still says seed 0, as run.json and the data do
    res = run_cli([*FAST, "probe.num_targets=-1", f"hydra.run.dir={out}"], cwd=tmp_path)  # an invalid config
    assert res.returncode == 2 and record(out) == before


# ----------------------------------------------------------------------------- unusable outputs


@pytest.mark.parametrize("where", ["file", "proc"])
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_unusable_output_directory_exits_3(tmp_path, where, mode):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = blocker if where == "file" else Path("/proc/plasticity-runner-test/run")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    res = run_cli([*(["-m"] if mode == "multirun" else []), *FAST, f"{key}={target}"], cwd=tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Error writing the run's outputs" in res.stderr and str(target) in res.stderr and key in res.stderr
    assert "Traceback" not in res.stderr
    assert blocker.read_text() == "not a directory"


def test_corrupt_run_json_names_the_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"run_id": "x", "config": {')  # cut short
    res = run_cli([*FAST, f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Error reading the run's outputs" in res.stderr and str(out / "run.json") in res.stderr
    assert "Traceback" not in res.stderr
    with pytest.raises(RunFileError, match="run.json"):
        load_sweep(out)
    (out / "run.json").write_text("[1, 2]")  # valid JSON, not a run's record
    with pytest.raises(RunFileError, match="expected a JSON object"):
        load_sweep(out)


# ----------------------------------------------------------------------------- bad input named


def test_negative_torch_threads_names_the_key(tmp_path):
    out = tmp_path / "run"
    res = run_cli([*FAST, "torch_threads=-1", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 2 and "'torch_threads': must be > 0" in res.stderr
    assert not out.exists() or not (out / "run.json").exists()


@pytest.mark.parametrize(
    "overrides, name, hint",
    [
        (["intervention.layer_norm.foo=1"], "layer_norm", "intervention=[layer_norm]"),
        (["intervention.redo.tau=0.2"], "redo", "intervention=[redo]"),
        (["experiment=atari_ln", "intervention.redo.tau=0.2"], "redo", "intervention=[layer_norm,redo]"),
        (["-m", "intervention.redo.tau=0.1,0.2"], "redo", "+intervention=redo"),
    ],
)
def test_option_of_an_inactive_intervention(tmp_path, overrides, name, hint):
    res = run_cli(
        [*overrides, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"the intervention '{name}' is not active" in res.stderr and hint in res.stderr
    assert "AssertionError" not in res.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_option_of_an_active_intervention_is_set(tmp_path):
    res = run_cli(["+intervention=redo", "intervention.redo.tau=0.2", "--cfg", "job"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert OmegaConf.create(res.stdout).intervention.redo.tau == 0.2


# ----------------------------------------------------------------------------- restart keys


def test_data_dir_may_change_on_restart(tmp_path):
    # a requeued job may find its data staged to another scratch path; the experiment is the same
    fast = [
        "probe.enabled=false",
        "diagnostics.statistics.enabled=false",
        "diagnostics.curvature.enabled=false",
        "diagnostics.gradcov.enabled=false",
        "total_steps=20",
    ]
    first = train(make_cfg([*fast, "env.data_dir=/scratch/job1"]), tmp_path)
    again = train(make_cfg([*fast, "env.data_dir=/scratch/job2"]), tmp_path)
    assert again["already_finished"] and again["run_id"] == first["run_id"]
