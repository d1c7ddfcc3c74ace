"""CReLU: concatenated ReLU activations (Shang et al. 2016; Abbas et al. 2023 against plasticity loss).

Build time only: every hidden activation becomes ``[relu(x), relu(-x)]``, so no unit can be dead
on all inputs; the layer after each activation reads twice as many inputs (more parameters, same
number of pre-activation units). Where it applies per architecture: see ``nets/`` (ResNet-18: the
activation inside each block; ViT: the feed-forward activation, replacing GELU). Optimizer state:
untouched (nothing is reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from .base import Intervention


@dataclass
class CReLUConfig:
    """Concatenated ReLU activations (no options)."""


class CReLU(Intervention):
    name = "crelu"

    def network_options(self, options: dict[str, Any]) -> None:
        options["activation"] = "crelu"


registry.register("intervention", "crelu", CReLUConfig, build=CReLU, phase="build")
