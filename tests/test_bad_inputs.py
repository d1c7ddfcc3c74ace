"""Inputs that used to end in a traceback: a clear error naming the key or the file, exit 2."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from plasticity_runner.config import ConfigError
from plasticity_runner.envs.datasets import DatasetFileError, load_dataset, read_idx

from .conftest import TINY, write_idx
from .test_cli import run_cli

FAST = [*TINY, "total_steps=20", "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]


def test_idx_header_of_4e9_cubed_is_named_without_overflow(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", *(4_000_000_000,) * 3) + b"\0" * 100)
    with pytest.raises(DatasetFileError) as err:
        read_idx(path, 3)
    needs = 16 + 4_000_000_000**3  # Python ints: the oracle of the size the header asks for
    assert str(path) in str(err.value) and "is truncated" in str(err.value) and str(needs) in str(err.value)
    assert "-" not in str(err.value).split("needs")[-1]


def test_mnist_with_zero_images_is_named(mnist_dir):
    root, _, _ = mnist_dir
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(DatasetFileError) as err:
        load_dataset("mnist", root)
    assert str(raw / "train-labels-idx1-ubyte") in str(err.value) and "no labels" in str(err.value)


def test_mnist_whose_labels_are_all_zero_blames_the_file_not_num_images(mnist_dir):
    root, _, labels = mnist_dir
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(path, np.zeros_like(labels))
    with pytest.raises(DatasetFileError) as err:
        load_dataset("mnist", root)
    assert str(path) in str(err.value) and "[1, 2, 3, 4, 5, 6, 7, 8, 9]" in str(err.value)
    assert "num_images" not in str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.key == "env.data_dir"


def test_mnist_whose_labels_are_all_zero_through_the_cli_is_exit_2(mnist_dir, tmp_path):
    root, _, labels = mnist_dir
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(path, np.zeros_like(labels))
    res = run_cli(
        [*FAST, "env.dataset=mnist", f"env.data_dir={root}", "env.num_images=50", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert str(path) in res.stderr and "Traceback" not in res.stderr and "env.num_images" not in res.stderr


def test_unknown_atari_game_is_a_config_error_with_close_names(tmp_path):
    pytest.importorskip("ale_py")
    res = run_cli(
        ["env=atari", "env.game=NotAGame", "device=cpu", "progress=none", f"hydra.run.dir={tmp_path / 'r'}"],
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert "config key 'env.game'" in res.stderr and "close matches: name_this_game" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r" / "run.json").exists()


def test_a_network_too_large_for_the_device_is_refused_by_name(tmp_path):
    res = run_cli([*FAST, "architecture.width=1000000", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "config key 'architecture.width'" in res.stderr and "architecture.width=1000000" in res.stderr
    assert "GiB" in res.stderr and "Traceback" not in res.stderr


def test_parameter_memory_estimate_counts_the_parameters():
    import torch

    from plasticity_runner import lifecycle

    from .conftest import make_cfg

    cfg = make_cfg(["architecture.width=64"])
    net = torch.nn.Sequential(torch.nn.Linear(1000, 1000), torch.nn.Linear(1000, 10))
    params = 1000 * 1000 + 1000 + 1000 * 10 + 10  # the oracle: counted by hand
    lifecycle.check_parameter_memory(cfg, lambda: net, torch.device("cpu"))  # 20 MB: fits
    real = lifecycle.device_memory
    try:
        lifecycle.device_memory = lambda device: params * 4 * lifecycle.PARAMETER_COPIES - 1  # one byte short
        with pytest.raises(ConfigError) as err:
            lifecycle.check_parameter_memory(cfg, lambda: net, torch.device("cpu"))
    finally:
        lifecycle.device_memory = real
    assert f"{params:,} parameters" in str(err.value)
