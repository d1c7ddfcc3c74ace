"""Deep Fourier features (Lewandowski, Schuurmans & Machado 2025, "Plastic learning with deep
Fourier features"): every hidden activation becomes ``[sin(x), cos(x)]`` of its pre-activation.

Build time only (``nets.layers.Fourier``). Width: as ``crelu`` here, each hidden layer keeps its
``width`` pre-activation units and the layer after the activation reads twice as many inputs (the
fan-in of the next layer doubles; more parameters, same number of units). Lewandowski et al. keep
the parameter count comparable instead; which of the two their code does was not checked here,
so this is a named choice. No scale on the pre-activation (``sin(x)``, not ``sin(w x)``), and
every body's own initialisation is kept (torch's default, torchvision's for ResNet-18): also
choices. Where it applies per architecture: wherever CReLU does (``nets/``: every hidden
activation of MLP / CNN / Nature CNN / MinAtar CNN / IMPALA CNN; ResNet-18 inside each block; the
ViT feed-forward activation instead of GELU).

Optimizer state: untouched (nothing is reset). Cannot compose with ``crelu`` (both choose the
activation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from .base import Intervention, incompatible


@dataclass
class FourierConfig:
    """Concatenated sine and cosine activations (no options)."""


class Fourier(Intervention):
    name = "fourier"

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, {"crelu": "both replace every hidden activation"})

    def network_options(self, options: dict[str, Any]) -> None:
        options["activation"] = "fourier"


registry.register("intervention", "fourier", FourierConfig, build=Fourier, phase="build")
