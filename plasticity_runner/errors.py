"""The error a bad config value raises, the range checks every part declares with it, and
``choice``, the text of a config choice (an enum member or a string).

It depends on nothing in the project, so every module (a registered part included) can use it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A config value out of its range; ``key`` is the dotted config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


# (key, range) of every range check run inside ``recording_ranges()``; None outside it
_RECORDED: list[tuple[str, str]] | None = None


@contextmanager
def recording_ranges() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(key, range)`` of every ``positive`` / ``unit`` check that runs inside, whatever the
    value: the generated configuration reference (docs/hooks.py) reads the ranges from the checks."""
    global _RECORDED
    saved, _RECORDED = _RECORDED, []
    try:
        yield _RECORDED
    finally:
        _RECORDED = saved


def _record(key: str, text: str) -> None:
    if _RECORDED is not None:
        _RECORDED.append((key, text))


def finite(key: str, value: Any) -> None:
    """NaN and +-inf pass every comparison-based range check (``nan < 0`` is False): refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}")


def positive(cfg: Any, key: str, allow_zero: bool = False) -> None:
    """``cfg[key] > 0`` (``>= 0`` with ``allow_zero``); a missing or null key passes."""
    _record(key, ">= 0" if allow_zero else "> 0")
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    finite(key, value)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def unit(cfg: Any, key: str) -> None:
    """``cfg[key]`` in [0, 1]; a missing or null key passes."""
    _record(key, "[0, 1]")
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    finite(key, value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must lie in [0, 1], got {value}")


def choice(value: Any) -> str:
    """A config choice as text: an enum member's value (a structured config holds ``Device.cpu``),
    anything else ``str(value)`` (a plain config holds ``"cpu"``)."""
    return str(getattr(value, "value", value))
