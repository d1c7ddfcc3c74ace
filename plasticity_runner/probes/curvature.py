"""Curvature of the probe loss (sections 2.1 and 4.2): Hessian spectrum by stochastic Lanczos quadrature.

The loss is the regression towards a perturbation of the network's own output (section 4.2)::

    l(theta) = mean_{x in X, a} [f_theta(x)_a - sg(f_theta(x)_a + eps_{x,a})]^2,   eps ~ N(0, 1)

with ``sg`` the stop-gradient: the target ``y = f_theta0(X) + eps`` is fixed at the current
parameters and ``eps`` is drawn once per measurement (from ``eps_seed``). The mean runs over
inputs and actions, as the plasticity probe's loss does.

Hessian-vector products ``H v`` (eq. 2), on a copy of the network in eval mode: reverse-over-reverse,
on a gradient computed once and kept when the inputs fit one chunk (the default), else per chunk. The Lanczos
basis and the tridiagonal matrix are float64 with full reorthogonalisation; the network keeps its
own dtype. The eigenvalue density follows Ghorbani et al. (2019): each of ``num_vectors`` Gaussian
start vectors ``v`` gives, after ``iterations`` Lanczos steps, the tridiagonal ``T = Q diag(lambda) Q^T``;
its Ritz values ``lambda_i`` with weights ``w_i = Q[0, i]^2`` (summing to 1) form a quadrature of
the spectral measure ``v^T delta(t - H) v``, and the density is their average convolved with a
Gaussian of standard deviation ``sigma``::

    phi(t) = (1 / V) sum_v sum_i w_i^(v) N(t; lambda_i^(v), sigma^2)

which integrates to 1. ``sigma = sigma_rel * max(lambda_max - lambda_min, max |lambda|)`` over all
Ritz values; the grid spans ``[lambda_min - 6 sigma, lambda_max + 6 sigma]`` unless
``grid_min``/``grid_max`` fix it (to share one grid between runs).

As a diagnostic (``Curvature``) it measures the online network on the first ``num_inputs``
observations of the pause's evaluation batch, ``eps`` from stream ``diagnostics/curvature``; it
writes phase ``curvature`` (``SpectrumResult.scalars``) and arrays ``hessian/density``,
``hessian/grid`` ``[G]``, ``hessian/ritz_values``, ``hessian/ritz_weights`` ``[V, M]``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import II, OmegaConf
from torch import nn
from torch.func import functional_call

from .. import registry
from ..errors import ConfigError, positive
from ..seeding import diagnostic_seed, start_vectors_seed
from .base import Diagnostic, Output, PauseView, check_cadence

GRID_PAD_SIGMAS = 6.0  # the automatic grid extends this many sigmas beyond the extreme Ritz values
BREAKDOWN_RTOL = 1e-10  # Lanczos stops when beta_j <= this times the largest |alpha| or beta so far


# the names it writes (phase ``curvature``); the report keys on them (``report/names.py``)
HESSIAN_TOP_EIG = "hessian_top_eig"
HESSIAN_DENSITY, HESSIAN_GRID = "hessian/density", "hessian/grid"


@dataclass
class SpectrumResult:
    """Stochastic Lanczos quadrature of one Hessian."""

    ritz_values: torch.Tensor  # [V, M] float64, NaN where Lanczos stopped early (invariant subspace)
    ritz_weights: torch.Tensor  # [V, M] float64, 0 where Lanczos stopped early; rows sum to 1
    grid: torch.Tensor  # [G] float64 eigenvalue grid
    density: torch.Tensor  # [G] float64 smoothed eigenvalue density on the grid
    num_params: int  # d, the Hessian's size

    def scalars(self) -> dict[str, float]:
        """``hessian_top_eig`` (largest Ritz value), ``hessian_min_eig`` and the SLQ trace estimate."""
        present = self.ritz_values[~torch.isnan(self.ritz_values)]
        first_moment = (self.ritz_weights * self.ritz_values.nan_to_num(0.0)).sum(1)  # v^T H v / |v|^2
        return {
            HESSIAN_TOP_EIG: float(present.max()),
            "hessian_min_eig": float(present.min()),
            "hessian_trace_est": float(first_moment.mean()) * self.num_params,
        }

    def arrays(self) -> dict[str, Any]:
        """The spectrum as numpy arrays, by the names a pause writes them under."""
        return {
            HESSIAN_DENSITY: self.density.numpy(),
            HESSIAN_GRID: self.grid.numpy(),
            "hessian/ritz_values": self.ritz_values.numpy(),
            "hessian/ritz_weights": self.ritz_weights.numpy(),
        }


# --------------------------------------------------------------------------------------- the loss


@torch.no_grad()
def perturbation_target(net: nn.Module, inputs: torch.Tensor, eps_seed: int) -> torch.Tensor:
    """``y = f(X) + eps``, ``eps ~ N(0, 1)`` from a private generator seeded by ``eps_seed``."""
    model = copy.deepcopy(net).eval()
    out = model(inputs)
    generator = torch.Generator(out.device).manual_seed(int(eps_seed))
    eps = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
    return out + eps


def trainable_parameters(net: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the diagnostics differentiate: those that require grad (the ones the run
    trains; plasticity injection freezes some), or all of them when none do."""
    params = dict(net.named_parameters())
    trainable = {k: p for k, p in params.items() if p.requires_grad}
    return trainable or params


def _flat_to_dict(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k, p in like.items():
        out[k] = flat[i : i + p.numel()].view(p.shape).to(p.dtype)
        i += p.numel()
    return out


def _dict_to_flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in d.values()])


def _gradient_with_graph(
    loss_fn: Callable[..., torch.Tensor], params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Leaves standing for ``params`` and the gradient of ``loss_fn`` at them, with its graph."""
    leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_fn(leaves, x, y), list(leaves.values()), create_graph=True)
    return leaves, list(grads)


def _grad_dot(
    leaves: dict[str, torch.Tensor], grads: list[torch.Tensor], tangent: dict[str, torch.Tensor], retain: bool
) -> torch.Tensor:
    """``H v = d(g . v)/d theta`` as a flat float64 vector (zero rows where ``g`` is constant)."""
    names = list(leaves)
    out: tuple[torch.Tensor | None, ...] = (None,) * len(names)
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if live:
        out = torch.autograd.grad(
            [grads[i] for i in live],
            list(leaves.values()),
            [tangent[names[i]] for i in live],
            retain_graph=retain,
            allow_unused=True,
        )
    hv = [torch.zeros_like(leaves[n]) if o is None else o for n, o in zip(names, out)]
    return torch.cat([h.reshape(-1).double() for h in hv])


def perturbation_hvp(
    net: nn.Module, inputs: torch.Tensor, target: torch.Tensor, chunk_size: int = 512
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(v -> H v, d)`` for ``l(theta) = mean (f_theta(X) - target)^2`` at ``net``'s parameters.

    ``v`` and ``H v`` are flat float64 vectors of length ``d`` over ``trainable_parameters(net)``
    (in ``named_parameters`` order; other parameters are held fixed). Reverse-over-reverse on a
    copy of ``net`` in eval mode: ``H v = d(g . v)/d theta`` with ``g`` the gradient. When the
    inputs fit one chunk of ``chunk_size`` (the default sizes), ``g`` is computed once and its graph
    kept, so each product runs only the backward of the backward (about two thirds of what a
    product costs from scratch); with several chunks (the HVP of a sum is the sum of the HVPs)
    every product recomputes each chunk's gradient, so memory stays one chunk's.

    A forward-mode (``jvp``) product would differ where the network computes something under
    ``torch.no_grad`` from the parameters (spectral norm's power iteration): forward-mode AD
    differentiates through it, the gradient does not. Reverse-over-reverse is the derivative of
    the gradient the run trains with, and equals the dense autograd Hessian (tests/test_curvature.py).
    """
    model = copy.deepcopy(net).eval()
    params = {k: p.detach() for k, p in trainable_parameters(model).items()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    denom = float(target.numel())
    d = sum(p.numel() for p in params.values())

    def chunk_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((functional_call(model, (p, buffers), (x,)) - y) ** 2).sum() / denom

    if inputs.shape[0] <= chunk_size:
        leaves, grads = _gradient_with_graph(chunk_loss, params, inputs, target)

        def retained_hvp(v: torch.Tensor) -> torch.Tensor:
            return _grad_dot(leaves, grads, _flat_to_dict(v, params), retain=True)

        return retained_hvp, d

    def hvp(v: torch.Tensor) -> torch.Tensor:
        tangent = _flat_to_dict(v, params)
        total = torch.zeros(d, dtype=torch.float64, device=v.device)
        for i in range(0, inputs.shape[0], chunk_size):
            leaves, grads = _gradient_with_graph(
                chunk_loss, params, inputs[i : i + chunk_size], target[i : i + chunk_size]
            )
            total += _grad_dot(leaves, grads, tangent, retain=False)
        return total

    return hvp, d


# -------------------------------------------------------------------------------------- Lanczos


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos tridiagonalisation of a symmetric operator from start vector ``v0``.

    Float64 with full reorthogonalisation (classical Gram-Schmidt, twice) against the whole
    basis. Returns ``(alpha [m], beta [m - 1])``, the diagonal and off-diagonal of ``T``; ``m`` is
    ``iterations`` or fewer when the Krylov space is exhausted (``beta`` below ``BREAKDOWN_RTOL``).

    The basis vectors are written in place and every update goes through one scratch vector, so
    an iteration allocates no ``d``-sized temporaries beyond ``matvec``'s result (ResNet-18:
    ``d`` = 11.2M, 90 MB each); the arithmetic, and so every bit of the result, is that of
    ``w = w - alpha v - beta v_prev; w = w - Q^T (Q w)`` (twice).
    """
    v = v0.double() / torch.linalg.vector_norm(v0.double())
    basis = torch.empty(iterations, v.numel(), dtype=torch.float64, device=v.device)
    scratch = torch.empty(v.numel(), dtype=torch.float64, device=v.device)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    scale = 0.0
    basis[0] = v
    for j in range(iterations):
        v = basis[j]
        w = matvec(v).to(torch.float64).contiguous()
        if w.data_ptr() == v.data_ptr():
            w = w.clone()
        alpha = torch.dot(w, v)
        alphas.append(alpha)
        w.sub_(torch.mul(v, alpha, out=scratch))
        if j > 0:
            w.sub_(torch.mul(basis[j - 1], betas[-1], out=scratch))
        q = basis[: j + 1]
        for _ in range(2):
            w.sub_(torch.mv(q.T, torch.mv(q, w), out=scratch))
        beta = torch.linalg.vector_norm(w)
        scale = max(scale, abs(float(alpha)), float(beta))
        if j == iterations - 1 or float(beta) <= BREAKDOWN_RTOL * max(scale, 1e-300):
            break
        betas.append(beta)
        torch.div(w, beta, out=basis[j + 1])
    alpha_t = torch.stack(alphas)
    beta_t = torch.stack(betas) if betas else alpha_t.new_zeros(0)
    return alpha_t, beta_t


def ritz(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (ascending) and quadrature weights (first eigenvector components squared) of ``T``."""
    t = torch.diag(alpha)
    if beta.numel():
        t = t + torch.diag(beta, 1) + torch.diag(beta, -1)
    values, vectors = torch.linalg.eigh(t)
    return values, vectors[0] ** 2


def gaussian_density(
    ritz_values: torch.Tensor,
    ritz_weights: torch.Tensor,
    sigma_rel: float,
    grid_points: int,
    grid_min: float | None = None,
    grid_max: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ritz values ``[V, M]`` (NaN = absent) smoothed by a Gaussian: returns ``(grid, density, sigma)``."""
    values = ritz_values.flatten().double().cpu()
    weights = ritz_weights.flatten().double().cpu()
    present = ~torch.isnan(values)
    values, weights = values[present], weights[present] / ritz_values.shape[0]
    lo, hi = float(values.min()), float(values.max())
    sigma = sigma_rel * max(hi - lo, abs(lo), abs(hi))
    if sigma <= 0.0:
        sigma = sigma_rel
    grid = torch.linspace(
        lo - GRID_PAD_SIGMAS * sigma if grid_min is None else grid_min,
        hi + GRID_PAD_SIGMAS * sigma if grid_max is None else grid_max,
        int(grid_points),
        dtype=torch.float64,
    )
    z = (grid[:, None] - values[None, :]) / sigma
    density = (weights[None, :] * torch.exp(-0.5 * z**2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return grid, density, sigma


def hessian_spectrum(net: nn.Module, inputs: torch.Tensor, eps_seed: int, cfg: Any) -> SpectrumResult:
    """Eigenvalue density and top eigenvalue of the probe-loss Hessian at ``net``'s parameters.

    ``cfg`` gives ``iterations``, ``num_vectors``, ``sigma_rel``, ``grid_points``, ``grid_min``,
    ``grid_max`` and ``chunk_size`` (see ``CurvatureConfig``). All randomness (``eps`` and the
    start vectors) comes from private generators seeded by ``eps_seed`` (``seeding.start_vectors_seed``); ``net`` is not modified.
    """
    target = perturbation_target(net, inputs, eps_seed)
    hvp, d = perturbation_hvp(net, inputs, target, int(cfg.chunk_size))
    device = inputs.device
    generator = torch.Generator(device).manual_seed(start_vectors_seed(eps_seed))
    m, V = min(int(cfg.iterations), d), int(cfg.num_vectors)
    values = torch.full((V, m), float("nan"), dtype=torch.float64)
    weights = torch.zeros((V, m), dtype=torch.float64)
    for i in range(V):
        v0 = torch.randn(d, generator=generator, device=device, dtype=torch.float64)
        alpha, beta = lanczos(hvp, v0, m)
        val, w = ritz(alpha, beta)
        values[i, : val.numel()], weights[i, : w.numel()] = val.cpu(), w.cpu()
    grid, density, _ = gaussian_density(
        values, weights, float(cfg.sigma_rel), int(cfg.grid_points), cfg.grid_min, cfg.grid_max
    )
    return SpectrumResult(ritz_values=values, ritz_weights=weights, grid=grid, density=density, num_params=d)


# ------------------------------------------------------------------------------ the diagnostic


@dataclass
class CurvatureConfig:
    """Hessian spectrum of the probe loss by stochastic Lanczos quadrature (``diagnostics.curvature``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 512
    iterations: int = 30
    num_vectors: int = 2
    sigma_rel: float = 0.01
    grid_points: int = 512
    grid_min: float | None = None
    grid_max: float | None = None
    chunk_size: int = 512


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    for name in ("num_inputs", "iterations", "num_vectors", "sigma_rel", "chunk_size"):
        positive(cfg, f"{key}.{name}")
    c = OmegaConf.select(cfg, key)
    if c.grid_points < 2:
        raise ConfigError(f"{key}.grid_points", f"must be >= 2, got {c.grid_points}")
    if c.grid_min is not None and c.grid_max is not None and not c.grid_max > c.grid_min:
        raise ConfigError(f"{key}.grid_max", f"must be > {key}.grid_min ({c.grid_min}), got {c.grid_max}")


ARRAYS = (HESSIAN_DENSITY, HESSIAN_GRID, "hessian/ritz_values", "hessian/ritz_weights")


class Curvature(Diagnostic):
    """``hessian_spectrum`` of the online network (module docstring): phase ``curvature``."""

    name, phase, arrays = "curvature", "curvature", ARRAYS
    scalars = (HESSIAN_TOP_EIG, "hessian_min_eig", "hessian_trace_est")

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).num_inputs)

    def run(self, view: PauseView) -> Output:
        eps_seed = diagnostic_seed(view.seed, self.name, view.step)
        spectrum = hessian_spectrum(view.online, view.batch.o_tm1, eps_seed, self.config(view.cfg))
        return Output(spectrum.scalars(), spectrum.arrays())


registry.register("diagnostic", "curvature", CurvatureConfig, build=Curvature, check=check, order=20)
