"""The real entry points (`plasticity-run`, `python -m plasticity_runner`) on tiny budgets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from plasticity_runner import load_sweep

from .conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, cwd, module=True):
    cmd = [sys.executable, "-m", "plasticity_runner"] if module else ["plasticity-run"]
    return subprocess.run(cmd + list(args), cwd=cwd, capture_output=True, text=True, timeout=600)


def test_run_from_another_directory(tmp_path):
    out = tmp_path / "run"
    res = run_cli(TINY + [f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"outputs in {out}" in res.stdout
    assert len(list((out / "metrics").glob("*.parquet"))) == 3
    # what to do next, with this run's directory
    assert f"plasticity-report {out}" in res.stdout and f"load_sweep('{out}')" in res.stdout
    assert "wandb sync" not in res.stdout  # no W&B run here


@pytest.mark.parametrize(
    "override, key",
    [
        ("architecture.widht=3", "widht"),  # typo
        ("total_steps=abc", "total_steps"),  # wrong type
        ("env.dataset=imagenet", "dataset"),  # not one of the options
        ("env=nosuchenv", "nosuchenv"),  # unknown group option
        ("total_steps=-5", "total_steps"),  # range
        ("probe.num_inputs=100000", "probe.num_inputs"),  # more probe inputs than the replay holds
        ("probe.batch_size=1000", "probe.batch_size"),  # probe batch larger than its input set
    ],
)
def test_bad_config_fails_naming_the_key(tmp_path, override, key):
    out = tmp_path / "run"
    res = run_cli(TINY + [f"hydra.run.dir={out}", override], cwd=tmp_path)
    assert res.returncode != 0
    assert key in res.stderr
    assert not (out / "metrics").exists() and not (out / "run.json").exists()


def test_multirun_loads_as_one_frame(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *TINY, "total_steps=20", "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (
        f"plasticity-run: sweep done: 2 complete, 0 failed, 0 skipped (finished before this sweep) of 2 jobs; "
        f"sweep directory: {sweep}"
    ) in res.stdout
    assert res.stdout.count("plasticity-report ") == 1 and f"plasticity-report {sweep}" in res.stdout
    df = load_sweep(sweep)
    assert sorted(df.seed.unique()) == [0, 1] and df.run_id.nunique() == 2
    per_run = df[df.metric == "probe_loss"].groupby("seed").step.apply(list)
    assert per_run.tolist() == [[0, 20], [0, 20]]


def test_console_script_is_the_same_app(tmp_path):
    res = run_cli(["--cfg", "job"], cwd=tmp_path, module=False)
    assert res.returncode == 0, res.stderr
    assert "probe:" in res.stdout and "every_steps: 5000" in res.stdout


def test_wheel_ships_the_configs(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("plasticity_runner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "plasticity_runner"
    sources = {f"plasticity_runner/{p.relative_to(package)}" for p in package.rglob("*.py")}
    sources |= {str(p.relative_to(REPO)) for p in (REPO / "hydra_plugins").rglob("*.py")}
    configs = {
        f"plasticity_runner/configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml")
    }
    assert "plasticity_runner/configs/config.yaml" in configs
    assert sources <= names, sorted(sources - names)
    assert configs <= names, sorted(configs - names)
