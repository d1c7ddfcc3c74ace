"""Building blocks shared by the bodies: activations, spectral normalisation, padding, unit maps.

* ``CReLU``: concatenated ReLU ``[relu(x), relu(-x)]`` (Shang et al. 2016; Abbas et al. 2023 for
  plasticity). It doubles the width along ``dim``; the next layer reads twice as many inputs.
* ``Fourier``: deep Fourier features ``[sin(x), cos(x)]`` (Lewandowski et al. 2025), laid out and
  widened as CReLU is.
* ``SpectralNorm``: a parametrisation ``W -> W / sigma(W)`` with one power-iteration step per
  training forward (Miyato et al. 2018). torch's own ``spectral_norm`` writes its power-iteration
  vectors with ``out=`` arguments, which ``vmap`` cannot batch; this one updates its buffer with
  ``copy_``, so it works under the probe's ``vmap(functional_call)`` with stacked buffers.
* ``pad_to``: zero padding at the bottom and right, for inputs smaller than (or not a multiple
  of) what a body needs.
* ``UnitGroup``: which layers feed and read one hidden layer's units, for interventions that act
  on single units (ReDo) without knowing the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class CReLU(nn.Module):
    """``cat([relu(x), relu(-x)], dim)``: twice the units of its input, none of them ever all dead."""

    expansion = 2

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=self.dim)


class Fourier(nn.Module):
    """Deep Fourier features ``cat([sin(x), cos(x)], dim)`` (Lewandowski, Schuurmans & Machado 2025):
    twice the units of its input, as CReLU; the next layer reads twice as many inputs."""

    expansion = 2

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(x), torch.cos(x)], dim=self.dim)


ACTIVATION_NAMES = ("relu", "gelu", "crelu", "fourier")


def make_activation(name: str | None, default: str = "relu", dim: int = 1) -> nn.Module:
    """A fresh activation module: ``name`` (or the body's ``default`` when None); CReLU cats on ``dim``."""
    name = name or default
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "crelu":
        return CReLU(dim)
    if name == "fourier":
        return Fourier(dim)
    raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}")


def expansion(activation: nn.Module) -> int:
    """How many outputs an activation makes per input unit (2 for CReLU and Fourier, else 1)."""
    return int(getattr(activation, "expansion", 1))


ACTIVATIONS = (nn.ReLU, nn.GELU, CReLU, Fourier)
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


class SpectralNorm(nn.Module):
    """Parametrisation ``W / sigma``, ``sigma = u^T W v`` from power iteration on ``W`` as a matrix.

    A conv kernel ``[out, in, kh, kw]`` is read as the matrix ``[out, in*kh*kw]`` (Miyato et al.;
    torch does the same), which bounds that matrix's top singular value, not the conv operator's.
    Training forwards run ``n_power_iterations`` steps and store ``u``; eval forwards run one step
    from the stored ``u`` without storing it, so they are deterministic. The estimate ``sigma``
    never exceeds the true top singular value, and converges to it as the weights drift slowly.
    """

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError("spectral norm: n_power_iterations must be >= 1")
        self.n_power_iterations, self.eps = int(n_power_iterations), float(eps)
        u = torch.randn(weight.shape[0], device=weight.device, dtype=weight.dtype)
        self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        with torch.no_grad():
            u = self._u
            for _ in range(self.n_power_iterations if self.training else 1):
                v = F.normalize(matrix.t() @ u, dim=0, eps=self.eps)
                u = F.normalize(matrix @ v, dim=0, eps=self.eps)
            if self.training:
                self._u.copy_(u)  # copy_, not out=: batchable under vmap with stacked buffers
        sigma = u @ (matrix @ v)
        return weight / sigma


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> nn.Module:
    """Parametrise ``module.weight`` with ``SpectralNorm``; the trained tensor becomes
    ``module.parametrizations.weight.original``."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, n_power_iterations, eps))
    return module


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The trained weight tensor of a layer (``parametrizations.weight.original`` when parametrised)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def first_layer(body: nn.Module, dense: bool = False) -> nn.Module:
    """The first ``Linear``/``Conv2d`` registered in a body: in every body here, the layer that
    reads the observation (MLP's first layer, the CNNs' first conv, ResNet's stem, ViT's patch
    embedding). With ``dense``, the first ``Linear`` (a CNN's first fully connected layer after
    its convolutions; ViT's first attention projection)."""
    kinds = (nn.Linear,) if dense else (nn.Linear, nn.Conv2d)
    for m in body.modules():
        if isinstance(m, kinds):
            return m
    raise ValueError(f"{type(body).__name__} has no {'Linear' if dense else 'Linear or Conv2d'} layer")


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``[..., H, W]`` at the bottom and right to ``[..., height, width]`` (no-op if already)."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh <= 0 and dw <= 0:
        return x
    return F.pad(x, (0, max(dw, 0), 0, max(dh, 0)))


@dataclass
class UnitGroup:
    """The units of one hidden layer and the layers around them.

    ``incoming``: layers whose parameters index the units along dim 0 (the layer producing them:
    weight rows and bias; any norm between it and the activation: its per-unit affine).
    ``activation``: the module whose output holds the units, along ``unit_dim``, ``expansion``
    times (CReLU: ``[relu(x), relu(-x)]``). ``outgoing``: layers whose weight reads the units
    along dim 1, laid out as ``(expansion, units, spatial)`` where ``spatial`` is ``H*W`` when a
    flatten sits between a conv activation and a linear layer, else 1.
    """

    name: str
    incoming: list[nn.Module]
    activation: nn.Module
    outgoing: list[nn.Module] = field(default_factory=list)
    unit_dim: int = 1

    @property
    def num_units(self) -> int:
        return raw_weight(self.incoming[0]).shape[0]


def sequential_unit_groups(seq: nn.Sequential, prefix: str) -> list[UnitGroup]:
    """Unit groups of a plain feed-forward ``Sequential`` (layer, [norm], activation, ..., [flatten]).

    The last group's ``outgoing`` stays empty: the network's head reads it (``QNetwork`` fills it).
    """
    groups: list[UnitGroup] = []
    incoming: list[nn.Module] = []
    pending: UnitGroup | None = None
    for i, m in enumerate(seq):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if pending is not None:
                pending.outgoing.append(m)
                pending = None
            incoming = [m]
        elif isinstance(m, NORMS):
            incoming.append(m)
        elif isinstance(m, ACTIVATIONS):
            pending = UnitGroup(f"{prefix}.{i}", incoming, m)
            groups.append(pending)
            incoming = []
    return groups


def maybe_norm(enabled: bool, shape) -> list[nn.Module]:
    """``[nn.LayerNorm(shape)]`` when the layer-norm option is on, else nothing."""
    return [nn.LayerNorm(shape)] if enabled else []


def dense_layers(fan_in: int, width: int, num_layers: int, layer_norm: bool, activation: str | None):
    """``num_layers`` fully-connected hidden layers ``[Linear, (LayerNorm), activation]`` of ``width``
    units, and the width the next layer reads (doubled by CReLU)."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        act = make_activation(activation, "relu", dim=1)
        layers += [nn.Linear(fan_in, width), *maybe_norm(layer_norm, width), act]
        fan_in = width * expansion(act)
    return layers, fan_in


class SequentialBody(nn.Module):
    """A body whose layers are one ``nn.Sequential`` called ``net``: its forward and its unit groups
    (every hidden layer's units, ``sequential_unit_groups``)."""

    net: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def unit_groups(self) -> list[UnitGroup]:
        return sequential_unit_groups(self.net, "net")
