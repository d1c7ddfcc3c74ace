"""HL-Gauss categorical head (Imani & White 2018, "Improving regression performance with
distributional losses"; Farebrother et al. 2024, "Stop regressing"): two-hot's head, trained on a
Gaussian histogram of the TD target instead of its two-hot projection.

Build time only: selects ``nets.heads.HLGaussHead``: ``num_bins`` logits per action over two-hot's
support ``linspace(v_min, v_max, num_bins)`` (same keys, same defaults: null ends derived from the
task's return range widened by ``margin``, ``nets.heads.two_hot_support``), Q = the expectation over
the support. The loss is the cross-entropy to ``hl_gauss(target)``: atom ``k`` stands for the bin
``[s_k - d/2, s_k + d/2]`` (``d`` the spacing) and gets the mass of ``N(target, sigma^2)`` on it,
normalised over ``[v_min - d/2, v_max + d/2]``; ``sigma = sigma_ratio * d``.

Choices named: ``sigma_ratio`` 0.75 (Farebrother et al.'s recommended sigma / bin width); bins
centred on two-hot's atoms, so the histogram's outer edges lie half a bin beyond ``v_min`` and
``v_max`` (Farebrother et al. put the edges at ``linspace(v_min, v_max, num_bins + 1)`` and read Q
at the bin centres); targets clipped to ``[v_min, v_max]`` first, as two-hot clips them.

The plasticity probe's options are two-hot's: ``probe.two_hot_fit=cross_entropy`` fits the logits
by the cross-entropy to the HL-Gauss histogram of the probe targets (``expected_q``, the default,
fits the expected Q). Optimizer state: untouched. Cannot compose with ``two_hot`` (both choose the
head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from ..errors import positive
from .base import Intervention, incompatible
from .two_hot import check as check_support


@dataclass
class HLGaussConfig:
    v_min: float | None = None  # lowest atom (return units); null: derived as two_hot's
    v_max: float | None = None  # highest atom (return units); null: derived as two_hot's
    margin: float = 0.1  # widening of a derived end, as two_hot's
    num_bins: int = 201  # atoms, linspace(v_min, v_max, num_bins), as two_hot
    sigma_ratio: float = 0.75  # sigma of the Gaussian / the support's spacing (Farebrother et al. 2024)


class HLGauss(Intervention):
    name = "hl_gauss"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, {"two_hot": "both choose the categorical head and its loss"})

    def network_options(self, options: dict[str, Any]) -> None:
        options["head"] = "hl_gauss"
        v_min, v_max = self.cfg.v_min, self.cfg.v_max
        options["head_options"] = {  # null ends: derived from the env's return range, as two_hot's
            "v_min": None if v_min is None else float(v_min),
            "v_max": None if v_max is None else float(v_max),
            "margin": float(self.cfg.margin),
            "num_bins": int(self.cfg.num_bins),
            "sigma_ratio": float(self.cfg.sigma_ratio),
        }


def check(cfg: Any, key: str) -> None:
    """Two-hot's checks of the support, and ``sigma_ratio`` > 0."""
    check_support(cfg, key)
    positive(cfg, f"{key}.sigma_ratio")


registry.register(
    "intervention",
    "hl_gauss",
    HLGaussConfig,
    build=HLGauss,
    check=check,
    phase="build",
    test_overrides=("intervention.hl_gauss.num_bins=5",),
)
