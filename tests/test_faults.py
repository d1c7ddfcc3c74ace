"""Bad outputs and divergence: clear errors, no partial shards, a diverged run ends cleanly."""

from __future__ import annotations

import errno
import json

import pytest

from plasticity_runner import load_sweep, run_files
from plasticity_runner.metrics import MetricsWriteError
from plasticity_runner.trainer import train

from .conftest import make_cfg


def test_full_disk_leaves_no_partial_shard(tmp_path, monkeypatch):
    real = run_files.pq.write_table
    calls = {"n": 0}

    def failing(table, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the shard of the second pause
            with open(path, "wb") as f:
                f.write(b"PAR1 half a shard")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, path, *a, **k)

    monkeypatch.setattr(run_files.pq, "write_table", failing)
    with pytest.raises(MetricsWriteError) as err:
        train(make_cfg(), tmp_path)
    assert "No space left" in str(err.value) and "step_0000000020.parquet" in str(err.value)
    assert not list(tmp_path.rglob("*.tmp"))
    df = load_sweep(tmp_path)  # only the complete shard of step 0 is visible
    assert sorted(df.step.unique()) == [0]


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MetricsWriteError) as err:
        train(make_cfg(), blocker / "run")
    assert str(blocker / "run") in str(err.value)


@pytest.mark.parametrize("mode", ["stop", "continue"])
def test_divergence_is_recorded(tmp_path, mode):
    # plain SGD with an absurd learning rate drives the TD loss to inf/NaN within a few steps
    cfg = make_cfg(["optimizer=sgd", "optimizer.lr=1e12", f"on_divergence={mode}", "probe.enabled=false"])
    summary = train(cfg, tmp_path)
    df = load_sweep(tmp_path)
    diverged = df[df.metric == "diverged"]
    assert len(diverged) >= 1 and diverged.step.min() == 10  # the first log point
    meta = json.loads((tmp_path / "run.json").read_text())
    if mode == "stop":
        assert summary["status"] == meta["status"] == "diverged" and summary["steps"] == 10
        assert train(cfg, tmp_path)["already_finished"]  # a restart does not train a diverged run on
    else:  # trained on to the end, but the record says it diverged, and where
        assert summary["status"] == meta["status"] == "diverged" and summary["steps"] == meta["steps_done"] == 40
        assert meta["diverged_at_step"] == 10 and "on_divergence=continue" in meta["end_reason"]


def test_full_disk_at_the_shard_leaves_neither_arrays_nor_shard(tmp_path, monkeypatch):
    real = run_files.pq.write_table
    calls = {"n": 0}

    def failing(table, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the shard of the second pause, after its arrays file was written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, path, *a, **k)

    monkeypatch.setattr(run_files.pq, "write_table", failing)
    with pytest.raises(MetricsWriteError):
        train(make_cfg(), tmp_path)
    assert sorted(p.name for p in (tmp_path / "arrays").iterdir()) == ["step_0000000000.npz"]
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == [
        "step_0000000000.parquet",
        "step_0000000000.parquet.sha256",
    ]


def test_full_disk_at_the_checksum_leaves_neither(tmp_path, monkeypatch):
    real = run_files.atomic_write_text

    def failing(path, text):
        if str(path).endswith("step_0000000020.parquet.sha256"):
            raise MetricsWriteError(f"cannot write {path}: [Errno 28] No space left on device")
        return real(path, text)

    monkeypatch.setattr(run_files, "atomic_write_text", failing)
    with pytest.raises(MetricsWriteError) as err:
        train(make_cfg(), tmp_path)
    assert "step_0000000020.parquet.sha256" in str(err.value)
    assert not list(tmp_path.rglob("step_0000000020*")) and not list(tmp_path.rglob("*.tmp"))
