"""Faults and bad input: non-finite config values, full disks at a checkpoint, corrupt checkpoints,
the run directory's lock, and a run's recorded end (``run.json`` status)."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plasticity_runner import checkpoint, trainer
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import MetricsWriteError
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_trainer import values

# configs that between them hold every float key of the schema
FLOAT_CONFIGS = [
    [],
    ["optimizer=sgd"],
    ["optimizer=rmsprop"],
    ["architecture=vit"],
    ["intervention=[spectral_norm,weight_decay,shrink_perturb,redo,two_hot]"],
    ["env=memorization"],
    ["env=brownian"],
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
        capture_output=True, text=True, timeout=300,
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
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
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
    real = trainer.train_step

    def crashing(state, agent_cfg, epsilon):
        out = real(state, agent_cfg, epsilon)
        if state.step == 33:
            raise Crash()
        return out

    with monkeypatch.context() as m:
        m.setattr(trainer, "train_step", crashing)
        with pytest.raises(Crash):
            train(make_cfg(), run_dir)
    assert [s for s, _ in checkpoint.complete_checkpoints(run_dir)] == [0, 20]


class Crash(Exception):
    pass


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
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir())[-1] == "step_0000000020.parquet"  # nothing deleted


def test_checkpoint_without_checksum_loads_with_a_warning(tmp_path, monkeypatch, reference, caplog):
    crashed_at_33(tmp_path, monkeypatch)
    marker = tmp_path / "checkpoints" / "step_0000000020" / "COMPLETE"
    marker.write_text("")  # an empty marker, as older versions wrote
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        train(make_cfg(), tmp_path)
    assert any("no checksum" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 20
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)
