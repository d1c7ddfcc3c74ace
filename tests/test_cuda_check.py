"""scripts/cuda_check.sh: its dry run lists every step, each skipped with a reason (any machine),
and the comparisons it makes of the three runs work on CPU runs of the same layout."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from plasticity_runner.trainer import train

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("cuda_check", ROOT / "scripts" / "cuda_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_every_step_skipped_with_a_reason(tmp_path):
    out = tmp_path / "report" / "cuda_check.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cuda_check.sh"), "--dry-run", "--out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == [
        "tests",
        "run_eager",
        "run_compile",
        "run_cuda_graphs",
        "agreement",
        "bench",
        "steps_per_s_goal",
        "run_step_graph",
        "run_step_graph_nature_cnn",
        "step_graph_agreement",
        "step_graph_steps_per_s",
        "population",
        "population_goal",
    ]
    for name, entry in steps.items():
        assert entry["status"] == "skipped" and entry["reason"].startswith("dry run; would "), name
        assert name in proc.stdout
    assert "speed.cuda_graphs=true" in steps["run_cuda_graphs"]["command"]
    assert "speed.step_graph=true" in steps["run_step_graph"]["command"]
    assert "architecture=nature_cnn" in steps["run_step_graph_nature_cnn"]["command"]
    assert "--device cuda --quick" in steps["bench"]["command"]
    assert "population.seeds=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]" in steps["population"]["command"]
    assert report["dry_run"] and report["checks_failed"] == [] and report["goals_missed"] == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["cuda_check.json"]  # nothing else written


def test_without_a_gpu_a_real_run_skips_everything_and_exits_2(tmp_path):
    if torch.cuda.is_available():
        return  # the real check would run here (scripts/cuda_check.sh on a GPU machine)
    out = tmp_path / "cuda_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cuda_check.py"), "--out", str(out), "--work", str(tmp_path / "work")],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    steps = json.loads(out.read_text())["steps"]
    assert all(e["status"] == "skipped" and e["reason"].startswith("no CUDA device") for e in steps.values())


def test_agreement_and_steps_per_s_read_the_runs(tmp_path):
    cc = load_script()
    for name in cc.VARIANTS:  # three identical CPU runs stand for eager, compile and graphs
        train(make_cfg(), tmp_path / name)
    result = cc.agreement(tmp_path)
    assert result["status"] == "passed", result
    assert len(result["checks"]) == 2 * len(cc.TOLERANCES) and all(c["rel_diff"] == 0 for c in result["checks"])
    goal = cc.goal(tmp_path)
    assert goal["status"] == "passed" and goal["goal_met"] is (goal["measured"] >= cc.GOAL_STEPS_PER_S)
    assert len(goal["steps_per_s"]["run_eager"]["windows"]) == 4
    # a run that differs (another seed) fails the comparison, naming the metric and the run
    train(make_cfg(["seed=1"]), tmp_path / "other" / "run_compile")
    for name in ("run_eager", "run_cuda_graphs"):
        (tmp_path / "other" / name).symlink_to(tmp_path / name)
    bad = cc.agreement(tmp_path / "other")
    assert bad["status"] == "failed" and "probe_loss@0 of run_compile" in bad["reason"]
    # a "compiled" run whose run.json records no compiled loss (here: an eager run) fails its step
    assert cc.fast_path_problem(tmp_path / "run_eager", "run_eager") is None
    problem = cc.fast_path_problem(tmp_path / "run_compile", "run_compile")
    assert "torch.compile(mode=default)" in problem and "'loss': None" in problem


def test_a_check_killed_mid_way_keeps_its_finished_steps(tmp_path, monkeypatch):
    """The JSON is rewritten after every step: a check stopped from outside (here: interrupted while
    its second step runs) leaves the steps it finished, marked ``finished: false``."""
    cc = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "fake GPU")
    calls = []

    def run_command(cmd, limit_s, log_path):
        calls.append(limit_s)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"status": "passed", "seconds": 0.0}

    monkeypatch.setattr(cc, "run_command", run_command)
    out = tmp_path / "cc.json"
    try:
        cc.main(["--out", str(out), "--work", str(tmp_path / "work"), "--budget-s", "100"])
    except KeyboardInterrupt:
        pass
    report = json.loads(out.read_text())
    assert report["finished"] is False and report["budget_s"] == 100
    assert list(report["steps"]) == ["tests"] and report["steps"]["tests"]["status"] == "passed"
    assert calls[0] <= 100  # the first step's limit is cut to the budget


def test_the_step_graph_section_reads_its_runs(tmp_path):
    """``step_graph_agreement`` compares the step-graph run with the eager one (here: the same CPU
    run under both names), ``step_graph_steps_per_s`` reads both step-graph runs against their
    goals, and a step-graph run whose ``run.json`` does not record the CUDA graph fails its step."""
    cc = load_script()
    train(make_cfg(), tmp_path / "run_eager")
    for name in cc.STEP_GRAPH_RUNS:
        (tmp_path / name).symlink_to(tmp_path / "run_eager")
    result = cc.agreement(tmp_path, ("run_step_graph",))
    assert result["status"] == "passed" and len(result["checks"]) == len(cc.TOLERANCES)
    goal = cc.step_graph_goal(tmp_path)
    assert goal["status"] == "passed" and set(goal["measured"]) == set(cc.STEP_GRAPH_RUNS)
    assert goal["goal_met"] is all(goal["measured"][n] >= g for n, g in cc.STEP_GRAPH_GOALS.items())
    problem = cc.fast_path_problem(tmp_path / "run_step_graph", "run_step_graph")
    assert "mode=reduce-overhead) on cuda" in problem and "None" in problem
