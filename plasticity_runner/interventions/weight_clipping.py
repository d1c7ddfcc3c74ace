"""Weight clipping (Elsayed, Lan, Lyle & Mahmood 2024, "Weight Clipping for Deep Continual and
Reinforcement Learning", RLC): after every optimizer step, each weight is clipped to a multiple
of the range its layer was initialised in.

After every optimizer step, every parameter ``w`` of layer ``l`` of the online network:
``w <- clip(w, -kappa * s_l, kappa * s_l)``, ``s_l`` the bound of layer ``l``'s initialisation
distribution ``U(-s_l, s_l)``. ``kappa`` (default 1) is the only option.

Choices the paper leaves open (ours, named here and in ``configs/intervention/weight_clipping.yaml``):

* ``s_l`` for an initialisation that is not uniform: the paper assumes ``U(-s_l, s_l)``; the
  authors' code takes ``s_l = 1/sqrt(fan_in)`` (PyTorch's default bound) for every layer. Here
  ``s_l = sqrt(3 * mean(W_0^2))`` over layer ``l``'s weight tensor as built: the bound of the
  uniform distribution with the layer's initial second moment. For PyTorch's default
  initialisation ``U(+-1/sqrt(fan_in))`` (every Linear and Conv2d here except ResNet-18's convs)
  that is ``1/sqrt(fan_in)`` up to the sampling error of the mean over the layer's ``n`` weights
  (relative standard deviation ``sqrt(0.2 / n)``: 0.1% for 512 x 256); for ResNet-18's Kaiming
  normal convs, ViT's Xavier-uniform attention in-projection and its truncated-normal class token
  and position embedding it is the bound of the uniform of the same variance, where the authors'
  ``1/sqrt(fan_in)`` would clip a large part of the initial weights at the first step.
* which parameters: every tensor with at least 2 dimensions is a layer's weight and has its own
  ``s_l`` (with spectral norm, the trained ``parametrizations.weight.original``); a bias is clipped
  with the ``s_l`` of the weight beside it (``bias`` with ``weight``, ``in_proj_bias`` with
  ``in_proj_weight``), as the authors clip biases with their layer's bound. Not clipped: the gains
  and offsets of layer, group and batch norms (initialised to the constants 1 and 0, no range to
  scale; Nature CNN's layer-norm gain is 3-D), and 1-D parameters with no weight beside them (the
  shared output bias of ``architecture.shared_bias``). The output layer is clipped (the authors'
  default, ``clip_last_layer``).
* parameters that appear after the build (plasticity injection's new head and its frozen copy)
  take ``s_l`` from their values when this hook first sees them, which is right after the
  injection's fresh draw (this hook runs after ``plasticity_injection``). Frozen parameters are
  clipped too (once within their bound they stay there): the new head and its frozen copy are
  clipped alike at the injection, so the injected network's output is unchanged by it.
* ``kappa`` default: 1, the default of the authors' reference implementation; their supervised
  experiments search ``kappa`` in {1, 2, 3, 4, 5} and their PPO runs use 3. The value of their
  DQN / Rainbow runs was not available offline: tune it.

The bounds (``s_l`` per parameter name) are kept in the checkpoint, so a resumed run clips exactly
as an uninterrupted one. Buffers are untouched; the target network is not clipped itself (it copies
the clipped online parameters at its next update).

Optimizer state: kept (the weights are clamped in place, as in the authors' code; Adam's moments
and step counts are untouched).

Order: after every other after-step hook that writes weights (ReDo, continual backprop, the
scheduled reset, soft shrink-and-perturb, plasticity injection), so that the bound holds at the
end of the step, and before ``nap``, whose projection keeps the final word (with both on, NaP's
rescaling may carry a weight past its bound). The target-update hooks of a step that also updates
the target network come after it; what they write is clipped at the next optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..errors import positive
from ..nets.layers import NORMS
from .base import Intervention, Networks


@dataclass
class WeightClippingConfig:
    kappa: float = 1.0  # clip each weight to [-kappa * s_l, kappa * s_l], s_l its layer's initial bound


def uniform_bound(weight: torch.Tensor) -> float:
    """``sqrt(3 * mean(weight^2))``: the bound ``s`` of the uniform distribution ``U(-s, s)`` with
    the second moment of ``weight`` (computed in float64, read once to the host)."""
    return math.sqrt(3.0 * float(weight.detach().double().square().mean()))


def weight_beside(name: str) -> list[str]:
    """The names of the weight a 1-D parameter ``name`` is the bias of (first match counts)."""
    prefix, _, last = name.rpartition(".")
    prefix = prefix + "." if prefix else ""
    if last == "bias":
        return [f"{prefix}weight", f"{prefix}parametrizations.weight.original"]
    if last.endswith("_bias"):
        return [f"{prefix}{last[: -len('_bias')]}_weight"]
    return []


def init_bounds(net: nn.Module, skip: set[int] | None = None) -> dict[str, float]:
    """``name -> s_l`` for every parameter of ``net`` that weight clipping acts on (module
    docstring), from the values they hold now; parameters whose ``id`` is in ``skip`` are left out.
    A weight whose values are all 0 has no range to scale: a ``ValueError`` names it."""
    norms = {
        f"{module_name}.{name}" if module_name else name
        for module_name, m in net.named_modules()
        if isinstance(m, NORMS)
        for name, _ in m.named_parameters(recurse=False)
    }
    params = {n: p for n, p in net.named_parameters() if n not in norms}
    skip = skip or set()
    weights = {n: p for n, p in params.items() if p.dim() >= 2}
    bounds = {}
    for n, p in params.items():
        if id(p) in skip:
            continue
        weight = n if p.dim() >= 2 else next((w for w in weight_beside(n) if w in weights), None)
        if weight is None:
            continue
        s = uniform_bound(weights[weight])
        if s == 0.0:
            raise ValueError(f"weight_clipping: {weight} is all zeros: kappa * s_l = 0 would pin it there")
        bounds[n] = s
    return bounds


class WeightClipping(Intervention):
    name = "weight_clipping"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.net: nn.Module | None = None  # the online network (its parameters' names, for the checkpoint)
        self.bound: dict[int, float] = {}  # id(parameter) -> s_l of every parameter seen so far
        self.params: list[torch.Tensor] = []  # those parameters (kept alive, so their ids stay theirs)
        self._seen: list[int] = []  # ids of the online network's parameters at the last step
        self._clip: tuple[list[torch.Tensor], list[float], list[float]] = ([], [], [])  # tensors, -kappa s, kappa s

    def on_build(self, networks: Networks) -> None:
        self.net = networks.online
        self._adopt(networks.online)

    def _adopt(self, net: nn.Module) -> None:
        """Record ``s_l`` of the parameters of ``net`` not seen before, from their values now."""
        by_name = dict(net.named_parameters())
        for name, s in init_bounds(net, skip=set(self.bound)).items():
            self.bound[id(by_name[name])] = s
            self.params.append(by_name[name])

    @torch.no_grad()
    def after_step(self, networks: Networks, step: int) -> None:
        params = list(networks.online.parameters())
        ids = [id(p) for p in params]
        if ids != self._seen:  # the first step, a resume or an injection: (new) parameters to clip
            self._adopt(networks.online)
            kappa = float(self.cfg.kappa)
            clipped = [p for p in params if id(p) in self.bound]
            low = [-kappa * self.bound[id(p)] for p in clipped]
            self._clip = (clipped, low, [kappa * self.bound[id(p)] for p in clipped])
            self._seen = ids
        tensors, low, high = self._clip
        if tensors:
            torch._foreach_clamp_min_(tensors, low)
            torch._foreach_clamp_max_(tensors, high)

    def state_dict(self) -> dict:
        """``s_l`` by the online network's parameter names (those of the checkpoint's networks)."""
        if self.net is None:
            return {}
        return {"bounds": {n: self.bound[id(p)] for n, p in self.net.named_parameters() if id(p) in self.bound}}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        """Restore ``s_l`` by name; runs after ``plasticity_injection`` rebuilt its heads (registered
        order), so the names of an injected network exist."""
        by_name = dict(networks.online.named_parameters())
        for name, s in state.get("bounds", {}).items():
            p = by_name[name]
            if id(p) not in self.bound:
                self.params.append(p)
            self.bound[id(p)] = float(s)
        self._seen = []  # the clip lists are rebuilt at the next step


def check(cfg: Any, key: str) -> None:
    """``kappa`` > 0."""
    positive(cfg, f"{key}.kappa")


registry.register(
    "intervention",
    "weight_clipping",
    WeightClippingConfig,
    build=WeightClipping,
    check=check,
    phase="after_step",
    test_overrides=("intervention.weight_clipping.kappa=0.5",),
)
