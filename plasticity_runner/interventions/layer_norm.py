"""Layer normalisation (Ba et al. 2016) after each conv and fully-connected hidden layer (paper 6.2).

Build time only. MLP, CNN, Nature CNN: a layer norm after each hidden layer, before its
activation (over (C, H, W) for a conv output). ResNet-18 already normalises after every conv with
BatchNorm: each BatchNorm becomes a layer norm over (C, H, W) with a per-channel affine. ViT
already layer-normalises each block's inputs: a layer norm is added after the patch embedding and
after the feed-forward hidden layer. Optimizer state: untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from .base import Intervention


@dataclass
class LayerNormConfig:
    """Layer norm after each conv and fully-connected hidden layer (no options)."""


class LayerNorm(Intervention):
    name = "layer_norm"

    def network_options(self, options: dict[str, Any]) -> None:
        options["layer_norm"] = True


registry.register("intervention", "layer_norm", LayerNormConfig, build=LayerNorm, phase="build")
