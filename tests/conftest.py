"""Shared fixtures: compose the real config with overrides, tiny budgets, fixture datasets."""

from __future__ import annotations

import contextlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticity_runner.cli import compose_config

# A budget small enough for a 2-core CPU: every pause still runs the real probe.
TINY = [
    "total_steps=40",
    "log_every_steps=10",
    "probe.every_steps=20",
    "probe.steps=10",
    "probe.num_targets=3",
    "probe.batch_size=16",
    "probe.num_inputs=64",
    "probe.curve_every_steps=5",
    "agent.batch_size=32",
    "agent.learning_starts=64",
    "agent.target_update_steps=10",
    "agent.epsilon_decay_steps=20",
    "architecture.width=32",
    "diagnostics.statistics.num_inputs=64",
    "diagnostics.curvature.num_inputs=64",
    "diagnostics.curvature.iterations=4",
    "diagnostics.curvature.num_vectors=1",
    "diagnostics.curvature.grid_points=64",
    "diagnostics.gradcov.k=32",
    "diagnostics.gradcov.num_clusters=4",
    "progress=none",
    "device=cpu",
    # one thread: results do not depend on what another test set torch's (process-wide) thread
    # count to, so in-process and subprocess runs are comparable bit for bit
    "torch_threads=1",
]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """``torch.set_default_dtype(dtype)`` inside the block, the previous default restored after."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def make_cfg(overrides: list[str] | None = None, tiny: bool = True):
    """The composed config (as the CLI would see it) with ``overrides`` applied after ``TINY``."""
    return compose_config((TINY if tiny else []) + list(overrides or []))


@pytest.fixture
def cfg_factory():
    return make_cfg


# The devices of the ``device`` fixture: cpu everywhere, plus cuda where torch sees a GPU (on a
# machine without one the cuda cases are not generated, so the CPU suite neither slows nor skips).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device a test should pass on (``torch.device``); its cuda cases carry the ``cuda`` marker.

    A cuda case starts with TF32 off (full fp32, as on the CPU) and restores the process's setting
    afterwards: a run with ``speed.tf32=true`` turns it on process-wide, which would otherwise leak
    ~1e-3 relative rounding into the tolerances of the tests after it."""
    if request.param != "cuda":
        yield torch.device(request.param)
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield torch.device("cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def on_device(device: torch.device) -> list[str]:
    """The override that puts a run on ``device`` (after ``TINY``'s ``device=cpu``)."""
    return [f"device={torch.device(device).type}"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA device (the device fixture's cuda cases, tests/test_cuda.py)"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:  # the cuda cases of the device fixture: selectable with -m cuda
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("device") == "cuda":
            item.add_marker(pytest.mark.cuda)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format of MNIST (big-endian dims after a magic number)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small MNIST in the real IDX files (train split: 50 images, 5 per class)."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 5).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:10])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:10])
    return tmp_path, images, labels


@pytest.fixture
def cifar_dir(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small CIFAR-10 in the real pickled-batch format (5 train batches of 10 images + test)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    all_images, all_labels = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
        labels = list(range(10))
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": f"batch {b}"}, f)
        all_images.append(data)
        all_labels += labels
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": all_images[0], "labels": list(range(10))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    images = np.concatenate(all_images).reshape(-1, 3, 32, 32)
    return tmp_path, images, np.array(all_labels)
