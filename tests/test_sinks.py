"""Logging sinks (``logger=[tensorboard]``, ``logger=[wandb]``): what they hold, read back with the
real libraries, equals the parquet rows; after a killed-and-resumed run too; a failing sink never
costs a parquet metric."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from plasticity_runner import sinks
from plasticity_runner.cli import compose_config
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import load_run
from plasticity_runner.sinks.tensorboard import TensorBoardSink
from plasticity_runner.sinks.wandb import wandb_grouping
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_resume import Crash, crash_at
from .test_trainer import values

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch):
    """W&B offline whatever the caller's environment says, and its files kept in the test's dirs."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    train(make_cfg(), d)
    return values(d)


def parquet_rows(run_dir: Path) -> pd.DataFrame:
    """The run's parquet rows as ``tag, step, value`` (tag ``phase/metric``), sorted."""
    frame = load_run(run_dir)
    out = pd.DataFrame(
        {"tag": frame.phase + "/" + frame.metric, "step": frame.step.astype("int64"), "value": frame.value}
    )
    return out.sort_values(["tag", "step"], ignore_index=True)


def tensorboard_rows(log_dir: Path) -> pd.DataFrame:
    """The scalars TensorBoard's readers see (``tbparse``, which reads with ``EventAccumulator``)."""
    from tbparse import SummaryReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tbparse's own pandas deprecations
        frame = SummaryReader(str(log_dir)).scalars
    out = pd.DataFrame({"tag": frame.tag.astype(str), "step": frame.step.astype("int64"), "value": frame.value})
    return out.sort_values(["tag", "step"], ignore_index=True)


def assert_tensorboard_equals_parquet(run_dir: Path, min_rows: int = 50) -> None:
    expected = parquet_rows(run_dir)
    expected["value"] = expected.value.astype(np.float32).astype(np.float64)  # TensorBoard stores float32
    got = tensorboard_rows(run_dir / "tensorboard")
    assert len(expected) > min_rows
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


# ------------------------------------------------------------------------------- W&B's run files


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (``run-<id>.wandb``): a 7-byte header (``:W&B``,
    0xBEE1, version 0), then LevelDB-log framing (32 KiB blocks; records of 7-byte headers:
    CRC32, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, pos, out, buf = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def wandb_offline_runs(run_dir: Path) -> list[dict]:
    """Each offline W&B run folder of ``run_dir`` (one per start), oldest first: its run record
    (id, group, job type, config) and its history ``{step: {key: value}}``."""
    runs = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (path,) = folder.glob("run-*.wandb")
        run, history = None, {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                items = {}
                for i in record.history.item:  # a media value (image, histogram) comes as nested keys
                    if len(i.nested_key) > 1:
                        items.setdefault(i.nested_key[0], {})[i.nested_key[1]] = json.loads(i.value_json)
                    else:
                        items[i.key or i.nested_key[0]] = json.loads(i.value_json)
                step = int(items.pop("_step"))
                history[step] = {k: v for k, v in items.items() if not k.startswith("_")}
        config = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
        runs.append(
            {
                "id": run.run_id,
                "group": run.run_group,
                "job_type": run.job_type,
                "config": config,
                "history": history,
                "folder": folder,
            }
        )
    return runs


def wandb_scalar_rows(history: dict) -> pd.DataFrame:
    rows = [
        (k, step, float(v)) for step, items in history.items() for k, v in items.items() if isinstance(v, (int, float))
    ]
    return pd.DataFrame(rows, columns=["tag", "step", "value"]).sort_values(["tag", "step"], ignore_index=True)


# ---------------------------------------------------------------------------------------- tests


def test_tensorboard_and_wandb_hold_the_parquet_rows(tmp_path):
    summary = train(make_cfg(["logger=[tensorboard,wandb]"]), tmp_path)
    assert summary["status"] == "complete"
    assert_tensorboard_equals_parquet(tmp_path)

    # the array kinds: the probe curves as figures, the Hessian spectrum as a histogram, per pause
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert [e.step for e in events.Images("probe/curves")] == [0, 20, 40]
    spectra = events.Histograms("curvature/hessian_spectrum")
    assert [e.step for e in spectra] == [0, 20, 40]
    assert abs(spectra[0].histogram_value.num - 1.0) < 1e-9  # the quadrature weights, normalised

    (run,) = wandb_offline_runs(tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert run["id"] == meta["run_id"]
    assert run["group"] == "" and run["job_type"] == "run"  # a single run: no multirun to group by
    assert run["config"] == meta["config"]  # flattened, the keys of run.json and load_sweep
    pd.testing.assert_frame_equal(wandb_scalar_rows(run["history"]), parquet_rows(tmp_path), check_exact=True)
    assert all(run["history"][s]["curvature/hessian_spectrum"]["_type"] == "histogram" for s in (0, 20, 40))
    assert all(run["history"][s]["probe/curves"]["_type"] == "image-file" for s in (0, 20, 40))


def test_killed_and_resumed_run_mirrors_each_step_once(tmp_path, monkeypatch, reference):
    """Killed after the pause-20 shard (mirrored) and before its checkpoint: the restart resumes at
    step 0's checkpoint, discards shard 20 and writes steps 1..40 again. TensorBoard's readers see
    each value once; W&B continues the same run id, its newest write of each step equals parquet."""
    overrides = ["logger=[tensorboard,wandb]"]
    with monkeypatch.context() as m:
        crash_at(m, 20, "pause")
        with pytest.raises(Crash):
            train(make_cfg(overrides), tmp_path)
    first = tensorboard_rows(tmp_path / "tensorboard")
    assert 20 in set(first.step)  # the crashed start had mirrored the pause of step 20
    summary = train(make_cfg(overrides), tmp_path)
    assert summary["status"] == "complete"
    assert json.loads((tmp_path / "run.json").read_text())["resumed_from_step"] == 0
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)
    assert_tensorboard_equals_parquet(tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})  # as the UI reads
    events.Reload()
    assert [e.step for e in events.Scalars("train/td_loss")] == [10, 20, 30, 40]
    assert [e.step for e in events.Images("probe/curves")] == [0, 20, 40]

    runs = wandb_offline_runs(tmp_path)
    run_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    assert len(runs) == 2 and {r["id"] for r in runs} == {run_id}
    assert min(runs[1]["history"]) == 10  # the resumed start logs from the step after its checkpoint on
    newest = {}
    for run in runs:
        newest.update(run["history"])
    pd.testing.assert_frame_equal(wandb_scalar_rows(newest), parquet_rows(tmp_path), check_exact=True)


def test_a_sink_that_fails_to_write_warns_and_parquet_is_complete(tmp_path, monkeypatch, reference):
    calls = []
    real = TensorBoardSink.write

    def failing(self, rows, arrays, step):
        calls.append(step)
        if step == 20:
            raise OSError(28, "No space left on device")
        return real(self, rows, arrays, step)

    monkeypatch.setattr(TensorBoardSink, "write", failing)
    with pytest.warns(sinks.SinkWarning, match=r"logger tensorboard cannot write step 20 .*No space left"):
        summary = train(make_cfg(["logger=[tensorboard]"]), tmp_path)
    assert summary["status"] == "complete"
    assert calls == [0, 20]  # dropped after its failure: nothing more is sent to it
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)
    assert set(tensorboard_rows(tmp_path / "tensorboard").step) == {0}


def test_a_sink_that_fails_to_open_warns_and_the_run_goes_on(tmp_path, monkeypatch, reference):
    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/nowhere/tensorboard")

    monkeypatch.setattr("plasticity_runner.sinks.tensorboard.open_sink", broken)
    with pytest.warns(sinks.SinkWarning, match="logger tensorboard cannot open .*Permission denied"):
        summary = train(make_cfg(["logger=[tensorboard]"]), tmp_path)
    assert summary["status"] == "complete"
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)


def test_a_logger_whose_package_does_not_import_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["logger=[tensorboard,wandb]"]))
    assert err.value.key == "logger.wandb"
    assert 'pip install -e ".[wandb]"' in str(err.value)
    validate(make_cfg(["logger=[tensorboard]"]))  # the other sink is unaffected
    validate(make_cfg())  # the default: no sink


def test_cli_refuses_a_logger_that_does_not_import_before_the_run(tmp_path):
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "tensorboard.py").write_text("raise ImportError('tensorboard is broken here')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{REPO}"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, "logger=[tensorboard]", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "config key 'logger.tensorboard'" in proc.stderr and "tensorboard is broken here" in proc.stderr
    assert not (run_dir / "metrics").exists()


def test_wandb_group_and_job_type_come_from_the_multirun():
    multirun = SimpleNamespace(
        mode=SimpleNamespace(name="MULTIRUN"),
        sweep=SimpleNamespace(dir="/scratch/me/multirun/2026-01-31/12-00-00"),
        overrides=SimpleNamespace(task=["seed=3", "intervention=[layer_norm]", "optimizer.lr=0.001"]),
    )
    assert wandb_grouping(multirun) == ("2026-01-31/12-00-00", "intervention=[layer_norm],optimizer.lr=0.001")
    seeds_only = SimpleNamespace(**{**vars(multirun), "overrides": SimpleNamespace(task=["seed=1"])})
    assert wandb_grouping(seeds_only) == ("2026-01-31/12-00-00", "run")
    long = SimpleNamespace(**{**vars(multirun), "overrides": SimpleNamespace(task=[f"a.k{i}={i}" for i in range(20)])})
    group, job_type = wandb_grouping(long)
    assert len(job_type) == 64 and job_type != wandb_grouping(seeds_only)[1]
    single = SimpleNamespace(mode=SimpleNamespace(name="RUN"))
    assert wandb_grouping(single) == (None, "run") and wandb_grouping(None) == (None, "run")


def test_restart_may_add_a_logger(tmp_path):
    train(make_cfg(["total_steps=20"]), tmp_path)
    summary = train(make_cfg(["total_steps=20", "logger=[tensorboard]"]), tmp_path)
    assert summary["already_finished"]  # not refused as a different config: a sink only shows the run


def test_a_case_study_mirrors_its_rows_too(tmp_path):
    from .test_case_studies import MEMORIZATION_TINY

    train(compose_config([*MEMORIZATION_TINY, "torch_threads=1", "logger=[tensorboard]"]), tmp_path)
    assert_tensorboard_equals_parquet(tmp_path, min_rows=5)


def test_a_shared_tensorboard_log_dir_gets_a_folder_per_run(tmp_path):
    shared = tmp_path / "tb"
    train(make_cfg(["total_steps=20", "logger=[tensorboard]", f"logger.tensorboard.log_dir={shared}"]), tmp_path / "a")
    run_id = json.loads((tmp_path / "a" / "run.json").read_text())["run_id"]
    assert [p.name for p in shared.iterdir()] == [run_id]
    assert set(tensorboard_rows(shared / run_id).step) == {0, 10, 20}


@pytest.mark.slow
def test_multirun_gives_wandb_one_group_and_a_job_type_per_variant(tmp_path):
    sweep = tmp_path / "sweeps" / "fig6"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "plasticity_runner",
            "-m",
            *TINY,
            "total_steps=20",
            "seed=0,1",
            "optimizer.lr=0.001,0.0001",
            "logger=[wandb]",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    runs = {}
    for run_dir in sorted(p.parent for p in sweep.rglob("run.json")):
        (run,) = wandb_offline_runs(run_dir)
        meta = json.loads((run_dir / "run.json").read_text())
        assert run["id"] == meta["run_id"]
        runs[(meta["config"]["seed"], meta["config"]["optimizer.lr"])] = run
    assert len(runs) == 4 and {r["group"] for r in runs.values()} == {"sweeps/fig6"}
    for lr in (0.001, 0.0001):  # the seeds of one variant share a job type; the variants differ
        assert runs[(0, lr)]["job_type"] == runs[(1, lr)]["job_type"]
    assert runs[(0, 0.001)]["job_type"] != runs[(0, 0.0001)]["job_type"]
    assert "seed" not in runs[(0, 0.001)]["job_type"]


def test_logger_options_fail_at_composition_or_validation_naming_the_key():
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises((ConfigCompositionException, MissingConfigException), match="logger"):
        make_cfg(["logger=[tensorbord]"])
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["logger=[wandb]", "logger.wandb.mode=offlin"]))
    assert err.value.key == "logger.wandb.mode"
    assert sinks.active_loggers(make_cfg(["logger=[wandb,tensorboard]"])) == ["tensorboard", "wandb"]
    assert sinks.active_loggers(make_cfg()) == []
