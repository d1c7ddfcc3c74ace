"""Weight magnitude: the mean absolute value of the parameters (Plasticine's "weight magnitude").

    weight_magnitude = (1 / P) sum_i |theta_i|

over all ``P`` parameters of the online network (the L1 norm divided by the parameter count), and
``weight_magnitude/<layer>`` over a layer's own parameters (``per_layer.layer_of``: weight and bias
of a ``Linear``, a spectral-norm layer's trained ``original``). Unlike ``param_norm`` (the L2 norm,
which grows with the square root of the parameter count) it is an average, comparable across
widths. Sums in float64; the parameters only, no buffers and no inputs.

Written at each pause where due (``diagnostics.weight_magnitude.every_steps``, default: every
pause) under phase ``stats``, beside the statistics of section 5.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import II
from torch import nn

from .. import registry
from .base import Diagnostic, Output, PauseView, check_cadence
from .per_layer import by_layer_name, per_layer

WEIGHT_MAGNITUDE = "weight_magnitude"


def weight_magnitude(net: nn.Module) -> dict[str, float]:
    """``weight_magnitude`` (all parameters) and ``weight_magnitude/<layer>``: mean ``|theta|``."""
    named = [(name, p.detach()) for name, p in net.named_parameters()]
    with torch.no_grad():
        sums = per_layer((n for n, _ in named), torch.stack([p.double().abs().sum() for _, p in named]).tolist())
    counts = per_layer((n for n, _ in named), (p.numel() for _, p in named))
    return by_layer_name(WEIGHT_MAGNITUDE, {k: sums[k] / counts[k] for k in sums})


@dataclass
class WeightMagnitudeConfig:
    """Mean absolute parameter value (config key ``diagnostics.weight_magnitude``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")


class WeightMagnitude(Diagnostic):
    name, phase = "weight_magnitude", "stats"
    scalars = (WEIGHT_MAGNITUDE, f"{WEIGHT_MAGNITUDE}/*")

    def run(self, view: PauseView) -> Output:
        return Output(weight_magnitude(view.online))


registry.register(
    "diagnostic", "weight_magnitude", WeightMagnitudeConfig, build=WeightMagnitude, check=check_cadence, order=50
)
