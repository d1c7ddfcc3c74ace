"""Q-networks: a body (``bodies.py``, ``resnet.py``, ``vit.py``, ``nature_cnn.py``) and a head
(``heads.py``).

``build_network`` is the single entry point; interventions that change the architecture (layer
norm, CReLU, spectral norm, the two-hot head) arrive as keyword options from
``interventions.network_options``. To add an architecture: write a body module with
``feature_dim`` and ``unit_groups()``, register its builder in ``BODIES``, add its schema to
``config.SCHEMAS["architecture"]`` and a ``configs/architecture/<name>.yaml``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .bodies import CNNBody, MLPBody
from .heads import InjectedHead, ScalarHead, TwoHotHead
from .layers import UnitGroup, apply_spectral_norm, first_layer
from .minatar_cnn import MinAtarCNNBody
from .nature_cnn import CONV_CHANNELS, NatureCNNBody
from .resnet import ResNet18Body
from .scaling import scaled
from .vit import ViTBody


def _w(cfg: Any, width: int) -> int:
    """``width`` as the body builds it: ``scaling.scaled`` by ``architecture.width_multiplier`` (1
    when the config predates it)."""
    m = getattr(cfg, "width_multiplier", None)
    return scaled(width, 1.0 if m is None else float(m))


# name -> builder(arch_cfg, obs_shape, layer_norm, activation) -> body with .feature_dim, .unit_groups()
# (activation None: the body's own, ReLU or GELU; "crelu": concatenated ReLU); every width passes
# through ``scaling.scaled`` with ``architecture.width_multiplier`` (figure 5)
BODIES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda cfg, shape, ln, activation=None: MLPBody(
        shape, _w(cfg, cfg.width), cfg.num_layers, ln, activation
    ),
    "cnn": lambda cfg, shape, ln, activation=None: CNNBody(
        shape, _w(cfg, cfg.channels), _w(cfg, cfg.hidden), cfg.conv_stride, ln, activation
    ),
    "resnet18": lambda cfg, shape, ln, activation=None: ResNet18Body(
        shape, _w(cfg, cfg.width), str(getattr(cfg.stem, "value", cfg.stem)), ln, activation
    ),
    "vit": lambda cfg, shape, ln, activation=None: ViTBody(
        shape,
        cfg.patch_size,
        _w(cfg, cfg.dim),
        _w(cfg, cfg.ff_dim),
        cfg.num_blocks,
        cfg.num_heads,
        cfg.dropout,
        str(getattr(cfg.pool, "value", cfg.pool)),
        ln,
        activation,
    ),
    "nature_cnn": lambda cfg, shape, ln, activation=None: NatureCNNBody(
        shape, _w(cfg, cfg.hidden), ln, activation,
        conv_channels=tuple(_w(cfg, c) for c in CONV_CHANNELS),
    ),
    "minatar_cnn": lambda cfg, shape, ln, activation=None: MinAtarCNNBody(
        shape, _w(cfg, cfg.channels), _w(cfg, cfg.hidden), ln, activation
    ),
}
# name -> builder(feature_dim, num_actions, **head_options) -> head with forward(), td_loss(), raw()
HEADS: dict[str, Callable[..., nn.Module]] = {
    "scalar": lambda feature_dim, num_actions, shared_bias=False, **_: ScalarHead(
        feature_dim, num_actions, shared_bias
    ),
    "two_hot": lambda feature_dim, num_actions, **opts: TwoHotHead(feature_dim, num_actions, **opts),
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
) -> QNetwork:
    """Build the Q-network named by ``arch_cfg.name`` with its initialisation (torch's default,
    or torchvision's for ResNet-18).

    ``spectral_norm`` (options of ``layers.SpectralNorm``, or None) parametrises the body's first
    layer, the one that reads the observation.
    """
    if arch_cfg.name not in BODIES:
        raise ValueError(f"architecture.name: unknown architecture {arch_cfg.name!r}; known: {sorted(BODIES)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; known: {sorted(HEADS)}")
    body = BODIES[arch_cfg.name](arch_cfg, tuple(obs_shape), layer_norm, activation)
    if spectral_norm is not None:
        apply_spectral_norm(first_layer(body), **spectral_norm)
    head_options = dict(head_options or {})
    if getattr(arch_cfg, "shared_bias", False):  # one output bias for all actions (DQN Zoo's Double DQN)
        if head != "scalar":
            raise ValueError(f"architecture.shared_bias: only the scalar head has one, not {head!r}")
        head_options["shared_bias"] = True
    return QNetwork(body, HEADS[head](body.feature_dim, num_actions, **head_options))


__all__ = ["BODIES", "HEADS", "InjectedHead", "QNetwork", "UnitGroup", "build_network"]
