"""Spectral normalisation (Miyato et al. 2018; Gogianu et al. 2021) of the first layer (paper 6.2).

Build time only: the weight of the body's first layer (MLP: the first linear layer; CNN, Nature
CNN, ResNet-18: the first conv; ViT: the patch embedding) is divided by its top singular value,
estimated by power iteration (``nets.layers.SpectralNorm``; a conv kernel is read as an
``[out, in*kh*kw]`` matrix). The trained tensor is ``parametrizations.weight.original``; the
optimizer trains it like any other parameter. Optimizer state: untouched.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention


class SpectralNorm(Intervention):
    name = "spectral_norm"

    def network_options(self, options: dict[str, Any]) -> None:
        options["spectral_norm"] = {"n_power_iterations": int(self.cfg.n_power_iterations), "eps": float(self.cfg.eps)}
