"""The program of each continual protocol (``program=`` of its env registration in ``envs/``): its
stream (``streams.py``) handed to the one loop (``loop.run_stream``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ..lifecycle import RunDir
from .loop import run_stream
from .streams import BitFlipRegression, PermutedImages, ShuffledLabels, Stream, WarmStart


def _stream(cls: type[Stream], cfg: DictConfig, run: RunDir) -> Stream:
    return cls(cfg.env, int(cfg.total_steps), int(cfg.seed), run.device)


def run_slowly_changing_regression(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``env=slowly_changing_regression`` (Dohare et al. 2024's bit-flipping regression)."""
    return run_stream(cfg, run, _stream(BitFlipRegression, cfg, run))


def run_permuted_mnist(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``env=permuted_mnist`` (online permuted MNIST, Dohare et al. 2024)."""
    return run_stream(cfg, run, _stream(PermutedImages, cfg, run))


def run_shuffled_labels(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``env=shuffled_labels`` (figure 1's memorisation of re-drawn labels, with every intervention)."""
    return run_stream(cfg, run, _stream(ShuffledLabels, cfg, run))


def run_warm_start(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``env=warm_start`` (Ash & Adams 2020)."""
    return run_stream(cfg, run, _stream(WarmStart, cfg, run))
