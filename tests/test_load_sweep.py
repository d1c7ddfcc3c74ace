"""``load_sweep`` against the per-file pandas reader (``sweep_oracle``), shard integrity, and the
runs the reader finds: through directory symlinks, loops, copies of a run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from plasticity_runner import metrics
from plasticity_runner.metrics import DuplicateRunWarning, MetricsWriter, ShardError, find_runs, load_run, load_sweep

from .sweep_oracle import oracle_load_sweep

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_load_sweep", ROOT / "scripts" / "bench_load_sweep.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

# a config with every value type run.json holds (int, float, str, bool, null, a JSON list)
CONFIG = {
    "seed": 0,
    "architecture.width": 64,
    "optimizer.lr": 1e-3,
    "env.dataset": "mnist",
    "probe.enabled": True,
    "intervention.redo": None,
    "env.schedule": "[1, 2]",
    "speed.compile": False,
    "total_steps": 100,
}


def heterogeneous_sweep(root: Path) -> None:
    """Runs whose configs differ in keys, key order and value types, with empty runs among them."""
    bench.fabricate(root / "a", runs=3, shards=2, rows=7, config=CONFIG)
    bench.fabricate(root / "b", runs=2, shards=3, rows=5, config={**CONFIG, "extra.key": 1, "seed": 1}, seed=1)
    # keys in another order, a value type that changes (int -> float, str -> None, None -> str)
    other = {k: CONFIG[k] for k in reversed(CONFIG)}
    other.update({"architecture.width": 64.5, "env.dataset": None, "intervention.redo": "on", "only.here": "x"})
    bench.fabricate(root / "c", runs=2, shards=1, rows=4, config=other, seed=2)
    empty = root / "d" / "0"  # a run with no shard yet
    empty.mkdir(parents=True)
    (empty / "run.json").write_text(json.dumps({"run_id": "empty", "config": {**CONFIG, "late.key": 3}}))
    # a run whose shard repeats (step, phase, metric) rows: ties keep file order
    run = root / "e" / "0"
    w = MetricsWriter(run, "dup")
    (run / "run.json").parent.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps({"run_id": "dup", "config": CONFIG}))
    for v in (3.0, 1.0, 2.0):
        w.add(10, "probe", "loss", v)
    w.add(0, "train", "loss", 9.0)
    w.flush(10)
    w.add(10, "probe", "loss", 0.5)
    w.flush(20)


@pytest.mark.parametrize("columns", [None, ["seed", "architecture.width", "not.a.key", "step"]])
def test_load_sweep_equals_the_per_file_reader(tmp_path, columns):
    heterogeneous_sweep(tmp_path)
    runs = find_runs(tmp_path)
    assert len(runs) == 9
    got = load_sweep(tmp_path, config_columns=columns)
    expected = oracle_load_sweep(runs, config_columns=columns)
    assert list(got.columns) == list(expected.columns)
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_load_run_equals_the_per_file_reader(tmp_path):
    heterogeneous_sweep(tmp_path)
    from .sweep_oracle import oracle_load_run

    for run in find_runs(tmp_path):
        pd.testing.assert_frame_equal(load_run(run), oracle_load_run(run), check_exact=True)


# ----------------------------------------------------------------------------------- integrity


def one_run(tmp_path) -> Path:
    bench.fabricate(tmp_path / "sweep", runs=1, shards=2, rows=20, config=CONFIG)
    return tmp_path / "sweep" / "0"


def flip_a_value_bit(shard: Path) -> None:
    """Flip the lowest mantissa bit of the first ``value`` in the file's bytes (found by its bytes)."""
    import pyarrow.parquet as pq

    first = pq.read_table(shard).column("value")[0].as_py()
    data = bytearray(shard.read_bytes())
    needle = pa.array([first], pa.float64()).buffers()[1].to_pybytes()
    at = bytes(data).find(needle)
    assert at > 0, "the value's bytes are stored plain (no compression of the value column)"
    data[at] ^= 1
    shard.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_value_is_refused_naming_the_shard(tmp_path):
    run = one_run(tmp_path)
    shard = run / "metrics" / "step_0000001000.parquet"
    flip_a_value_bit(shard)
    with pytest.raises(ShardError) as err:
        load_sweep(tmp_path / "sweep")
    assert str(shard) in str(err.value) and "SHA-256" in str(err.value)
    with pytest.raises(ShardError):
        load_run(run)


def test_a_flipped_bit_without_the_checksum_file_is_caught_by_the_page_checksum(tmp_path):
    run = one_run(tmp_path)
    shard = run / "metrics" / "step_0000001000.parquet"
    metrics.checksum_path(shard).unlink()  # as an older shard: only parquet's page CRC is left
    flip_a_value_bit(shard)
    with pytest.raises(ShardError) as err:
        load_sweep(tmp_path / "sweep")
    assert str(shard) in str(err.value) and "checksum" in str(err.value).lower()


def test_garbage_in_a_shard_names_the_file(tmp_path):
    run = one_run(tmp_path)
    shard = run / "metrics" / "step_0000000000.parquet"
    data = bytearray(shard.read_bytes())
    data[40:400] = os.urandom(360)
    shard.write_bytes(bytes(data))
    metrics.checksum_path(shard).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MissingChecksumWarning)
        with pytest.raises(ShardError) as err:
            load_sweep(tmp_path / "sweep")
    assert str(shard) in str(err.value)


def test_a_shard_without_checksum_file_is_read_with_a_warning(tmp_path):
    run = one_run(tmp_path)
    expected = load_sweep(tmp_path / "sweep")
    metrics.checksum_path(run / "metrics" / "step_0000000000.parquet").unlink()
    with pytest.warns(metrics.MissingChecksumWarning, match="step_0000000000.parquet"):
        got = load_sweep(tmp_path / "sweep")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_shard_and_checksum_are_written_together(tmp_path):
    run = one_run(tmp_path)
    for shard in (run / "metrics").glob("*.parquet"):
        digest, name = metrics.checksum_path(shard).read_text().split()
        assert name == shard.name and digest == metrics.file_sha256(shard)


# ----------------------------------------------------------------------- which runs are read


def test_symlinked_runs_are_found(tmp_path):
    real = tmp_path / "real"
    bench.fabricate(real, runs=2, shards=1, rows=3, config=CONFIG)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "x").symlink_to(real / "0", target_is_directory=True)
    (sweep / "y").symlink_to(real / "1", target_is_directory=True)
    assert find_runs(sweep) == [sweep / "x", sweep / "y"]
    assert load_sweep(sweep)["run_dir"].unique().tolist() == [str(sweep / "x"), str(sweep / "y")]


def test_a_symlink_loop_is_walked_once(tmp_path):
    bench.fabricate(tmp_path / "sweep", runs=2, shards=1, rows=3, config=CONFIG)
    (tmp_path / "sweep" / "loop").symlink_to(tmp_path / "sweep", target_is_directory=True)
    (tmp_path / "sweep" / "0" / "metrics" / "back").symlink_to(tmp_path, target_is_directory=True)
    assert find_runs(tmp_path / "sweep") == [tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"]


def test_a_copied_run_is_counted_once_with_a_warning(tmp_path):
    bench.fabricate(tmp_path / "sweep", runs=2, shards=1, rows=3, config=CONFIG)
    shutil.copytree(tmp_path / "sweep" / "0", tmp_path / "sweep" / "0-copy")
    with pytest.warns(DuplicateRunWarning) as caught:
        frame = load_sweep(tmp_path / "sweep")
    message = str(caught[0].message)
    assert str(tmp_path / "sweep" / "0") in message and str(tmp_path / "sweep" / "0-copy") in message
    assert frame["run_dir"].nunique() == 2 and len(frame) == 2 * 3
