"""Two-hot categorical head (paper 6.2): a distribution over a fixed support per action.

Build time only: selects ``nets.heads.TwoHotHead`` (Q = expectation over the support) and with it
the loss, the cross-entropy to the two-hot projection of the TD target. Optimizer state:
untouched.

Support (the paper gives none): ``linspace(v_min, v_max, num_bins)``. An end left null (the
default) derives from the task's range of returns ``[R_min, R_max] = [min(0, r_min), max(0, r_max)]
/ (1 - gamma)`` (``envs.base.return_range`` of the env's ``reward_range`` and ``agent.gamma``),
widened by ``margin`` times its span at each end (``nets.heads.two_hot_support``). For the
classification MDPs (rewards in {0, 1}, gamma 0.99) that is [0, 100] widened to [-10, 110]: every
task's Q* (at most 100) and the probe's targets ``a +- 1`` (``a`` the network's mean prediction)
lie inside, with room for overestimation; a target outside the support is clipped to its ends
and the head's expectation can never leave it. An env without a declared reward range (MinAtar,
Atari with ``clip_rewards: false``) needs both ends set.
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
    v_min: float | None = None  # lowest atom (return units); null: R_min - margin * (R_max - R_min)
    v_max: float | None = None  # highest atom (return units); null: R_max + margin * (R_max - R_min)
    margin: float = 0.1  # widening of a derived end, as a fraction of the return range's span
    num_bins: int = 201  # atoms of the support, linspace(v_min, v_max, num_bins)


class TwoHot(Intervention):
    name = "two_hot"

    def network_options(self, options: dict[str, Any]) -> None:
        options["head"] = "two_hot"
        v_min, v_max = self.cfg.v_min, self.cfg.v_max
        options["head_options"] = {  # null ends: derived from the env's return range (build_network's)
            "v_min": None if v_min is None else float(v_min),
            "v_max": None if v_max is None else float(v_max),
            "margin": float(self.cfg.margin),
            "num_bins": int(self.cfg.num_bins),
        }


def check(cfg: Any, key: str) -> None:
    """At least two bins, ``margin >= 0`` and, both ends set, ``v_max > v_min``."""
    two_hot = OmegaConf.select(cfg, key)
    if two_hot.num_bins < 2:
        raise ConfigError(f"{key}.num_bins", f"must be >= 2, got {two_hot.num_bins}")
    if two_hot.margin < 0:
        raise ConfigError(f"{key}.margin", f"must be >= 0, got {two_hot.margin}")
    if two_hot.v_min is not None and two_hot.v_max is not None and not two_hot.v_max > two_hot.v_min:
        raise ConfigError(f"{key}.v_max", f"must be > {key}.v_min ({two_hot.v_min}), got {two_hot.v_max}")


registry.register(
    "intervention",
    "two_hot",
    TwoHotConfig,
    build=TwoHot,
    check=check,
    phase="build",
    test_overrides=("intervention.two_hot.num_bins=5",),
)
