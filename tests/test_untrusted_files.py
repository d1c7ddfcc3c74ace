"""Files a run reads that someone else may have written: a checkpoint or a data batch carrying a
payload is refused, naming the file and the type, and the payload never runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from plasticity_runner import checkpoint, safe_pickle
from plasticity_runner.envs.datasets import DatasetFileError, load_dataset
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg

FAST = ["total_steps=20", "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]


class Payload:
    """Unpickling this calls ``os.system('touch <path>')``: the file appears iff code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_the_payload_does_run_under_plain_pickle(tmp_path):
    # the oracle of the tests below: without the guard, loading the payload touches the file
    witness = tmp_path / "witness"
    pickle.loads(pickle.dumps(Payload(witness)))
    assert witness.exists()


def tamper(state_file, **extra) -> None:
    """Rewrite a genuine checkpoint with ``extra`` keys and a matching marker (as an attacker can)."""
    bundle = torch.load(state_file, weights_only=False)  # the test's own genuine file
    bundle.update(extra)
    torch.save(bundle, state_file)
    marker = {
        "file": checkpoint.STATE_FILE,
        "size": state_file.stat().st_size,
        "sha256": checkpoint.file_sha256(state_file),
    }
    (state_file.parent / checkpoint.MARKER).write_text(json.dumps(marker))


@pytest.fixture
def crashed_run(tmp_path):
    """A run stopped after its step-20 checkpoint (status crashed): the next start resumes it."""
    run_dir = tmp_path / "run"
    train(make_cfg(FAST), run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    meta["status"] = "crashed"  # so that a restart resumes instead of returning "already finished"
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


def test_checkpoint_with_a_payload_is_refused_and_never_runs(crashed_run, tmp_path):
    witness = tmp_path / "witness"
    state_file = crashed_run / "checkpoints" / "step_0000000020" / "state.pt"
    tamper(state_file, extra=Payload(witness))
    assert checkpoint.verify(state_file.parent) is None  # its checksum matches: only the types give it away
    with pytest.raises(checkpoint.UnsafeCheckpointError) as err:
        train(make_cfg(FAST), crashed_run)
    assert str(state_file) in str(err.value) and "posix.system" in str(err.value)
    assert not witness.exists()
    # refused, not skipped: no fall-back to the older checkpoint, nothing deleted
    assert sorted(p.name for p in (crashed_run / "metrics").glob("*.parquet"))[-1] == "step_0000000020.parquet"


def test_checkpoint_with_a_payload_through_the_cli_is_exit_3(crashed_run, tmp_path):
    witness = tmp_path / "witness"
    state_file = crashed_run / "checkpoints" / "step_0000000020" / "state.pt"
    tamper(state_file, extra=Payload(witness))
    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, *FAST, f"hydra.run.dir={crashed_run}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Error reading the run's outputs" in res.stderr and str(state_file) in res.stderr
    assert "posix.system" in res.stderr and "Traceback" not in res.stderr
    assert not witness.exists()


def test_genuine_bundle_types_load_under_weights_only(tmp_path):
    # every type a bundle holds besides tensors: numpy arrays of the dtypes the envs store, numpy's
    # and Python's RNG states, plain containers
    import random

    bundle = {
        "np": {str(t): np.zeros(3, t) for t in (np.bool_, np.uint8, np.int64, np.float32, np.float64)},
        "rng": {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()},
        "nested": [1, 2.5, "x", None, (1, 2)],
    }
    path = tmp_path / "state.pt"
    torch.save(bundle, path)
    loaded = checkpoint.load_bundle(path, "cpu")
    for k, v in bundle["np"].items():
        assert loaded["np"][k].dtype == v.dtype and np.array_equal(loaded["np"][k], v)
    assert loaded["rng"]["python"] == bundle["rng"]["python"] and loaded["nested"] == bundle["nested"]
    np.testing.assert_array_equal(loaded["rng"]["numpy"][1], bundle["rng"]["numpy"][1])


def test_minatar_games_in_a_checkpoint_cannot_run_code(tmp_path):
    pytest.importorskip("minatar")
    from plasticity_runner.envs import minatar
    from plasticity_runner.trainer import build_train_state

    from .test_minatar import MINATAR_TINY

    state = build_train_state(make_cfg(MINATAR_TINY, tiny=False), torch.device("cpu"))
    saved = state.env.state_dict()
    state.env.load_state_dict(saved)  # the genuine games load
    witness = tmp_path / "witness"
    saved["envs"] = pickle.dumps(Payload(witness))
    with pytest.raises(safe_pickle.UnsafePickleError) as err:
        state.env.load_state_dict(saved)
    assert "posix.system" in str(err.value) and not witness.exists()
    assert ("minatar.environment", "Environment") in minatar.PICKLED_GAME_TYPES


def test_cifar_batch_with_a_payload_is_refused(cifar_dir, tmp_path):
    root, _, _ = cifar_dir
    witness = tmp_path / "witness"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10)), "x": Payload(witness)}, f)
    with pytest.raises(DatasetFileError) as err:
        load_dataset("cifar10", root)
    assert str(batch) in str(err.value) and "posix.system" in str(err.value)
    assert not witness.exists()


def test_cifar_batch_that_is_not_a_batch_names_the_file(cifar_dir):
    root, _, _ = cifar_dir
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetFileError) as err:
        load_dataset("cifar10", root)
    assert str(batch) in str(err.value) and "not a CIFAR-10 batch" in str(err.value)


def test_restricted_unpickler_allows_what_is_listed():
    data = pickle.dumps({"a": np.arange(4, dtype=np.int64), "b": [b"x", "y", 1.5]})
    out = safe_pickle.loads(data, safe_pickle.NUMPY_ARRAYS, "buffer")
    assert out["b"] == [b"x", "y", 1.5] and np.array_equal(out["a"], np.arange(4))
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.loads(pickle.dumps(io.BytesIO), safe_pickle.NUMPY_ARRAYS, "buffer")
