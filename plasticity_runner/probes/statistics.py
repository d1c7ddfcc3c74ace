"""Statistics of parameters and activations that section 5.2 of the paper falsifies as causes.

All are measured on a copy of the network in eval mode, on a fixed evaluation batch of replay
observations; the network itself and the RNG streams are never touched. Definitions (each metric
name carries its threshold; ``the README`` lists every name):

* parameter norm: the L2 norm ``sqrt(sum theta^2)`` of all parameters, and of each layer's own
  parameters (``param_norm/<layer>``);
* weight rank: for the weight of every ``Linear`` and ``Conv`` layer, reshaped to ``[out, -1]``,
  the number of singular values ``sigma_i > rtol * sigma_max`` (a relative tolerance);
* feature rank of the penultimate features ``Phi = features(X)`` ``[N, F]``, from its singular
  values ``sigma_1 >= ... >= sigma_r``:
  - srank (Kumar et al., 2020): ``min{k : sum_{i<=k} sigma_i >= (1 - delta) sum_i sigma_i}``;
  - effective rank (Roy & Vetterli, 2007): ``exp(-sum_i p_i log p_i)``, ``p_i = sigma_i / sum_j sigma_j``;
* dead units: a unit of a hidden activation module (``nn.ReLU``, ``nn.GELU`` or ``CReLU``, see
  ``nets.layers.ACTIVATIONS``) whose output is ``<= 0`` for every input of the batch (for ReLU:
  always zero, so no gradient flows through it: "dead" and "saturated" coincide for ReLU; each of
  CReLU's two outputs per input unit is a unit);
* dormant units (ReDo, Sokar et al., 2023): unit ``i`` of a layer with ``H`` units has score
  ``s_i = E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|)`` and is dormant when ``s_i <= tau``.

A *unit* is a feature of a fully-connected output ``[N, U]``, a channel of a convolution output
``[N, C, H, W]`` (expectations also run over positions), and a feature of a token output
``[N, T, D]`` (expectations also run over tokens).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nets.layers import ACTIVATIONS, raw_weight  # nn.ReLU, nn.GELU, CReLU: the hidden activations of every body


def _fmt(x: float) -> str:
    return f"{float(x):g}"


# ------------------------------------------------------------------------ ranks of singular values


def numerical_rank(singular_values: torch.Tensor, rtol: float) -> int:
    """Number of singular values above ``rtol`` times the largest."""
    if singular_values.numel() == 0 or float(singular_values.max()) <= 0.0:
        return 0
    return int((singular_values > rtol * singular_values.max()).sum())


def srank(singular_values: torch.Tensor, delta: float = 0.01) -> int:
    """Kumar et al. (2020): the fewest singular values holding a ``1 - delta`` share of their sum."""
    s = torch.sort(singular_values.double(), descending=True).values
    total = float(s.sum())
    if total <= 0.0:
        return 0
    cumulative = torch.cumsum(s, 0) / total
    k = int(torch.searchsorted(cumulative, torch.tensor(1.0 - delta, dtype=s.dtype, device=s.device))) + 1
    return min(k, s.numel())


def effective_rank(singular_values: torch.Tensor) -> float:
    """Roy & Vetterli (2007): the exponential of the entropy of the normalised singular values."""
    s = singular_values.double()
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * torch.log(p)).sum()))


# --------------------------------------------------------------------------- parameter statistics


def _layer_of(param_name: str) -> str:
    """The layer a parameter belongs to: ``body.net.1.weight`` and a spectral-norm
    ``body.net.1.parametrizations.weight.original`` both belong to ``body.net.1``."""
    if ".parametrizations." in param_name:
        return param_name.split(".parametrizations.")[0]
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def parameter_statistics(net: nn.Module, rank_rtol: float = 1e-3) -> dict[str, float]:
    """Parameter norms (total and per layer) and weight-matrix ranks (per layer, and their mean).

    Names: ``param_norm``, ``param_norm/<layer>`` (the layer's own parameters), and for every
    ``Linear`` / ``Conv`` layer ``weight_rank_rtol<rtol>/<layer>`` (its trained weight reshaped to
    ``[out, -1]``; a spectral-norm layer's ``original``, which has the rank of ``W / sigma``) and
    ``weight_rank_mean`` (the mean of those ranks).
    """
    out: dict[str, float] = {}
    squares: dict[str, float] = {}
    with torch.no_grad():
        for name, p in net.named_parameters():
            layer = _layer_of(name)
            squares[layer] = squares.get(layer, 0.0) + float(p.double().pow(2).sum())
        for layer, sq in squares.items():
            out[f"param_norm/{layer}"] = sq**0.5
        ranks = []
        for name, module in net.named_modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                w = raw_weight(module).detach()
                sv = torch.linalg.svdvals(w.double().reshape(w.shape[0], -1))
                rank = numerical_rank(sv, rank_rtol)
                out[f"weight_rank_rtol{_fmt(rank_rtol)}/{name}"] = rank
                ranks.append(rank)
    out["param_norm"] = sum(squares.values()) ** 0.5
    if ranks:
        out["weight_rank_mean"] = sum(ranks) / len(ranks)
    return out


# -------------------------------------------------------------------------- activation statistics


def _unit_dim(x: torch.Tensor) -> int:
    return x.dim() - 1 if x.dim() == 3 else 1


@dataclass
class UnitActivity:
    """Per-unit summaries of one activation layer over a batch."""

    ever_positive: torch.Tensor  # [U] bool: output > 0 for at least one input (and position)
    mean_abs: torch.Tensor  # [U] float64: E|h_i| over inputs (and positions)


def unit_activity(activations: torch.Tensor) -> UnitActivity:
    """Summaries of a hand-given activation tensor ``[N, U]``, ``[N, C, H, W]`` or ``[N, T, D]``."""
    dim = _unit_dim(activations)
    x = activations.detach().movedim(dim, -1).reshape(-1, activations.shape[dim])
    return UnitActivity(ever_positive=(x > 0).any(0), mean_abs=x.double().abs().mean(0))


def dead_fraction(activity: UnitActivity) -> float:
    """Fraction of units whose output is never positive on the batch."""
    return float((~activity.ever_positive).double().mean())


def dormant_mask(activity: UnitActivity, tau: float) -> torch.Tensor:
    """ReDo's dormant units: ``s_i <= tau`` with ``s_i`` the unit's share of the layer's mean |h|."""
    layer_mean = activity.mean_abs.mean()
    if float(layer_mean) <= 0.0:
        return torch.ones_like(activity.ever_positive)
    return activity.mean_abs / layer_mean <= tau


def layer_activities(
    net: nn.Module, inputs: torch.Tensor, chunk_size: int = 1024
) -> tuple[dict[str, UnitActivity], torch.Tensor]:
    """Unit activity of every hidden activation module of ``net`` and the penultimate features.

    Runs a deep copy of ``net`` in eval mode under ``no_grad`` with forward hooks on its
    activation modules (``ACTIVATIONS``); returns ``({module name: UnitActivity}, features [N, F])``.
    """
    model = copy.deepcopy(net).eval()
    positive: dict[str, torch.Tensor] = {}
    abs_sum: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    calls: dict[str, int] = {}  # calls of each module in the current forward (a reused module: name#2, ...)

    def hook(module_name: str):
        def fn(_module, _inputs, output):
            calls[module_name] = calls.get(module_name, 0) + 1
            name = module_name if calls[module_name] == 1 else f"{module_name}#{calls[module_name]}"
            dim = _unit_dim(output)
            x = output.detach().movedim(dim, -1).reshape(-1, output.shape[dim])
            pos, s = (x > 0).any(0), x.double().abs().sum(0)
            if name in positive:
                positive[name] |= pos
                abs_sum[name] += s
                counts[name] += x.shape[0]
            else:
                positive[name], abs_sum[name], counts[name] = pos, s, x.shape[0]

        return fn

    for name, module in model.named_modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(hook(name))
    features = []
    with torch.no_grad():
        for i in range(0, inputs.shape[0], chunk_size):
            calls.clear()
            features.append(model.features(inputs[i : i + chunk_size]))
    activity = {n: UnitActivity(positive[n], abs_sum[n] / counts[n]) for n in positive}
    return activity, torch.cat(features)


def network_statistics(net: nn.Module, inputs: torch.Tensor, cfg: Any) -> dict[str, float]:
    """Every statistic of section 5.2 on the evaluation batch ``inputs``; metric name -> value.

    ``cfg`` gives ``srank_delta``, ``weight_rank_rtol`` and ``dormant_tau`` (see ``config.StatisticsConfig``).
    """
    delta, tau = float(cfg.srank_delta), float(cfg.dormant_tau)
    out = parameter_statistics(net, float(cfg.weight_rank_rtol))
    activity, features = layer_activities(net, inputs)
    sv = torch.linalg.svdvals(features.double())
    out[f"feature_srank_delta{_fmt(delta)}"] = srank(sv, delta)
    out["feature_effective_rank"] = effective_rank(sv)
    dead, dormant, units = 0, 0, 0
    dormant_name = f"dormant_frac_tau{_fmt(tau)}"
    for name, act in activity.items():
        n = act.ever_positive.numel()
        n_dead = int((~act.ever_positive).sum())
        n_dormant = int(dormant_mask(act, tau).sum())
        out[f"dead_frac/{name}"] = n_dead / n
        out[f"{dormant_name}/{name}"] = n_dormant / n
        dead, dormant, units = dead + n_dead, dormant + n_dormant, units + n
    if units:
        out["dead_frac"] = dead / units
        out[dormant_name] = dormant / units
    return out
