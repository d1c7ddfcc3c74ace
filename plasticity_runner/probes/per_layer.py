"""Per-layer sums of per-parameter values, and their metric names (``prefix/<layer>``): shared by
the statistics of section 5.2, the training dynamics and the weight magnitude."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def layer_of(param_name: str) -> str:
    """The layer a parameter belongs to: ``body.net.1.weight`` and a spectral-norm
    ``body.net.1.parametrizations.weight.original`` both belong to ``body.net.1``."""
    if ".parametrizations." in param_name:
        return param_name.split(".parametrizations.")[0]
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def per_layer(names: Iterable[str], values: Iterable[float]) -> dict[str | None, float]:
    """``{layer: sum, None: total}`` of one value per named parameter, added in the names' order."""
    out: dict[str | None, float] = {}
    for name, value in zip(names, values):
        for key in (layer_of(name), None):
            out[key] = out.get(key, 0.0) + value
    return out


def by_layer_name(prefix: str, values: dict[str | None, float]) -> dict[str, float]:
    """``{None: total, layer: v}`` -> the metric names ``{prefix: total, prefix/layer: v}``."""
    return {prefix if k is None else f"{prefix}/{k}": v for k, v in values.items()}


def layer_squares(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str | None, float]:
    """``{layer: sum of squares, None: total}`` of named tensors (parameters, their gradients or
    differences; float64 sums per tensor, added in the tensors' order), read to the host at once."""
    named = list(named)
    if not named:
        return {}
    with torch.no_grad():
        values = torch.stack([t.double().pow(2).sum() for _, t in named]).tolist()
    return per_layer((name for name, _ in named), values)
