"""Two-hot categorical head (paper 6.2): a distribution over a fixed support per action.

Build time only: selects ``nets.heads.TwoHotHead`` (Q = expectation over the support) and with it
the loss, the cross-entropy to the two-hot projection of the TD target. Optimizer state:
untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from .. import registry
from ..errors import ConfigError
from .base import Intervention


@dataclass
class TwoHotConfig:
    v_min: float = -100.0  # lowest value of the support (return units)
    v_max: float = 100.0  # highest value of the support (return units)
    num_bins: int = 201  # atoms of the support, linspace(v_min, v_max, num_bins)


class TwoHot(Intervention):
    name = "two_hot"

    def network_options(self, options: dict[str, Any]) -> None:
        options["head"] = "two_hot"
        options["head_options"] = {
            "v_min": float(self.cfg.v_min),
            "v_max": float(self.cfg.v_max),
            "num_bins": int(self.cfg.num_bins),
        }


def check(cfg: Any, key: str) -> None:
    """At least two bins and ``v_max > v_min``."""
    two_hot = OmegaConf.select(cfg, key)
    if two_hot.num_bins < 2:
        raise ConfigError(f"{key}.num_bins", f"must be >= 2, got {two_hot.num_bins}")
    if not two_hot.v_max > two_hot.v_min:
        raise ConfigError(f"{key}.v_max", f"must be > {key}.v_min ({two_hot.v_min}), got {two_hot.v_max}")


registry.register("intervention", "two_hot", TwoHotConfig, build=TwoHot, check=check, order=40,
    phase="build", test_overrides=("intervention.two_hot.num_bins=5",))
