"""Q-networks: a body (one module each: ``bodies.py`` (mlp, cnn), ``resnet.py``, ``vit.py``,
``nature_cnn.py``, ``minatar_cnn.py``, ...) and a head (``heads.py``).

``build_network`` is the single entry point; interventions that change the architecture (layer
norm, CReLU, spectral norm, the two-hot head) arrive as keyword options from
``interventions.network_options``. To add an architecture: one module in this package that defines
the body (``feature_dim``, ``unit_groups()``), its config dataclass and a ``build`` function, and
calls ``registry.register("architecture", name, <Name>Config, build=..., check=..., order=...,
tiny={...}, test_overrides=[...])``; plus ``configs/architecture/<name>.yaml``. This package imports
every module on import (``registry.load_modules``), so nothing else lists the bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import registry
from .heads import HLGaussHead, InjectedHead, ScalarHead, TwoHotHead, two_hot_support
from .layers import UnitGroup, apply_spectral_norm, first_layer

registry.load_modules(__name__, __path__)  # each body module registers its architecture

# name -> builder(feature_dim, num_actions, **head_options) -> head with forward(), td_loss(), raw()
HEADS: dict[str, Callable[..., nn.Module]] = {
    "scalar": lambda feature_dim, num_actions, shared_bias=False, **_: ScalarHead(
        feature_dim, num_actions, shared_bias
    ),
    "two_hot": lambda feature_dim, num_actions, v_min=None, v_max=None, margin=0.0, num_bins=201, returns=None, **_: (
        TwoHotHead(feature_dim, num_actions, *two_hot_support(v_min, v_max, margin, returns), num_bins=num_bins)
    ),
    "hl_gauss": lambda feature_dim, num_actions, v_min=None, v_max=None, margin=0.0, num_bins=201, sigma_ratio=0.75, returns=None, **_: (
        HLGaussHead(
            feature_dim,
            num_actions,
            *two_hot_support(v_min, v_max, margin, returns, "intervention.hl_gauss"),
            num_bins=num_bins,
            sigma_ratio=sigma_ratio,
        )
    ),
}


class QNetwork(nn.Module):
    """``forward(obs)`` gives Q-values [B, A]; ``td_loss`` gives the head's per-sample TD loss."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, F] (input of the head)."""
        return self.body(obs)

    def td_loss(self, obs: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.head.td_loss(self.body(obs), a_tm1, target)

    def unit_groups(self) -> list[UnitGroup]:
        """The hidden layers whose units can be acted on one by one (``layers.UnitGroup``); a
        group that feeds the features lists the head's output layers as its readers."""
        groups = self.body.unit_groups()
        for g in groups:
            g.name = f"body.{g.name}"
            if not g.outgoing:
                g.outgoing = list(self.head.output_layers())
        return groups


def build_network(
    arch_cfg: Any,
    obs_shape: tuple[int, ...],
    num_actions: int,
    *,
    layer_norm: bool = False,
    activation: str | None = None,
    spectral_norm: dict[str, Any] | None = None,
    head: str = "scalar",
    head_options: dict[str, Any] | None = None,
    returns: tuple[float, float] | None = None,
) -> QNetwork:
    """Build the Q-network named by ``arch_cfg.name`` with its initialisation (torch's default,
    or torchvision's for ResNet-18).

    ``returns``: the task's range of discounted returns (``envs.base.return_range``), from which
    a head derives what its options leave open (the two-hot support's null ends).

    ``spectral_norm`` (options of ``layers.SpectralNorm`` and ``layer``, or None) parametrises the
    body's first layer, the one that reads the observation (``layer: first``), or its first dense
    layer (``layer: first_dense``).
    """
    known = registry.parts("architecture")
    if arch_cfg.name not in known:
        raise ValueError(f"architecture.name: unknown architecture {arch_cfg.name!r}; known: {sorted(known)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; known: {sorted(HEADS)}")
    # the registered builder(arch_cfg, obs_shape, layer_norm, activation): activation None is the
    # body's own (ReLU or GELU), "crelu" concatenated ReLU; every width passes through
    # scaling.scaled with architecture.width_multiplier (figure 5)
    body = known[arch_cfg.name].build(arch_cfg, tuple(obs_shape), layer_norm, activation)
    if spectral_norm is not None:
        options = dict(spectral_norm)
        which = options.pop("layer", "first")
        try:
            layer = first_layer(body, dense=which == "first_dense")
        except ValueError as e:
            raise ValueError(f"intervention.spectral_norm.layer={which}: {e}") from None
        apply_spectral_norm(layer, **options)
    head_options = dict(head_options or {})
    if getattr(arch_cfg, "shared_bias", False):  # one output bias for all actions (DQN Zoo's Double DQN)
        if head != "scalar":
            raise ValueError(f"architecture.shared_bias: only the scalar head has one, not {head!r}")
        head_options["shared_bias"] = True
    return QNetwork(body, HEADS[head](body.feature_dim, num_actions, returns=returns, **head_options))


__all__ = ["HEADS", "InjectedHead", "QNetwork", "UnitGroup", "build_network"]
