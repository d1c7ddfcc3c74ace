"""The continual supervised protocols (``continual/``): ``env=slowly_changing_regression``,
``permuted_mnist``, ``shuffled_labels`` and ``warm_start``.

Not environments the DQN agent steps: each registers its program (``continual/protocols.py``),
which ``trainer.train`` runs instead of the DQN loop, with ``continual=True``: the program takes
every intervention and optimizer and pauses for the plasticity probe and the diagnostics on the
DQN runs' schedule, drawing the pause's inputs from the current task (not from a replay; the agent
group is not used). Their keys are documented in ``configs/env/<name>.yaml``.

Refused at start, naming the key: ``intervention.two_hot`` and ``intervention.hl_gauss`` on a
classification protocol (their heads encode a real-valued target; a class is not one), an architecture other than ``mlp``
for the bit vectors of the regression, a ``total_steps`` other than ``warm_steps + full_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, positive, unit
from ..registry import register
from .datasets import Dataset


@dataclass
class SlowlyChangingRegressionEnvConfig:
    """Slowly-changing regression, Dohare et al. 2024 (``continual/streams.py:BitFlipRegression``)."""

    name: str = "slowly_changing_regression"
    num_bits: int = 20
    num_flipping_bits: int = 15
    flip_every_examples: int = 10_000
    target_features: int = 100
    beta: float = 0.7
    batch_size: int = 1


@dataclass
class PermutedMnistEnvConfig:
    """Online permuted MNIST, Dohare et al. 2024 (``continual/streams.py:PermutedImages``)."""

    name: str = "permuted_mnist"
    dataset: Dataset = Dataset.digits
    data_dir: str = "data"
    download: bool = False
    num_images: int | None = None
    heldout_images: int = 297
    batch_size: int = 1
    eval_samples: int = 1024


@dataclass
class ShuffledLabelsEnvConfig:
    """Shuffled-label sequences, figure 1 (``continual/streams.py:ShuffledLabels``)."""

    name: str = "shuffled_labels"
    dataset: Dataset = Dataset.digits
    data_dir: str = "data"
    download: bool = False
    num_images: int | None = None
    steps_per_task: int = 2000
    batch_size: int = 128
    eval_samples: int = 4096


@dataclass
class WarmStartEnvConfig:
    """Warm-starting, Ash & Adams 2020 (``continual/streams.py:WarmStart``)."""

    name: str = "warm_start"
    dataset: Dataset = Dataset.digits
    data_dir: str = "data"
    download: bool = False
    num_images: int | None = None
    heldout_images: int = 297
    warm_fraction: float = 0.5
    warm_steps: int = 2000
    full_steps: int = 2000
    batch_size: int = 128
    eval_samples: int = 1024


SCALAR_TARGET_HEADS = ("two_hot", "hl_gauss")  # categorical heads over the range of a real-valued target


def _no_two_hot(cfg: Any) -> None:
    for name in SCALAR_TARGET_HEADS:
        if OmegaConf.select(cfg, f"intervention.{name}") is not None:
            raise ConfigError(
                f"intervention.{name}",
                f"env={cfg.env.name} classifies: the {name} head encodes a "
                f"real-valued target, not a class; drop {name} (slowly_changing_regression takes it)",
            )


def check_regression(cfg: Any, key: str) -> None:
    for name in ("num_bits", "flip_every_examples", "target_features", "batch_size"):
        positive(cfg, f"{key}.{name}")
    env = cfg[key]
    if not 0 <= env.num_flipping_bits <= env.num_bits:
        raise ConfigError(
            f"{key}.num_flipping_bits", f"must lie in 0..{key}.num_bits ({env.num_bits}), got {env.num_flipping_bits}"
        )
    if env.flip_every_examples % env.batch_size:
        raise ConfigError(
            f"{key}.flip_every_examples",
            f"must be a multiple of {key}.batch_size ({env.batch_size}), got {env.flip_every_examples}",
        )
    if cfg.architecture.name != "mlp":
        raise ConfigError(
            "architecture", f"env={env.name} feeds a vector of bits: architecture=mlp, not {cfg.architecture.name}"
        )


def check_permuted(cfg: Any, key: str) -> None:
    for name in ("heldout_images", "batch_size", "eval_samples", "num_images"):
        positive(cfg, f"{key}.{name}")
    _no_two_hot(cfg)


def check_shuffled(cfg: Any, key: str) -> None:
    for name in ("num_images", "steps_per_task", "batch_size", "eval_samples"):
        positive(cfg, f"{key}.{name}")
    _no_two_hot(cfg)


def check_warm_start(cfg: Any, key: str) -> None:
    for name in ("heldout_images", "batch_size", "eval_samples", "num_images", "full_steps"):
        positive(cfg, f"{key}.{name}")
    positive(cfg, f"{key}.warm_steps", allow_zero=True)
    unit(cfg, f"{key}.warm_fraction")
    env = cfg[key]
    if env.warm_fraction <= 0:
        raise ConfigError(f"{key}.warm_fraction", f"must be > 0, got {env.warm_fraction}")
    if cfg.total_steps != env.warm_steps + env.full_steps:
        raise ConfigError(
            "total_steps",
            f"must equal {key}.warm_steps + {key}.full_steps "
            f"({env.warm_steps} + {env.full_steps}), got {cfg.total_steps}",
        )
    _no_two_hot(cfg)


# The program runs the case study's loop; its module is imported when the program runs, because it
# imports this package back (the envs it steps), so importing it here would make a cycle.


def run_slowly_changing_regression(cfg: Any, run: Any) -> dict[str, Any]:
    """``continual.protocols.run_slowly_changing_regression`` (imported when it runs: that module imports this package back)."""
    from ..continual.protocols import run_slowly_changing_regression as program

    return program(cfg, run)


def run_permuted_mnist(cfg: Any, run: Any) -> dict[str, Any]:
    """``continual.protocols.run_permuted_mnist`` (imported when it runs: that module imports this package back)."""
    from ..continual.protocols import run_permuted_mnist as program

    return program(cfg, run)


def run_shuffled_labels(cfg: Any, run: Any) -> dict[str, Any]:
    """``continual.protocols.run_shuffled_labels`` (imported when it runs: that module imports this package back)."""
    from ..continual.protocols import run_shuffled_labels as program

    return program(cfg, run)


def run_warm_start(cfg: Any, run: Any) -> dict[str, Any]:
    """``continual.protocols.run_warm_start`` (imported when it runs: that module imports this package back)."""
    from ..continual.protocols import run_warm_start as program

    return program(cfg, run)


register(
    "env",
    "slowly_changing_regression",
    SlowlyChangingRegressionEnvConfig,
    check=check_regression,
    program=run_slowly_changing_regression,
    continual=True,
)
register(
    "env", "permuted_mnist", PermutedMnistEnvConfig, check=check_permuted, program=run_permuted_mnist, continual=True
)
register(
    "env", "shuffled_labels", ShuffledLabelsEnvConfig, check=check_shuffled, program=run_shuffled_labels, continual=True
)
register("env", "warm_start", WarmStartEnvConfig, check=check_warm_start, program=run_warm_start, continual=True)
