"""The error a bad config value raises. It depends on nothing, so every module can raise it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value out of its range; ``key`` is the dotted config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")
