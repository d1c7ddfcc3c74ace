"""Output heads: penultimate features -> per-action Q-values, plus the head's TD loss.

A head computes a *raw* output (``raw``), reads Q-values from it (``readout``) and gives the
per-sample TD loss from it (``loss_from_raw``); splitting the three lets plasticity injection sum
the raw outputs of several heads (``InjectedHead``).

* ``scalar``: one Q-value per action and the squared TD error of equation (1) of the paper.
* ``two_hot``: a categorical distribution over a fixed support per action (section 6.2): Q is its
  expectation, the loss is the cross-entropy to the two-hot projection of the TD target.
* ``hl_gauss``: the same head and support; the loss is the cross-entropy to a Gaussian histogram
  of the TD target (HL-Gauss: Imani & White 2018; Farebrother et al. 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScalarHead(nn.Module):
    """One linear output per action; Q(s, a) is the output itself.

    ``shared_bias``: one bias shared by all actions instead of one per action (DQN Zoo's Double DQN
    network, ``linear_with_shared_bias``): ``linear`` has no bias and ``shared_bias`` [1] is added
    to every output; it is drawn like the per-action biases, U(-1/sqrt(F), 1/sqrt(F)).
    """

    def __init__(self, feature_dim: int, num_actions: int, shared_bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_actions, bias=not shared_bias)
        if shared_bias:
            bound = feature_dim**-0.5
            self.shared_bias = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        else:
            self.shared_bias = None
        self.num_actions = num_actions

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        out = self.linear(features)
        return out if self.shared_bias is None else out + self.shared_bias

    def readout(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def loss_from_raw(self, raw: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample squared error (Q(s, a) - target)^2, eq. (1); ``target`` carries no gradient."""
        q_sa = raw.gather(1, a_tm1[:, None]).squeeze(1)
        return (q_sa - target) ** 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Q-values [B, A]."""
        return self.readout(self.raw(features))

    def td_loss(self, features: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_from_raw(self.raw(features), a_tm1, target)

    def output_layers(self) -> list[nn.Module]:
        """The layers that read the features (for unit-level interventions)."""
        return [self.linear]


def two_hot(values: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding ``[..., K]`` of ``values`` on an evenly spaced ``support`` ``[K]``.

    A value is clipped to ``[support[0], support[-1]]`` and split between its two neighbouring
    atoms in proportion to its distance from each, so ``(two_hot(v) * support).sum(-1) == v``
    for every ``v`` inside the support.
    """
    k = support.shape[0]
    v_min, v_max = support[0], support[-1]
    position = (values.clamp(v_min, v_max) - v_min) / (v_max - v_min) * (k - 1)  # in [0, K-1]
    lower = position.floor().clamp(max=k - 2)
    upper_weight = position - lower  # in [0, 1]; 1 exactly at v_max
    # Out of place (no scatter_): the gradient covariance and the probe run this under vmap, where
    # an in-place write into an unbatched buffer is not possible. Each atom gets (1 - w) * 1 + w * 0
    # or (1 - w) * 0 + w * 1: exactly the values a scatter would write.
    atoms = torch.arange(k, device=values.device, dtype=lower.dtype)
    is_lower = (atoms == lower[..., None]).to(support.dtype)
    is_upper = (atoms == lower[..., None] + 1).to(support.dtype)
    return (1 - upper_weight)[..., None] * is_lower + upper_weight[..., None] * is_upper


def two_hot_support(
    v_min: float | None,
    v_max: float | None,
    margin: float,
    returns: tuple[float, float] | None,
    key: str = "intervention.two_hot",
) -> tuple[float, float]:
    """The ends of a two-hot support: ``v_min`` / ``v_max`` as given, or, where None, the return
    range ``returns = (R_min, R_max)`` widened by ``margin * (R_max - R_min)`` at that end."""
    if v_min is not None and v_max is not None:
        return float(v_min), float(v_max)
    if returns is None:
        raise ValueError(
            f"{key}: this environment declares no reward range, so the support cannot be "
            f"derived; set {key}.v_min and {key}.v_max (return units)"
        )
    low, high = returns
    pad = margin * (high - low)
    lo = low - pad if v_min is None else float(v_min)
    hi = high + pad if v_max is None else float(v_max)
    if not hi > lo:
        raise ValueError(f"{key}: empty support [{lo}, {hi}] (returns {returns}, v_min {v_min}, v_max {v_max})")
    return lo, hi


class TwoHotHead(ScalarHead):
    """``num_bins`` logits per action over the support ``linspace(v_min, v_max, num_bins)``.

    Q(s, a) = sum_k softmax(logits(s, a))_k * support_k. The TD loss is the cross-entropy
    ``-sum_k two_hot(target)_k log softmax(logits(s, a))_k``; targets outside the support are
    clipped to its ends, so the support must cover the returns (``two_hot_support`` derives it
    from the task's return range by default, ``interventions/two_hot.py``).
    """

    def __init__(
        self, feature_dim: int, num_actions: int, v_min: float = -100.0, v_max: float = 100.0, num_bins: int = 201
    ):
        nn.Module.__init__(self)
        if num_bins < 2 or not v_max > v_min:
            raise ValueError(f"two_hot head: need num_bins >= 2 and v_max > v_min, got {num_bins}, [{v_min}, {v_max}]")
        self.linear = nn.Linear(feature_dim, num_actions * num_bins)
        self.num_actions, self.num_bins = num_actions, num_bins
        self.register_buffer("support", torch.linspace(v_min, v_max, num_bins), persistent=False)

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        """The categorical target ``[..., K]`` the cross-entropy fits: ``two_hot(target)``."""
        return two_hot(target, self.support)

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [B, A, K]."""
        return self.linear(features).unflatten(-1, (self.num_actions, self.num_bins))

    def readout(self, raw: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(raw, dim=-1) * self.support).sum(-1)

    def loss_from_raw(self, raw: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits_sa = raw[torch.arange(raw.shape[0], device=raw.device), a_tm1]  # [B, K]
        return -(self.target_distribution(target) * F.log_softmax(logits_sa, dim=-1)).sum(-1)


def hl_gauss(values: torch.Tensor, support: torch.Tensor, sigma: float) -> torch.Tensor:
    """HL-Gauss histogram ``[..., K]`` of ``values`` on an evenly spaced ``support`` ``[K]``.

    Atom ``k`` is the bin ``[s_k - d/2, s_k + d/2]`` (``d`` the spacing of the support); its
    probability is the mass of ``N(clip(v), sigma^2)`` on that bin, normalised by the mass on
    ``[s_0 - d/2, s_{K-1} + d/2]``: ``(Phi((e_{k+1} - v) / sigma) - Phi((e_k - v) / sigma)) / Z``.
    Values are clipped to ``[s_0, s_{K-1}]`` first (as the two-hot encoding is).
    """
    k = support.shape[0]
    width = (support[-1] - support[0]) / (k - 1)
    edges = torch.cat([support - width / 2, support[-1:] + width / 2])  # [K + 1]
    v = values.clamp(support[0], support[-1])[..., None]
    cdf = torch.special.ndtr((edges - v) / sigma)  # [..., K + 1]
    return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])


class HLGaussHead(TwoHotHead):
    """The two-hot head's logits, support and readout (Q = expectation over the support); the TD
    loss is the cross-entropy to ``hl_gauss(target, support, sigma)``, ``sigma = sigma_ratio x``
    the support's spacing (Farebrother et al. 2024: 0.75)."""

    def __init__(
        self,
        feature_dim: int,
        num_actions: int,
        v_min: float = -100.0,
        v_max: float = 100.0,
        num_bins: int = 201,
        sigma_ratio: float = 0.75,
    ):
        super().__init__(feature_dim, num_actions, v_min, v_max, num_bins)
        if not sigma_ratio > 0:
            raise ValueError(f"hl_gauss head: need sigma_ratio > 0, got {sigma_ratio}")
        self.sigma = float(sigma_ratio) * (float(v_max) - float(v_min)) / (num_bins - 1)

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        return hl_gauss(target, self.support, self.sigma)


class InjectedHead(nn.Module):
    """Plasticity injection (Nikishin et al. 2023): ``raw = h_old + h_new - h_new_frozen``.

    ``old`` (the head before injection) and ``new_frozen`` are frozen; ``new`` starts equal to
    ``new_frozen``, so the output is unchanged at injection and only ``new`` learns afterwards.
    Readout and loss are those of the wrapped head type (raw outputs are summed: Q-values for the
    scalar head, logits for the two-hot head).
    """

    def __init__(self, old: nn.Module, new: nn.Module, new_frozen: nn.Module):
        super().__init__()
        self.old, self.new, self.new_frozen = old, new, new_frozen
        self.num_actions = old.num_actions

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        return self.old.raw(features) + self.new.raw(features) - self.new_frozen.raw(features)

    def readout(self, raw: torch.Tensor) -> torch.Tensor:
        return self.old.readout(raw)

    def loss_from_raw(self, raw: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.old.loss_from_raw(raw, a_tm1, target)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.readout(self.raw(features))

    def td_loss(self, features: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_from_raw(self.raw(features), a_tm1, target)

    def output_layers(self) -> list[nn.Module]:
        return self.old.output_layers() + self.new.output_layers() + self.new_frozen.output_layers()
