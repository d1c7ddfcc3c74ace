"""Spectral normalisation (Miyato et al. 2018; Gogianu et al. 2021) of the first layer (paper 6.2).

Which layer: section 6.2 normalises "the initial linear layer of the CNN and the MLP". Two
readings, the option ``layer``:

* ``first`` (default): the layer that reads the observation (MLP: the first linear layer; CNN,
  Nature CNN, ResNet-18: the first conv; ViT: the patch embedding), "linear" read as "affine";
* ``first_dense``: the body's first dense (``nn.Linear``) layer, "linear" read as in Haiku
  (``hk.Linear``, a dense layer): for the MLP the same layer, for a CNN its first fully connected
  layer after the convolutions (Gogianu et al. normalise layers of the fully connected part);
  ViT's first attention projection; ResNet-18 has none (an error).

Build time only: the chosen layer's weight is divided by its top singular value,
estimated by power iteration (``nets.layers.SpectralNorm``; a conv kernel is read as an
``[out, in*kh*kw]`` matrix). The trained tensor is ``parametrizations.weight.original``; the
optimizer trains it like any other parameter. Optimizer state: untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from .. import registry
from ..errors import ConfigError, positive
from .base import Intervention

LAYERS = ("first", "first_dense")


@dataclass
class SpectralNormConfig:
    n_power_iterations: int = 1  # power-iteration steps per forward in train mode
    eps: float = 1e-12  # added to norms in the power iteration (numerical floor)
    layer: str = "first"  # first: the layer reading the observation | first_dense: the first nn.Linear


class SpectralNorm(Intervention):
    name = "spectral_norm"

    def network_options(self, options: dict[str, Any]) -> None:
        options["spectral_norm"] = {
            "n_power_iterations": int(self.cfg.n_power_iterations),
            "eps": float(self.cfg.eps),
            "layer": str(self.cfg.layer),
        }


def check(cfg: Any, key: str) -> None:
    """``n_power_iterations`` and ``eps`` > 0; ``layer`` one of ``LAYERS``."""
    positive(cfg, f"{key}.n_power_iterations")
    positive(cfg, f"{key}.eps")
    layer = OmegaConf.select(cfg, f"{key}.layer")
    if layer not in LAYERS:
        raise ConfigError(f"{key}.layer", f"must be one of {', '.join(LAYERS)}, got {layer!r}")


registry.register("intervention", "spectral_norm", SpectralNormConfig, build=SpectralNorm, check=check, phase="build")
