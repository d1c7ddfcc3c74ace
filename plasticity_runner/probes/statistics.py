"""Statistics of parameters and activations that section 5.2 of the paper falsifies as causes.

All are measured on a copy of the network in eval mode, on a fixed evaluation batch of replay
observations; the network itself and the RNG streams are never touched. Definitions (each metric
name carries its threshold; ``docs/metrics.md`` lists every name):

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
  ``s_i = E_x|h_i(x)| / ((1/H) sum_k E_x|h_k(x)|)`` and is dormant when ``s_i <= tau``;
* active units (Dohare et al., 2024's "dormant" units are the complement with
  ``p = 0.01``): the fraction of units whose output is ``> 0`` on at least a fraction ``p`` of the
  batch's inputs (and positions), and the mean over units of that fraction of inputs (the
  activation rate);
* duplicate units: a unit that is not dead and has a partner ``v`` in its layer, not dead either,
  with ``||h_u - h_v||_2 <= rtol * max(||h_u||_2, ||h_v||_2)``, ``h_u`` the unit's activations
  over the batch (and positions) as one vector; both units of a pair count;
* feature norm: the mean over the batch of ``||phi(x)||_2``, ``phi`` the penultimate features;
* stable rank of ``Phi``: ``||Phi||_F^2 / ||Phi||_2^2 = sum_i sigma_i^2 / sigma_1^2`` (not Kumar's
  srank; Dohare et al.'s code calls srank "stable rank").

A *unit* is a feature of a fully-connected output ``[N, U]``, a channel of a convolution output
``[N, C, H, W]`` (expectations also run over positions), and a feature of a token output
``[N, T, D]`` (expectations also run over tokens).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import II
from torch import nn

from .. import registry
from ..errors import positive, unit
from ..nets.layers import ACTIVATIONS, raw_weight  # nn.ReLU, nn.GELU, CReLU: the hidden activations of every body
from .base import Diagnostic, Output, PauseView, check_cadence
from .per_layer import layer_squares


def _fmt(x: float) -> str:
    return f"{float(x):g}"


# metric names that carry their threshold (the report keys on them at the defaults: ``SCALARS``)
def srank_name(delta: float) -> str:
    return f"feature_srank_delta{_fmt(delta)}"


def weight_rank_name(rtol: float) -> str:
    return f"weight_rank_rtol{_fmt(rtol)}"


def dormant_name(tau: float) -> str:
    return f"dormant_frac_tau{_fmt(tau)}"


def active_name(min_frac: float) -> str:
    return f"active_frac_p{_fmt(min_frac)}"


def duplicate_name(rtol: float) -> str:
    return f"duplicate_frac_rtol{_fmt(rtol)}"


PARAM_NORM, WEIGHT_RANK_MEAN, DEAD_FRAC, ACTIVATION_RATE = (
    "param_norm",
    "weight_rank_mean",
    "dead_frac",
    "activation_rate_mean",
)
FEATURE_NORM, FEATURE_STABLE_RANK = "feature_norm_mean", "feature_stable_rank"


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


def parameter_statistics(net: nn.Module, rank_rtol: float = 1e-3) -> dict[str, float]:
    """Parameter norms (total and per layer) and weight-matrix ranks (per layer, and their mean).

    Names: ``param_norm``, ``param_norm/<layer>`` (the layer's own parameters), and for every
    ``Linear`` / ``Conv`` layer ``weight_rank_rtol<rtol>/<layer>`` (its trained weight reshaped to
    ``[out, -1]``; a spectral-norm layer's ``original``, which has the rank of ``W / sigma``) and
    ``weight_rank_mean`` (the mean of those ranks).
    """
    out: dict[str, float] = {}
    squares = {layer: sq for layer, sq in layer_squares(net.named_parameters()).items() if layer is not None}
    for layer, sq in squares.items():
        out[f"{PARAM_NORM}/{layer}"] = sq**0.5
    with torch.no_grad():
        ranks = []
        for name, module in net.named_modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                w = raw_weight(module).detach()
                sv = torch.linalg.svdvals(w.double().reshape(w.shape[0], -1))
                rank = numerical_rank(sv, rank_rtol)
                out[f"{weight_rank_name(rank_rtol)}/{name}"] = rank
                ranks.append(rank)
    out[PARAM_NORM] = sum(squares.values()) ** 0.5
    if ranks:
        out[WEIGHT_RANK_MEAN] = sum(ranks) / len(ranks)
    return out


# -------------------------------------------------------------------------- activation statistics


def _unit_dim(x: torch.Tensor) -> int:
    return x.dim() - 1 if x.dim() == 3 else 1


@dataclass
class UnitActivity:
    """Per-unit summaries of one activation layer over a batch."""

    ever_positive: torch.Tensor  # [U] bool: output > 0 for at least one input (and position)
    mean_abs: torch.Tensor  # [U] float64: E|h_i| over inputs (and positions)
    positive_frac: torch.Tensor | None = None  # [U] float64: fraction of inputs (and positions) with output > 0
    gram: torch.Tensor | None = None  # [U, U] float64: sum over inputs (and positions) of h_u h_v


def _unit_rows(activations: torch.Tensor) -> torch.Tensor:
    """``[M, U]``: one row per input (and position or token), one column per unit."""
    dim = _unit_dim(activations)
    return activations.detach().movedim(dim, -1).reshape(-1, activations.shape[dim])


def unit_activity(activations: torch.Tensor) -> UnitActivity:
    """Summaries of a hand-given activation tensor ``[N, U]``, ``[N, C, H, W]`` or ``[N, T, D]``."""
    x = _unit_rows(activations)
    return UnitActivity(
        ever_positive=(x > 0).any(0),
        mean_abs=x.double().abs().mean(0),
        positive_frac=(x > 0).double().mean(0),
        gram=x.double().T @ x.double(),
    )


def dead_fraction(activity: UnitActivity) -> float:
    """Fraction of units whose output is never positive on the batch."""
    return float((~activity.ever_positive).double().mean())


def active_mask(activity: UnitActivity, min_frac: float) -> torch.Tensor:
    """Units whose output is ``> 0`` on at least a fraction ``min_frac`` of the inputs (and positions)."""
    return activity.positive_frac >= min_frac


def duplicate_mask(activity: UnitActivity, rtol: float) -> torch.Tensor:
    """Units (not dead) with a partner (not dead) in the layer whose activation vector over the batch
    is within ``rtol * max(||h_u||, ||h_v||)`` in L2 distance; from the Gram matrix of the layer."""
    gram = activity.gram
    sq = torch.diagonal(gram)
    dist2 = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)
    bound2 = (rtol**2) * torch.maximum(sq[:, None], sq[None, :])
    alive = activity.ever_positive
    close = (dist2 <= bound2) & alive[:, None] & alive[None, :]
    close.fill_diagonal_(False)
    return close.any(1)


def dormant_mask(activity: UnitActivity, tau: float) -> torch.Tensor:
    """ReDo's dormant units: ``s_i <= tau`` with ``s_i`` the unit's share of the layer's mean |h|."""
    layer_mean = activity.mean_abs.mean()
    if float(layer_mean) <= 0.0:
        return torch.ones_like(activity.ever_positive)
    return activity.mean_abs / layer_mean <= tau


def layer_activities(
    net: nn.Module, inputs: torch.Tensor, chunk_size: int = 1024, gram: bool = True
) -> tuple[dict[str, UnitActivity], torch.Tensor]:
    """Unit activity of every hidden activation module of ``net`` and the penultimate features.

    Runs a deep copy of ``net`` in eval mode under ``no_grad`` with forward hooks on its
    activation modules (``ACTIVATIONS``); returns ``({module name: UnitActivity}, features [N, F])``.
    With ``gram``, each layer's Gram matrix ``sum_x h(x) h(x)^T`` (for duplicate units) is computed in float64: the
    distances come from ``G_uu + G_vv - 2 G_uv``, which float32 would round by ~1e-5 relative,
    too close to the default threshold ``rtol^2 = 1e-4``.
    """
    model = copy.deepcopy(net).eval()
    positive: dict[str, torch.Tensor] = {}
    abs_sum: dict[str, torch.Tensor] = {}
    pos_count: dict[str, torch.Tensor] = {}
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    calls: dict[str, int] = {}  # calls of each module in the current forward (a reused module: name#2, ...)

    def hook(module_name: str):
        def fn(_module, _inputs, output):
            calls[module_name] = calls.get(module_name, 0) + 1
            name = module_name if calls[module_name] == 1 else f"{module_name}#{calls[module_name]}"
            x = _unit_rows(output)
            xd, is_pos = x.double(), x > 0
            pos, s, n_pos = is_pos.any(0), xd.abs().sum(0), is_pos.sum(0, dtype=torch.float64)
            g = xd.T @ xd if gram else None
            if name in positive:
                positive[name] |= pos
                abs_sum[name] += s
                pos_count[name] += n_pos
                if gram:
                    grams[name] += g
                counts[name] += x.shape[0]
            else:
                positive[name], abs_sum[name], counts[name] = pos, s, x.shape[0]
                pos_count[name], grams[name] = n_pos, g

        return fn

    for name, module in model.named_modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(hook(name))
    features = []
    with torch.no_grad():
        for i in range(0, inputs.shape[0], chunk_size):
            calls.clear()
            features.append(model.features(inputs[i : i + chunk_size]))
    activity = {
        n: UnitActivity(positive[n], abs_sum[n] / counts[n], pos_count[n] / counts[n], grams[n]) for n in positive
    }
    return activity, torch.cat(features)


def network_statistics(net: nn.Module, inputs: torch.Tensor, cfg: Any) -> dict[str, float]:
    """Every statistic of section 5.2 (and the activation statistics of Dohare et al. and ReDo) on the evaluation batch
    ``inputs``; metric name -> value.

    ``cfg`` gives ``srank_delta``, ``weight_rank_rtol``, ``dormant_tau``, ``active_min_frac`` and
    ``duplicate_rtol`` (see ``StatisticsConfig``; the last two default to 0.01).
    """
    delta, tau = float(cfg.srank_delta), float(cfg.dormant_tau)
    min_frac = float(getattr(cfg, "active_min_frac", 0.01))
    dup_rtol = getattr(cfg, "duplicate_rtol", 0.01)  # None: no duplicate units (no Gram matrices)
    out = parameter_statistics(net, float(cfg.weight_rank_rtol))
    activity, features = layer_activities(net, inputs, gram=dup_rtol is not None)
    out.update(feature_statistics(features, delta))
    totals = dict.fromkeys(("dead", "dormant", "active", "rate", "duplicate", "units"), 0.0)
    names = {"dormant": dormant_name(tau), "active": active_name(min_frac), "rate": ACTIVATION_RATE}
    if dup_rtol is not None:
        names["duplicate"] = duplicate_name(dup_rtol)
    for name, act in activity.items():
        n = act.ever_positive.numel()
        counts = {
            "dead": int((~act.ever_positive).sum()),
            "dormant": int(dormant_mask(act, tau).sum()),
            "active": int(active_mask(act, min_frac).sum()),
            "rate": float(act.positive_frac.sum()),
        }
        if dup_rtol is not None:
            counts["duplicate"] = int(duplicate_mask(act, float(dup_rtol)).sum())
        out[f"{DEAD_FRAC}/{name}"] = counts["dead"] / n
        for key, metric in names.items():
            out[f"{metric}/{name}"] = counts[key] / n
        for key, value in counts.items():
            totals[key] += value
        totals["units"] += n
    if totals["units"]:
        out[DEAD_FRAC] = totals["dead"] / totals["units"]
        for key, metric in names.items():
            out[metric] = totals[key] / totals["units"]
    return out


def feature_statistics(features: torch.Tensor, delta: float = 0.01) -> dict[str, float]:
    """Statistics of the penultimate features ``Phi`` ``[N, F]``: srank (Kumar et al., 2020), effective
    rank (Roy & Vetterli, 2007), stable rank ``||Phi||_F^2 / ||Phi||_2^2`` and the mean feature norm
    ``mean_x ||phi(x)||_2``."""
    phi = features.double()
    sv = torch.linalg.svdvals(phi)
    out = {srank_name(delta): srank(sv, delta), "feature_effective_rank": effective_rank(sv)}
    out[FEATURE_STABLE_RANK] = stable_rank(sv)
    out[FEATURE_NORM] = float(phi.norm(dim=1).mean())
    return out


def stable_rank(singular_values: torch.Tensor) -> float:
    """``sum_i sigma_i^2 / max_i sigma_i^2`` (``||M||_F^2 / ||M||_2^2``), in ``[1, rank]``; 0 for a zero matrix."""
    s = singular_values.double()
    if s.numel() == 0 or float(s.max()) <= 0.0:
        return 0.0
    return float((s**2).sum() / s.max() ** 2)


# ------------------------------------------------------------------------------ the diagnostic


@dataclass
class StatisticsConfig:
    """Parameter and activation statistics of section 5.2 (config key ``diagnostics.statistics``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 1024
    srank_delta: float = 0.01
    weight_rank_rtol: float = 1e-3
    dormant_tau: float = 0.025
    active_min_frac: float = 0.01  # active_frac_p<p>: output > 0 on at least this fraction of inputs
    # duplicate_frac_rtol<rtol>: ||h_u - h_v|| <= rtol * max(||h_u||, ||h_v||); null: not computed
    duplicate_rtol: float | None = 0.01


# the names written at the default thresholds (the report's; ``<family>/*``: one per layer)
_D = StatisticsConfig
FEATURE_SRANK, DORMANT = srank_name(_D.srank_delta), dormant_name(_D.dormant_tau)
ACTIVE, DUPLICATE = active_name(_D.active_min_frac), duplicate_name(_D.duplicate_rtol)
SCALARS = (
    PARAM_NORM,
    f"{PARAM_NORM}/*",
    WEIGHT_RANK_MEAN,
    f"{weight_rank_name(_D.weight_rank_rtol)}/*",
    FEATURE_SRANK,
    "feature_effective_rank",
    FEATURE_STABLE_RANK,
    FEATURE_NORM,
    *(n for name in (DEAD_FRAC, DORMANT, ACTIVE, ACTIVATION_RATE, DUPLICATE) for n in (name, f"{name}/*")),
)


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    for name in ("num_inputs", "srank_delta", "weight_rank_rtol"):
        positive(cfg, f"{key}.{name}")
    unit(cfg, f"{key}.srank_delta")
    unit(cfg, f"{key}.active_min_frac")
    positive(cfg, f"{key}.duplicate_rtol", allow_zero=True)
    positive(cfg, f"{key}.dormant_tau", allow_zero=True)


class Statistics(Diagnostic):
    """``network_statistics`` of the online network on the first ``num_inputs`` observations of the
    evaluation batch: phase ``stats``."""

    name, phase, scalars = "statistics", "stats", SCALARS

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).num_inputs)

    def run(self, view: PauseView) -> Output:
        return Output(network_statistics(view.online, view.batch.o_tm1, self.config(view.cfg)))


registry.register("diagnostic", "statistics", StatisticsConfig, build=Statistics, check=check, order=10)
