"""The trainer end to end on a tiny budget: determinism, probes without side effects, metrics files."""

from __future__ import annotations

import json

import pandas as pd

from plasticity_runner import load_sweep
from plasticity_runner.metrics import SCHEMA
from plasticity_runner.trainer import train

from .conftest import make_cfg, on_device


def values(run_dir, exclude_phases=("timing",)):
    df = load_sweep(run_dir)
    df = df[~df.phase.isin(exclude_phases)]
    return df[["step", "phase", "metric", "value"]].reset_index(drop=True)


def test_run_writes_shards_per_pause(tmp_path, device):
    summary = train(make_cfg(on_device(device)), tmp_path)
    shards = sorted(p.name for p in (tmp_path / "metrics").iterdir())
    assert shards == [
        f"step_{s:010d}.parquet{c}" for s in (0, 20, 40) for c in ("", ".sha256")
    ]  # each with its SHA-256
    assert not list(tmp_path.rglob("*.tmp"))
    df = load_sweep(tmp_path)
    assert list(df.columns[: len(SCHEMA)]) == SCHEMA.names
    probe = df[(df.phase == "probe") & (df.metric == "probe_loss")]
    assert probe.step.tolist() == [0, 20, 40]
    train_rows = df[(df.phase == "train") & (df.metric == "td_loss")]
    assert train_rows.step.tolist() == [10, 20, 30, 40]
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["architecture.width"] == 32
    assert meta["device"] == str(device)
    assert df["architecture.width"].unique().tolist() == [32] and df["interventions"].unique().tolist() == ["none"]
    assert summary["steps"] == 40
    arrays = __import__("plasticity_runner").load_arrays(tmp_path)
    assert sorted(arrays) == [0, 20, 40] and arrays[20]["probe/curve_loss"].shape == (3, 2)


def test_same_seed_same_metrics(tmp_path):
    train(make_cfg(), tmp_path / "a")
    train(make_cfg(), tmp_path / "b")
    pd.testing.assert_frame_equal(values(tmp_path / "a"), values(tmp_path / "b"), check_exact=True)
    train(make_cfg(["seed=1"]), tmp_path / "c")
    assert not values(tmp_path / "a").equals(values(tmp_path / "c"))


def test_probes_do_not_change_training(tmp_path):
    train(make_cfg(), tmp_path / "probed")
    train(make_cfg(["probe.enabled=false"]), tmp_path / "unprobed")
    # the training metrics (td_loss, reward_mean, q_mean, epsilon) of both runs
    probed = values(tmp_path / "probed").query("phase == 'train'").reset_index(drop=True)
    unprobed = values(tmp_path / "unprobed").query("phase == 'train'").reset_index(drop=True)
    pd.testing.assert_frame_equal(probed, unprobed, check_exact=True)
    dynamics = probed.metric.str.startswith(("grad_norm_window_mean", "rel_param_change_window"))  # probes/dynamics.py
    assert len(probed[~dynamics]) == 24  # td_loss, loss_total, reward_mean, q_mean, epsilon, env_steps at 4 log points
    assert len(probed[dynamics]) == 32  # total and 3 layers of each, at 4 log points


def test_double_dqn_and_sparse_task_run(tmp_path):
    train(make_cfg(["agent=double_dqn", "env.task=sparse_reward", "env.num_envs=4", "optimizer=adam_tuned"]), tmp_path)
    df = load_sweep(tmp_path)
    assert df["agent.double_dqn"].unique().tolist() == [True]
    assert df[df.metric == "probe_loss"].value.notna().all()
