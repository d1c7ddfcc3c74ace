"""Observation datasets of the classification MDPs: training images as one float tensor.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download). ``mnist``
and ``cifar10`` are torchvision's datasets read from ``data_dir`` (``download=True`` fetches them
when online). Pixels are scaled to [0, 1]; no mean/std normalisation (the paper names none).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing from ``data_dir`` and downloading is off."""


def _not_found(name: str, root: Path, expected: str, exc: Exception | None = None) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"dataset '{name}' not found: expected {expected} under env.data_dir={str(root)!r} "
        f"(resolved: {root.resolve()}). Put the files there, or let torchvision download them with "
        f"the override `env.download=true` (needs internet)." + (f" Underlying error: {exc}" if exc else "")
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.float32)[:, None] / 16.0  # pixel values 0..16
    return images, data.target.astype(np.int64)


def _mnist(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(root=str(root), train=True, download=download)
    except RuntimeError as exc:
        raise _not_found("mnist", root, "MNIST/raw/train-images-idx3-ubyte and train-labels-idx1-ubyte", exc) from exc
    images = ds.data.numpy().astype(np.float32)[:, None] / 255.0
    return images, ds.targets.numpy().astype(np.int64)


def _cifar10(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    class _CIFAR10(CIFAR10):
        # torchvision verifies each batch file's md5 before loading. We check that the files exist
        # and let unpickling fail loudly on a corrupt one, so that copies re-packed by a cluster's
        # data team (and the small fixtures of the tests) load too. download=True still verifies.
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if path.is_file():
                with open(path, "rb") as f:
                    self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            else:
                self.classes = [str(i) for i in range(10)]

    try:
        ds = _CIFAR10(root=str(root), train=True, download=download)
    except RuntimeError as exc:
        raise _not_found("cifar10", root, "cifar-10-batches-py/data_batch_1..5 and test_batch", exc) from exc
    images = ds.data.astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # NHWC uint8 -> NCHW
    return images, np.asarray(ds.targets, dtype=np.int64)


def load_dataset(name: str, data_dir: str | os.PathLike, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images ``[N, C, H, W]`` float32 in [0, 1] and labels ``[N]`` int64 (CPU tensors)."""
    root = Path(data_dir).expanduser()
    if name == "digits":
        images, labels = _digits()
    elif name == "mnist":
        images, labels = _mnist(root, download)
    elif name == "cifar10":
        images, labels = _cifar10(root, download)
    else:
        raise ValueError(f"env.dataset: unknown dataset {name!r}; known: digits, mnist, cifar10")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
