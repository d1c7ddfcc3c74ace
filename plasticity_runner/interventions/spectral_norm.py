"""Spectral normalisation (Miyato et al. 2018; Gogianu et al. 2021) of the first layer (paper 6.2).

Build time only: the weight of the body's first layer (MLP: the first linear layer; CNN, Nature
CNN, ResNet-18: the first conv; ViT: the patch embedding) is divided by its top singular value,
estimated by power iteration (``nets.layers.SpectralNorm``; a conv kernel is read as an
``[out, in*kh*kw]`` matrix). The trained tensor is ``parametrizations.weight.original``; the
optimizer trains it like any other parameter. Optimizer state: untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from ..errors import positive
from .base import Intervention


@dataclass
class SpectralNormConfig:
    n_power_iterations: int = 1  # power-iteration steps per forward in train mode
    eps: float = 1e-12  # added to norms in the power iteration (numerical floor)


class SpectralNorm(Intervention):
    name = "spectral_norm"

    def network_options(self, options: dict[str, Any]) -> None:
        options["spectral_norm"] = {"n_power_iterations": int(self.cfg.n_power_iterations), "eps": float(self.cfg.eps)}


def check(cfg: Any, key: str) -> None:
    """``n_power_iterations`` and ``eps`` > 0."""
    positive(cfg, f"{key}.n_power_iterations")
    positive(cfg, f"{key}.eps")


registry.register("intervention", "spectral_norm", SpectralNormConfig, build=SpectralNorm, check=check,
    order=30, phase="build")
