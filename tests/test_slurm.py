"""Sweeps through Hydra's submitit launchers: SLURM (a real cluster), local processes, preemption.

The SLURM tests submit to a running cluster; ``.ci/run`` starts a single-node one on localhost with
``../shared/slurm/start-local-slurm.sh`` (as root) and they skip, saying why, where there is none.
The preemption-guard and local-launcher tests need no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticity_runner import load_sweep
from plasticity_runner.preemption import PreemptionGuard
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg, write_idx
from .test_trainer import values

# TINY without the two costly diagnostics, one torch thread per run (2 runs share 2 cores here)
FAST = ["torch_threads=1", "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]
# the slurm launcher sized for the CPU-only local cluster (no GPU GRES); timeout_min >= 60 so that
# submitit classes a USR2 as a preemption, not a time-out
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=60",
]
# long enough that a signal sent after the checkpoint of step 100 lands mid-run
LONGER = ["total_steps=600", "probe.every_steps=100", "seed=0"]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


def cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here (None: a cluster is up and usable)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch not on PATH); .ci/run starts a local cluster when run as root"
    if os.geteuid() != 0:
        return "not root: the local test cluster (../shared/slurm/start-local-slurm.sh) runs jobs as root only"
    try:
        nodes = _run(["sinfo", "-h", "-o", "%t"], timeout=20)
        if nodes.returncode != 0:
            return f"SLURM cluster not up (sinfo: {nodes.stderr.strip() or nodes.returncode})"
        if not any(s.rstrip("*~#") in {"idle", "mix", "alloc", "comp"} for s in nodes.stdout.split()):
            return f"SLURM cluster has no usable node (sinfo states: {nodes.stdout.split()})"
        acct = _run(["sacct", "-n", "-X", "-S", "now"], timeout=20)
        if acct.returncode != 0:
            return "SLURM accounting is off (sacct fails): a killed job would make `hydra -m` wait forever"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM cluster not answering ({exc})"
    return None


_PROBLEM = cluster_problem()
needs_cluster = pytest.mark.skipif(_PROBLEM is not None, reason=f"SLURM tests skipped: {_PROBLEM}")


def job_ids(sweep: Path) -> list[str]:
    """Slurm job ids of a sweep's runs: ``<job>`` for a single run, ``<array>_<task>`` in an array."""
    root = sweep / ".submitit"
    found = root.glob("*/*_submitted.pkl") if root.exists() else []
    return sorted(p.parent.name for p in found if p.name == f"{p.parent.name}_submitted.pkl")


@pytest.fixture
def sweep_dir(tmp_path):
    """A sweep directory; jobs submitted from it are cancelled at teardown if any is still queued."""
    sweep = tmp_path / "sweep"
    yield sweep
    ids = job_ids(sweep)
    if ids and shutil.which("scancel"):
        subprocess.run(["scancel", *sorted({i.split("_")[0] for i in ids})], capture_output=True, timeout=30)


def corrupt_mnist(root: Path) -> Path:
    """A data directory whose MNIST passes the check before a run (both files, valid labels) and whose
    images file is garbage: the run that reads it raises ``DatasetFileError`` (a crash, not a config error)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    return root


def multirun_cmd(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "plasticity_runner", "-m", *TINY, *FAST, *overrides, f"hydra.sweep.dir={sweep}"]


def sacct_states(job: str, done, timeout: float = 20.0) -> list[str]:
    """States of every record of ``job`` (requeued ones too), polled until ``done(states)`` holds."""
    deadline = time.time() + timeout
    while True:
        out = _run(["sacct", "-n", "-X", "-D", "-P", "-j", job, "-o", "State"], timeout=20).stdout
        states = [line.split()[0] for line in out.splitlines() if line.strip()]
        if done(states) or time.time() > deadline:
            return states
        time.sleep(0.5)


def job_logs(sweep: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").rglob("*_log.*")))


# ----------------------------------------------------------------------------------------- SLURM


@needs_cluster
def test_slurm_multirun_completes(sweep_dir):
    res = _run(multirun_cmd(sweep_dir, *SLURM, "seed=0,1"), cwd=sweep_dir.parent, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    for sub in ("0", "1"):
        meta = json.loads((sweep_dir / sub / "run.json").read_text())
        assert meta["status"] == "complete" and meta["steps_done"] == 40
    df = load_sweep(sweep_dir)
    assert df.run_dir.nunique() == 2 and sorted(df.seed.unique()) == [0, 1]
    ids = job_ids(sweep_dir)
    assert len(ids) == 2 and all("_" in i for i in ids), ids  # one job array, one task per run
    states = sacct_states(ids[0].split("_")[0], lambda st: len(st) == 2 and set(st) == {"COMPLETED"})
    assert states == ["COMPLETED", "COMPLETED"], states


@needs_cluster
def test_preempted_job_is_requeued_and_resumes(sweep_dir, tmp_path):
    cmd = multirun_cmd(sweep_dir, *SLURM, *LONGER)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = sweep_dir / "0" / "checkpoints" / "step_0000000100" / "COMPLETE"
        deadline = time.time() + 300
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), "the job never wrote its first checkpoint past step 0"
        (job,) = job_ids(sweep_dir)
        # what Slurm sends on preemption (and signal_delay_s before a time-out) to submitit's process
        sent = _run(["scancel", "--signal=USR2", job], timeout=30)
        assert sent.returncode == 0, sent.stderr
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    logs = job_logs(sweep_dir)
    assert "this job is preempted" in logs and f"Requeued job {job}" in logs, logs[-3000:]
    assert logs.count("Starting with JobEnvironment") >= 2  # the same job id ran again
    states = sacct_states(job, lambda st: "REQUEUED" in st and st[-1:] == ["COMPLETED"])
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states
    meta = json.loads((sweep_dir / "0" / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["resumed_from_step"] is not None  # resumed from a checkpoint, not restarted from scratch
    reference = tmp_path / "reference"
    train(make_cfg([*FAST, *LONGER]), reference)
    pd.testing.assert_frame_equal(values(sweep_dir / "0"), values(reference), check_exact=True)


@needs_cluster
def test_failing_slurm_job_fails_the_multirun_loudly(sweep_dir):
    # one good run (digits ignores data_dir) and one whose MNIST images file is corrupt: refused
    # at its start as a config error naming the key and the file (exit 2)
    data = corrupt_mnist(sweep_dir.parent / "data")
    res = _run(
        multirun_cmd(sweep_dir, *SLURM, "env.dataset=digits,mnist", f"env.data_dir={data}"),
        cwd=sweep_dir.parent,
        timeout=400,
    )
    why = "config key 'env.data_dir'"
    assert res.returncode != 0
    assert why in res.stderr and "train-images-idx3-ubyte" in res.stderr
    assert json.loads((sweep_dir / "0" / "run.json").read_text())["status"] == "complete"
    failed = [i for i in job_ids(sweep_dir) if i.endswith("_1")]
    assert failed, job_ids(sweep_dir)
    job_log = "".join(p.read_text() for p in (sweep_dir / ".submitit" / failed[0]).glob(f"{failed[0]}_0_log.*"))
    assert why in job_log, job_log[-2000:]
    assert why in (sweep_dir / "1" / "cli.log").read_text()


@needs_cluster
def test_config_error_in_one_slurm_job_fails_it_alone(sweep_dir):
    res = _run(multirun_cmd(sweep_dir, *SLURM, "probe.num_targets=-1,2"), cwd=sweep_dir.parent, timeout=400)
    assert res.returncode == 2, res.stderr[-3000:]  # the failed run's status: a config error
    assert "1 of 2 runs failed" in res.stderr and "#0 probe.num_targets=-1" in res.stderr
    assert "UncompletedJobError" not in res.stderr
    assert json.loads((sweep_dir / "1" / "run.json").read_text())["status"] == "complete"
    assert "probe.num_targets" in (sweep_dir / "0" / "cli.log").read_text()


# ------------------------------------------------------------------------------ local launcher


def test_local_launcher_runs_in_parallel_and_fails_loudly(sweep_dir):
    data = corrupt_mnist(sweep_dir.parent / "data")
    res = _run(
        multirun_cmd(sweep_dir, "hydra/launcher=local", "env.dataset=digits,mnist", f"env.data_dir={data}"),
        cwd=sweep_dir.parent,
        timeout=400,
    )
    # the corrupt file is refused at start as a config error naming the key and the file (exit 2)
    why = "config key 'env.data_dir'"
    assert res.returncode != 0 and why in res.stderr and "train-images-idx3-ubyte" in res.stderr
    assert json.loads((sweep_dir / "0" / "run.json").read_text())["status"] == "complete"
    log = (sweep_dir / "1" / "cli.log").read_text()
    assert "run failed" in log and why in log
    assert why in job_logs(sweep_dir)


# ------------------------------------------------------------------------------ preemption guard


@pytest.fixture
def usr2_recorder():
    """A Python handler on SIGUSR2 (as submitit installs one) that records its calls."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.01)
    return predicate()


def test_guard_defers_the_signal_to_the_safe_point(usr2_recorder):
    order = []
    with PreemptionGuard(signals=[signal.SIGUSR2]) as guard:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert wait_for(lambda: guard.requested)
        assert usr2_recorder == []  # not handed on yet: the loop goes on to its next log point
        guard.stop(save=lambda: order.append("saved"))
        order.append("after")
        assert usr2_recorder == [signal.SIGUSR2] and order == ["saved", "after"]
        assert not guard.requested  # armed again when the previous handler returns
    assert signal.getsignal(signal.SIGUSR2) is not guard._on_signal  # restored


def test_guard_hands_on_at_a_second_signal_or_after_max_wait(usr2_recorder):
    with PreemptionGuard(signals=[signal.SIGUSR2, signal.SIGTERM]) as guard:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert wait_for(lambda: guard.requested)
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm's SIGTERM at the end of the grace time: stop now
        assert wait_for(lambda: usr2_recorder == [signal.SIGUSR2])
    with PreemptionGuard(signals=[signal.SIGUSR2], max_wait_s=0.2) as guard:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert wait_for(lambda: guard.requested)
        assert wait_for(lambda: len(usr2_recorder) == 2)  # no safe point in time: handed on anyway
        assert not guard.requested


def test_guard_with_default_action_ends_the_process(tmp_path):
    code = (
        "import os, signal, time\n"
        "from plasticity_runner.preemption import PreemptionGuard\n"
        "with PreemptionGuard() as g:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    while not g.requested: time.sleep(0.01)\n"
        "    g.stop(save=lambda: open('saved', 'w').close())\n"
        "    print('not reached')\n"
    )
    res = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert res.returncode == -signal.SIGTERM and "not reached" not in res.stdout
    assert (tmp_path / "saved").exists()


def test_guard_leaves_ignored_signals_alone():
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with PreemptionGuard(signals=[signal.SIGUSR2]) as guard:
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
            assert not guard.requested
    finally:
        signal.signal(signal.SIGUSR2, previous)
