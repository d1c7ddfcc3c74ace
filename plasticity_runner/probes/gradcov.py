"""Gradient covariance C_k (eq. 3 of the paper, appendix A.1).

For ``k`` samples ``x_1..x_k`` and per-sample gradients ``g_i = grad_theta l(theta, x_i)``::

    C_k[i, j] = <g_i, g_j> / (|g_i| |g_j|)

(a sample whose gradient is exactly zero gets a zero row and column). Rows and columns are then
ordered by a k-means clustering of the rows of ``C_k`` (scikit-learn, ``num_clusters`` clusters,
10 in the paper to match the latent states): clusters by decreasing size, samples within a cluster
in their original order.

Per-sample gradients and their Gram matrix come from ``gram.py``.

Two per-sample losses are provided:

* ``agents.dqn.td_sample_losses``: the agent's TD loss of each transition (eq. 1) against the fixed
  target ``agents.dqn.td_target`` of its networks; intervention penalties are left out. This is the
  runner's choice, not the paper's: A.1 computes "the gradient of each transition" of a sampled
  batch but names no loss, and section 4.2 measures C_k on the probe loss below, not on the TD
  objective. The diagnostic asks the agent for it (``sample_losses``): a continual supervised
  protocol's learner gives its supervised loss of each sample instead (``continual/learner.py``);
* ``perturbation_sample_losses``: the probe loss of section 4.2 for each input,
  ``mean_a [f(x)_a - sg(f(x)_a + eps_a)]^2``, with ``eps`` drawn either

  - per input (``shared=False``, config ``perturbation``): ``eps_i ~ N(0, I)`` for each input, as
    for the Hessian. Sample ``i``'s gradient is ``g_i = -(2/A) J_i^T eps_i`` (``J_i`` the Jacobian
    of the ``A`` outputs at ``x_i``), and since ``-eps_i`` is as likely as ``eps_i`` the sign of
    every ``<g_i, g_j>`` is a coin flip: ``gradcov_neg_frac`` is about 0.5 at any ``theta`` and
    says nothing about interference;
  - once per output, shared by all inputs (``shared=True``, config ``perturbation_shared``):
    ``g_i = -(2/A) J_i^T eps``, so ``<g_i, g_j> = (4/A^2) eps^T J_i J_j^T eps``, the tangent
    kernel of ``x_i`` and ``x_j`` along one common direction ``eps``. It is negative when a step
    that moves ``f(x_i)`` towards ``f(x_i) + eps`` moves ``f(x_j)`` away from ``f(x_j) + eps``:
    the interference of eq. (3). With one output it is the normalised tangent kernel itself.

As a diagnostic (``GradCov``) it measures the first ``k`` transitions of the pause's evaluation
batch (``eps`` from stream ``diagnostics/gradcov``; k-means seeded from the evaluation batch's
stream); it writes phase ``gradcov`` (``CovResult.scalars``) and arrays ``gradcov/matrix``
(``[k, k]`` float32, k-means ordered), ``gradcov/order`` and ``gradcov/labels`` (``[k]``, ordered).
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import II, OmegaConf
from torch import nn

from .. import registry
from ..errors import ConfigError, choice, positive
from ..seeding import diagnostic_seed, evaluation_batch_seed
from .base import Diagnostic, Output, PauseView, check_cadence
from .curvature import perturbation_target
from .gram import SampleLosses, gradient_gram

KMEANS_N_INIT = 2  # k-means restarts (best inertia kept)


# the names it writes (phase ``gradcov``); the report keys on them (``report/names.py``)
OFFDIAG_MEAN, NEG_FRAC, MATRIX = "gradcov_offdiag_mean", "gradcov_neg_frac", "gradcov/matrix"


@dataclass
class CovResult:
    """The normalised gradient covariance of ``k`` samples and its k-means ordering."""

    matrix: torch.Tensor  # [k, k] float64 C_k in the samples' original order
    order: torch.Tensor  # [k] int64: order[r] = original index of the sample shown at row r
    labels: torch.Tensor  # [k] int64 cluster of each sample (original order); 0 = largest cluster
    grad_norms: torch.Tensor  # [k] float64 |g_i|

    def ordered(self) -> torch.Tensor:
        """C_k with rows and columns in k-means order."""
        return self.matrix[self.order][:, self.order]

    def arrays(self) -> dict[str, np.ndarray]:
        """``gradcov/matrix`` (float32, k-means ordered), ``gradcov/order`` and ``gradcov/labels`` (in that order)."""
        return {
            MATRIX: self.ordered().numpy().astype(np.float32),
            "gradcov/order": self.order.numpy(),
            "gradcov/labels": self.labels[self.order].numpy(),
        }

    def scalars(self) -> dict[str, float]:
        """``gradcov_offdiag_mean``, ``gradcov_neg_frac`` (off-diagonal entries < 0) and the mean |g_i|."""
        k = self.matrix.shape[0]
        off = ~torch.eye(k, dtype=torch.bool)
        return {
            OFFDIAG_MEAN: float(self.matrix[off].mean()),
            NEG_FRAC: float((self.matrix[off] < 0).double().mean()),
            "gradcov_grad_norm_mean": float(self.grad_norms.mean()),
        }


# ------------------------------------------------------------------------------ per-sample losses


class _PerturbationLoss(nn.Module):
    """``forward(x, y)`` -> per-input ``mean_a (f(x)_a - y_a)^2`` [B] of the wrapped network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.net(x) - y) ** 2).flatten(1).mean(1)


def perturbation_sample_losses(
    net: nn.Module, inputs: torch.Tensor, eps_seed: int, shared: bool = False
) -> SampleLosses:
    """The probe loss of section 4.2 for each input: ``mean_a (f(x)_a - y_a)^2``, ``y = f(x) + eps``.

    ``shared=False``: ``eps ~ N(0, I)`` drawn per input and output (``curvature.perturbation_target``,
    the Hessian's loss); ``shared=True``: one ``eps ~ N(0, I_A)`` per output, the same for every
    input, so that the signs of ``C_k`` carry meaning (see the module docstring).
    """
    if not shared:
        target = perturbation_target(net, inputs, eps_seed)
    else:
        with torch.no_grad():
            out = copy.deepcopy(net).eval()(inputs)
        generator = torch.Generator(out.device).manual_seed(int(eps_seed))
        eps = torch.randn((1, *out.shape[1:]), generator=generator, device=out.device, dtype=out.dtype)
        target = out + eps
    return SampleLosses(_PerturbationLoss(copy.deepcopy(net).eval()), (inputs, target.detach()))


def normalise(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, norms)``: ``C[i, j] = G[i, j] / (|g_i| |g_j|)``, zero where a gradient is exactly zero."""
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, gram / torch.where(denom > 0, denom, 1.0), 0.0), norms


def kmeans_order(matrix: torch.Tensor, num_clusters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, labels)`` from k-means on the rows of ``matrix``; clusters by decreasing size."""
    from sklearn.cluster import KMeans

    rows = matrix.double().cpu().numpy()
    n_clusters = max(1, min(int(num_clusters), rows.shape[0]))
    raw = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=int(seed) % 2**32).fit_predict(rows)
    sizes = np.bincount(raw, minlength=n_clusters)
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[sorted(range(n_clusters), key=lambda c: (-sizes[c], c))] = np.arange(n_clusters)
    labels = rank[raw]
    order = np.argsort(labels, kind="stable")
    return torch.from_numpy(order.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))


def gradient_covariance(
    losses: SampleLosses,
    *,
    num_clusters: int = 10,
    chunk_size: int = 64,
    max_memory_mb: float = 512,
    seed: int = 0,
) -> CovResult:
    """C_k of eq. (3) over the samples, with its k-means ordering (``seed`` seeds k-means).

    Build ``losses`` with ``agents.dqn.td_sample_losses`` or ``perturbation_sample_losses``.
    """
    gram = gradient_gram(losses, chunk_size, max_memory_mb)
    matrix, norms = normalise(gram)
    matrix, norms = matrix.cpu(), norms.cpu()
    order, labels = kmeans_order(matrix, num_clusters, seed)
    return CovResult(matrix=matrix, order=order, labels=labels, grad_norms=norms)


# ------------------------------------------------------------------------------ the diagnostic


class GradCovLoss(str, enum.Enum):
    td = "td"  # the agent's TD loss of each transition (eq. 1; the runner's choice: 4.2 uses the probe loss)
    perturbation = "perturbation"  # [f(x) - sg(f(x) + eps)]^2 of section 4.2, eps per input (signs: coin flips)
    perturbation_shared = "perturbation_shared"  # the same loss, one eps per output shared by all inputs


@dataclass
class GradCovConfig:
    """Gradient covariance C_k of eq. (3) (config key ``diagnostics.gradcov``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    k: int = 512
    loss: GradCovLoss = GradCovLoss.td
    num_clusters: int = 10
    chunk_size: int = 64
    max_memory_mb: int = 512


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    for name in ("num_clusters", "chunk_size", "max_memory_mb"):
        positive(cfg, f"{key}.{name}")
    c = OmegaConf.select(cfg, key)
    if c.k < 2:
        raise ConfigError(f"{key}.k", f"C_k needs at least 2 samples, got {c.k}")
    if c.num_clusters > c.k:
        raise ConfigError(f"{key}.num_clusters", f"must be <= {key}.k ({c.k}), got {c.num_clusters}")


class GradCov(Diagnostic):
    """C_k of the first ``k`` transitions of the evaluation batch (module docstring): phase ``gradcov``."""

    name, phase = "gradcov", "gradcov"
    scalars = (OFFDIAG_MEAN, NEG_FRAC, "gradcov_grad_norm_mean")
    arrays = (MATRIX, "gradcov/order", "gradcov/labels")

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).k)

    def run(self, view: PauseView) -> Output:
        c, batch = self.config(view.cfg), view.batch
        loss_kind = choice(c.loss)
        if loss_kind == "td":  # the training loss of each sample: the agent's (``DQNAgent.sample_losses``)
            losses = view.agent.sample_losses(batch)
        else:
            eps_seed = diagnostic_seed(view.seed, self.name, view.step)
            losses = perturbation_sample_losses(
                view.online, batch.o_tm1, eps_seed, shared=loss_kind == "perturbation_shared"
            )
        cov = gradient_covariance(
            losses,
            num_clusters=int(c.num_clusters),
            chunk_size=int(c.chunk_size),
            max_memory_mb=float(c.max_memory_mb),
            seed=evaluation_batch_seed(view.seed, view.step),
        )
        return Output(cov.scalars(), cov.arrays())


registry.register("diagnostic", "gradcov", GradCovConfig, build=GradCov, check=check, order=30)
