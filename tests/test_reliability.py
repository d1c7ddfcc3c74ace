"""Faults and bad input: non-finite config values, full disks at a checkpoint, corrupt checkpoints,
the run directory's lock, and a run's recorded end (``run.json`` status)."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plasticity_runner import checkpoint, load_sweep, status_file, trainer
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import MetricsWriteError, MissingShardsWarning
from plasticity_runner.report import data as report_data
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_resume import Crash, crash_at
from .test_trainer import values

# configs that between them hold every float key of the schema
FLOAT_CONFIGS = [
    [],
    ["optimizer=sgd"],
    ["optimizer=rmsprop"],
    ["architecture=vit"],
    ["intervention=[spectral_norm,weight_decay,shrink_perturb,redo,two_hot]"],
    ["env=memorization"],
    ["experiment=fig2_brownian"],  # env=brownian with the C_k loss the study takes
    ["env=atari"],
]


def float_keys(cfg) -> list[str]:
    out = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, float):
            out.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


@pytest.mark.parametrize("overrides", FLOAT_CONFIGS, ids=lambda o: ",".join(o) or "default")
def test_every_float_key_refuses_nan_and_inf(overrides):
    base = make_cfg(overrides, tiny=False)
    validate(base)  # the config itself is fine
    keys = float_keys(base)
    assert keys
    for key in keys:
        for bad in (float("nan"), float("inf"), float("-inf")):
            cfg = copy.deepcopy(base)
            OmegaConf.update(cfg, key, bad)
            with pytest.raises(ConfigError) as err:
                validate(cfg)
            assert err.value.key == key and "finite" in str(err.value), (key, bad, str(err.value))


def test_nan_learning_rate_through_the_cli(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, "optimizer.lr=nan", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "optimizer.lr" in res.stderr and "finite" in res.stderr
    assert not (tmp_path / "run" / "metrics").exists()


# ------------------------------------------------------------------ a full disk at a checkpoint


def test_runtime_error_of_torch_save_is_a_write_error(tmp_path, monkeypatch):
    """torch's writer raises RuntimeError (not OSError) on a full disk: exit-3 error, no partial file."""
    real = checkpoint.torch.save

    def failing(obj, f, *a, **k):
        if obj["step"] == 20:
            f.write(b"PK half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", failing)
    with pytest.raises(MetricsWriteError) as err:
        train(make_cfg(), tmp_path)
    assert "cannot write checkpoint" in str(err.value) and "step_0000000020" in str(err.value)
    assert not list(tmp_path.rglob("*.tmp"))
    assert [s for s, _ in checkpoint.complete_checkpoints(tmp_path)] == [0]
    assert not (tmp_path / "checkpoints" / "step_0000000020").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 200 KiB tmpfs: room for the first pause (shards and a ~100 KB checkpoint), not the second;
    the disk fills inside torch's writer, which raises RuntimeError (torch 2.x)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_at_a_checkpoint_through_the_cli(tmp_path, small_tmpfs):
    out = small_tmpfs / "run"
    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Error writing the run's outputs: cannot write" in res.stderr and "Traceback" not in res.stderr
    assert not list(out.rglob("*.tmp"))
    # only complete checkpoints are left: no directory of a checkpoint cut off by the full disk
    assert all((d / "COMPLETE").exists() for d in (out / "checkpoints").glob("step_*"))


# ------------------------------------------------------------------ corrupt checkpoints


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    train(make_cfg(), d)
    return values(d)


def crashed_at_33(run_dir, monkeypatch):
    """A run crashed at step 33: complete checkpoints of steps 0 and 20 (keep=2), shards 0 and 20."""
    with monkeypatch.context() as m:
        crash_at(m, 33)
        with pytest.raises(Crash):
            train(make_cfg(), run_dir)
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir)] == [0, 20]


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, monkeypatch, reference, caplog, damage):
    crashed_at_33(tmp_path, monkeypatch)
    state_file = tmp_path / "checkpoints" / "step_0000000020" / "state.pt"
    size = state_file.stat().st_size
    with open(state_file, "r+b") as f:
        if damage == "overwrite":  # 64 bytes inside the file, size unchanged
            f.seek(size // 2)
            f.write(bytes(range(64)))
        else:
            f.truncate(size - 100)
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        summary = train(make_cfg(), tmp_path)
    assert summary["status"] == "complete"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(state_file) in warned and "step 0" in warned and "discarded" in warned
    assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 0
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)


def test_every_checkpoint_corrupt_is_refused(tmp_path, monkeypatch):
    crashed_at_33(tmp_path, monkeypatch)
    for _, d in checkpoint.complete_checkpoints(tmp_path):
        (d / "state.pt").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CorruptCheckpointError) as err:
        train(make_cfg(), tmp_path)
    assert "step_0000000000/state.pt" in str(err.value) and "step_0000000020/state.pt" in str(err.value)
    assert (
        sorted(p.name for p in (tmp_path / "metrics").glob("*.parquet"))[-1] == "step_0000000020.parquet"
    )  # nothing deleted


def test_every_checkpoint_corrupt_through_the_cli_is_exit_3_naming_the_files(tmp_path, monkeypatch):
    crashed_at_33(tmp_path, monkeypatch)
    for _, d in checkpoint.complete_checkpoints(tmp_path):
        (d / "state.pt").write_bytes(b"garbage")
    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 3, res.stderr
    assert "Error reading the run's outputs" in res.stderr and "step_0000000020/state.pt" in res.stderr
    assert "Traceback" not in res.stderr


def test_checkpoint_without_checksum_is_not_loaded(tmp_path, monkeypatch, reference, caplog):
    crashed_at_33(tmp_path, monkeypatch)
    marker = tmp_path / "checkpoints" / "step_0000000020" / "COMPLETE"
    marker.write_text("")  # an empty marker: the state file cannot be verified
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        train(make_cfg(), tmp_path)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(marker) in warned and "is empty" in warned and "falling back" in warned
    assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 0
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)


# ------------------------------------------------------------------ the run directory's lock

HOLDER = """
import sys, time
from plasticity_runner.metrics import write_run_metadata
from plasticity_runner.status_file import StatusFile
with StatusFile(sys.argv[1]):
    if len(sys.argv) > 2:
        write_run_metadata(sys.argv[1], {"seed": 0}, extra={"status": "running"})
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder():
    """Start a process that holds a run directory's lock (and, if asked, a run.json saying running)."""
    procs = []

    def start(run_dir, write_meta=False):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run_dir), *(["meta"] if write_meta else [])],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_process_on_a_run_dir_is_refused_then_takes_over(tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    assert status_file.lock_held(run) is True
    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "in use by another process" in res.stderr and f"PID {first.pid}" in res.stderr
    assert str(run / "run.lock") in res.stderr
    assert not (run / "run.json").exists() and not (run / "metrics").exists()
    first.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock, the lock file stays
    first.wait()
    assert (run / "run.lock").exists() and status_file.lock_held(run) is False
    assert train(make_cfg(["total_steps=20"]), run)["status"] == "complete"
    assert json.loads((run / "run.lock").read_text())["pid"] == os.getpid()
    assert json.loads((run / "run.json").read_text())["pid"] == os.getpid()


def test_in_process_second_start_is_refused(tmp_path, holder):
    holder(tmp_path)
    with pytest.raises(status_file.RunDirBusyError) as err:
        train(make_cfg(), tmp_path)
    assert err.value.key == "hydra.run.dir"


def test_running_run_whose_process_is_gone_is_stale(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run, write_meta=True)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "running" and meta["pid"] == proc.pid
    assert status_file.effective_status(run, meta) == "running"
    assert report_data.load_report_data(tmp_path).runs.loc[0, "status"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert status_file.effective_status(run, meta) == "stale"
    row = report_data.load_report_data(tmp_path).runs.iloc[0]
    assert row["status"] == "stale" and "stale: its process is gone" in row["reason"]


# ------------------------------------------------------------------ how a run ended


def test_crash_records_the_error_and_the_report_says_so(tmp_path, monkeypatch):
    def oom(state, n):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nsecond line")

    with monkeypatch.context() as m:
        m.setattr(trainer, "prefill", oom)
        with pytest.raises(RuntimeError):
            train(make_cfg(), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "crashed"
    assert meta["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    row = report_data.load_report_data(tmp_path).runs.iloc[0]
    assert (
        row["status"] == "crashed" and "no metrics (status crashed: RuntimeError: CUDA out of memory" in row["reason"]
    )
    assert status_file.lock_held(tmp_path / "run") is False


def test_heartbeat_and_steps_done_of_a_crashed_run(tmp_path, monkeypatch):
    crashed_at_33(tmp_path, monkeypatch)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "crashed" and meta["steps_done"] == 30 and meta["heartbeat"]  # the last log point


def test_ctrl_c_records_interrupted_and_resumes(tmp_path, monkeypatch, reference):
    real = trainer.learn_step

    def interrupted(state, agent_cfg, epsilon):
        out = real(state, agent_cfg, epsilon)
        if state.step == 25:
            raise KeyboardInterrupt
        return out

    with monkeypatch.context() as m:
        m.setattr(trainer, "learn_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(make_cfg(), tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGINT"
    assert train(make_cfg(), tmp_path)["status"] == "complete"
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "complete" and "signal" not in meta
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)


def test_sigterm_through_the_cli_records_interrupted(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "plasticity_runner", *TINY, "total_steps=2000", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "step_0000000020" / "COMPLETE").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == -signal.SIGTERM  # checkpointed at its next log point, then the default action
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM", meta
    assert status_file.effective_status(out, meta) == "interrupted"


def test_refused_restart_leaves_the_record_unchanged(tmp_path):
    train(make_cfg(["total_steps=20"]), tmp_path)
    before = (tmp_path / "run.json").read_bytes()
    with pytest.raises(ConfigError):
        train(make_cfg(["total_steps=20", "agent.gamma=0.5"]), tmp_path)
    assert (tmp_path / "run.json").read_bytes() == before


def test_deleted_shard_is_flagged(tmp_path):
    run = tmp_path / "run"
    train(make_cfg(), run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sweep(tmp_path)  # a complete run: no warning
    (run / "metrics" / "step_0000000020.parquet").unlink()
    with pytest.warns(MissingShardsWarning, match=r"pause step\(s\) \[20\]"):
        df = load_sweep(tmp_path)
    assert 20 not in set(df.step) and 40 in set(df.step)
    assert report_data.load_report_data(tmp_path).runs.iloc[0]["missing_steps"] == [20]
