"""Gradient covariance C_k (eq. 3 of the paper, appendix A.1).

For ``k`` samples ``x_1..x_k`` and per-sample gradients ``g_i = grad_theta l(theta, x_i)``::

    C_k[i, j] = <g_i, g_j> / (|g_i| |g_j|)

(a sample whose gradient is exactly zero gets a zero row and column). Rows and columns are then
ordered by a k-means clustering of the rows of ``C_k`` (scikit-learn, ``num_clusters`` clusters,
10 in the paper to match the latent states): clusters by decreasing size, samples within a cluster
in their original order.

Per-sample gradients come from ``torch.func`` (``vmap`` of ``grad``) on a copy of the network in
eval mode. The Gram matrix ``G = [<g_i, g_j>]`` is a sum over parameters, computed without
materialising the ``k x P`` gradient matrix:

* a fully-connected layer applied once to ``[k, in]`` inputs has per-sample gradients
  ``delta_i a_i^T`` (weight) and ``delta_i`` (bias), so its share is
  ``(delta_i . delta_j)(a_i . a_j + 1)``, from one batched backward pass (per-layer factorisation);
  a convolution, or a fully-connected layer on tokens, likewise has per-sample weight gradients
  ``D_i^T A_i`` (output gradients ``D_i`` and input patches or tokens ``A_i`` over the positions),
  whose Gram is taken either from them, in row blocks within ``max_memory_mb``, or without them as
  ``sum_{p,q} (D_i D_j^T)_pq (A_i A_j^T)_pq``, whichever costs fewer FLOPs; batch norm (running
  statistics) and layer norm have per-sample gradients ``sum_p delta_i x_hat_i`` and ``sum_p delta_i``;
  all from the same batched passes, never one pass per sample or per row block;
* every other parameter (ViT's class token and position embedding, spectral-norm layers, ...)
  goes through ``vmap(grad)``, ``chunk_size`` samples at a time, in groups of
  parameters whose ``k x P_group`` per-sample gradients fit ``max_memory_mb``; a single tensor too
  large for the budget is handled in row blocks that fit, recomputing one block's gradients
  against each other block.

Two per-sample losses are provided:

* ``td_sample_losses``: the agent's TD loss of each transition (eq. 1) against the fixed target
  ``agents.dqn.td_target`` of its networks, as A.1 describes for C_k ("the gradient of each transition");
  intervention penalties are left out;
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
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parametrize

from .curvature import perturbation_target, trainable_parameters

KMEANS_N_INIT = 2  # k-means restarts (best inertia kept)


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

    def scalars(self) -> dict[str, float]:
        """``gradcov_offdiag_mean``, ``gradcov_neg_frac`` (off-diagonal entries < 0) and the mean |g_i|."""
        k = self.matrix.shape[0]
        off = ~torch.eye(k, dtype=torch.bool)
        return {
            "gradcov_offdiag_mean": float(self.matrix[off].mean()),
            "gradcov_neg_frac": float((self.matrix[off] < 0).double().mean()),
            "gradcov_grad_norm_mean": float(self.grad_norms.mean()),
        }


# ------------------------------------------------------------------------------ per-sample losses


class _TDLoss(nn.Module):
    """``forward(o_tm1, a_tm1, target)`` -> per-transition TD loss [B] of the wrapped network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, o_tm1: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net.td_loss(o_tm1, a_tm1, target)


class _PerturbationLoss(nn.Module):
    """``forward(x, y)`` -> per-input ``mean_a (f(x)_a - y_a)^2`` [B] of the wrapped network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.net(x) - y) ** 2).flatten(1).mean(1)


@dataclass
class SampleLosses:
    """A batch of ``k`` samples and a module whose ``forward(*samples)`` gives their losses ``[k]``.

    ``model`` is an eval-mode copy (never the training network); sample ``i``'s loss may depend on
    sample ``i`` only.
    """

    model: nn.Module
    samples: tuple[torch.Tensor, ...]


def td_sample_losses(
    online: nn.Module, target: nn.Module, batch: Any, *, gamma: float, double_dqn: bool
) -> SampleLosses:
    """The TD loss of each transition of ``batch`` w.r.t. the parameters of ``online`` (eq. 1).

    The TD target is computed once, from eval-mode copies of the online and target networks
    (``agents.dqn.td_target`` with the agent's ``gamma`` and ``double_dqn``), and held fixed; the
    losses are those of the online copy (the networks passed in are never touched).
    """
    from ..agents.dqn import td_target

    online, target = copy.deepcopy(online).eval(), copy.deepcopy(target).eval()
    y = td_target(online, target, batch, float(gamma), bool(double_dqn))
    return SampleLosses(_TDLoss(online), (batch.o_tm1, batch.a_tm1, y))


def shadow_agent(agent: Any) -> Any:
    """A shallow copy of ``agent`` whose learner holds eval-mode deep copies of its online and
    target networks: what a diagnostic computes with it (losses, gradients) never touches training's."""
    shadow = copy.copy(agent)
    shadow.learner = dataclasses.replace(
        agent.learner, online=copy.deepcopy(agent.online).eval(), target=copy.deepcopy(agent.target).eval()
    )
    return shadow


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


# ------------------------------------------------------------------------------ the Gram matrix


FACTORISED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm)


def _factorisable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose per-sample gradients follow from their input and output gradient (see
    ``_layer_gram``): ``nn.Linear``, ``nn.Conv2d`` (one group, zero padding), ``nn.BatchNorm2d`` on
    running statistics (eval mode) and ``nn.LayerNorm``, with parameters, not parametrised
    (spectral norm), whose parameters are all trainable and belong to no other module."""
    trainable = {id(p) for p in trainable_parameters(model).values()}
    owners: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1

    def kind_ok(m: nn.Module) -> bool:
        if isinstance(m, nn.Conv2d):
            return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
        if isinstance(m, nn.BatchNorm2d):
            return not m.training and m.running_mean is not None and m.running_var is not None
        return isinstance(m, FACTORISED)

    return {
        name: m
        for name, m in model.named_modules()
        if kind_ok(m)
        and list(m.parameters(recurse=False))
        and not parametrize.is_parametrized(m)
        and all(owners[id(p)] == 1 and id(p) in trainable for p in m.parameters(recurse=False))
    }


def _input_ok(m: nn.Module, x: torch.Tensor) -> bool:
    if isinstance(m, nn.Linear):
        return x.dim() >= 2
    if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
        return x.dim() == 4
    return x.dim() > len(m.normalized_shape)  # LayerNorm: a batch dimension in front


def _positions(m: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [k, P, K], D [k, P, N])`` of a Linear or Conv2d: per sample, the weight gradient is
    ``D_i^T A_i`` (a sum over the ``P`` positions: tokens, or output pixels of a convolution with
    ``A`` the unfolded input patches) and the bias gradient ``sum_p D_i[p]``."""
    k = x.shape[0]
    if isinstance(m, nn.Linear):
        return x.reshape(k, -1, m.in_features), delta.reshape(k, -1, m.out_features)
    patches = torch.nn.functional.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # [k, K, P]
    return patches.transpose(1, 2), delta.reshape(k, m.out_channels, -1).transpose(1, 2)


def _normalised_input(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x_hat`` of a BatchNorm2d (running statistics) or LayerNorm: the output is ``x_hat * w + b``."""
    if isinstance(m, nn.BatchNorm2d):
        shape = (1, -1, 1, 1)
        return (x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
    return torch.nn.functional.layer_norm(x, m.normalized_shape, None, None, m.eps)


def _weight_gram(a: torch.Tensor, d: torch.Tensor, budget: int, method: str = "auto") -> torch.Tensor:
    """``G[i, j] = <D_i^T A_i, D_j^T A_j>`` (Frobenius) for ``A [k, P, K]``, ``D [k, P, N]``, in the
    inputs' dtype, as float64 ``[k, k]``. Whichever of two ways costs fewer FLOPs:

    * per-sample gradients ``D_i^T A_i`` (``k x N x K``; in row blocks that fit ``budget`` bytes,
      recomputing a block from ``A`` and ``D``, never from the network), then their Gram;
    * without them ("ghost" Gram): ``sum_{p,q} (D_i D_j^T)[p, q] (A_i A_j^T)[p, q]``, cheaper when
      the positions are few and the layer wide (ResNet's last stages, token-wise layers).

    ``method``: ``auto`` (the cheaper), ``direct`` or ``ghost`` (tests).
    """
    k, p, big_k = a.shape
    n = d.shape[2]
    size = a.element_size()
    gram = torch.zeros(k, k, dtype=torch.float64, device=a.device)
    direct = k * n * big_k * (k + p)
    ghost = k * k * p * p * (n + big_k + 1)
    if method == "ghost" or (method == "auto" and ghost < direct):
        a2, d2 = a.reshape(k * p, big_k), d.reshape(k * p, n)
        rows = max(1, min(k, budget // max(1, 2 * k * p * p * size)))
        for lo in range(0, k, rows):
            hi = min(lo + rows, k)
            dd = d2[lo * p : hi * p] @ d2.T  # [(hi - lo) P, k P]
            dd *= a2[lo * p : hi * p] @ a2.T
            gram[lo:hi] = dd.view(hi - lo, p, k, p).sum(dim=(1, 3)).double()
        return gram

    def grads(lo: int, hi: int) -> torch.Tensor:
        return torch.bmm(d[lo:hi].transpose(1, 2), a[lo:hi]).reshape(hi - lo, -1)

    _add_blocked_gram(gram, grads, n * big_k * size, budget)
    return gram


def _add_blocked_gram(
    gram: torch.Tensor, grads: Callable[[int, int], torch.Tensor], row_bytes: int, budget: int
) -> None:
    """``gram += G G^T`` (in float64) for the ``k`` rows of ``G`` that ``grads(lo, hi)`` gives
    (rows ``lo:hi``, ``row_bytes`` bytes each): all rows at once when they fit ``budget`` bytes; else
    blocks of rows, two in memory at a time, recomputing each later block against every block."""
    k = gram.shape[0]
    block = k if k * row_bytes <= budget else max(1, budget // (2 * row_bytes))
    starts = list(range(0, k, block))
    for i, lo_a in enumerate(starts):
        hi_a = min(lo_a + block, k)
        g_a = grads(lo_a, hi_a)
        gram[lo_a:hi_a, lo_a:hi_a] += (g_a @ g_a.T).double()
        for lo_b in starts[i + 1 :]:
            hi_b = min(lo_b + block, k)
            cross = (g_a @ grads(lo_b, hi_b).T).double()
            gram[lo_a:hi_a, lo_b:hi_b] += cross
            gram[lo_b:hi_b, lo_a:hi_a] += cross.T


def _layer_gram(losses: SampleLosses, chunk_size: int, budget: int = 512 * 2**20) -> tuple[torch.Tensor, set[str]]:
    """Gram of the per-sample gradients of the layers of ``_factorisable_layers``, from batched
    forward and backward passes (no per-sample pass through the network).

    A layer's output ``z`` has per-sample gradients ``delta_i = dl_i/dz_i`` (sample ``i``'s loss
    depends on sample ``i`` only, so one backward of the summed loss gives them all):

    * ``nn.Linear`` on ``[B, in]`` inputs: ``<g_i, g_j> = (delta_i . delta_j)(a_i . a_j + 1)``,
      ``k x (in + out)`` numbers instead of ``k x in x out`` (float64);
    * ``nn.Linear`` on ``[B, ..., in]`` (tokens) and ``nn.Conv2d`` (positions = output pixels, the
      input unfolded into patches): weight ``D_i^T A_i``, bias ``sum_p D_i[p]`` (``_weight_gram``);
    * ``nn.BatchNorm2d`` (running statistics) and ``nn.LayerNorm``: weight ``sum_p D_i x_hat_i``,
      bias ``sum_p D_i``, small vectors whose Gram is taken directly.

    Returns the Gram and the names of the parameters it covers; layers seen with other input
    shapes, or more than once per forward, are left out (``vmap`` covers them).
    """
    model = losses.model
    layers = _factorisable_layers(model)
    k = losses.samples[0].shape[0]
    device = losses.samples[0].device
    records: dict[str, list] = {}

    def hook(name: str):
        def fn(_module, inputs, output):
            records.setdefault(name, []).append((inputs[0].detach(), output))
            return output.clone()  # in-place ops downstream act on the clone, not on the recorded z

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    acts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    deltas: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    usable = set(layers)
    requires = {p: p.requires_grad for p in model.parameters()}
    try:
        model.requires_grad_(True)
        for i in range(0, k, chunk_size):
            records.clear()
            with torch.enable_grad():
                loss = model(*(s[i : i + chunk_size] for s in losses.samples)).sum()
                usable &= {n for n, r in records.items() if len(r) == 1 and _input_ok(layers[n], r[0][0])}
                names = [n for n in records if n in usable]
                grads = torch.autograd.grad(loss, [records[n][0][1] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                a, z = records[n][0][0], records[n][0][1]
                acts[n].append(a)
                deltas[n].append(torch.zeros_like(z) if g is None else g.detach())
    finally:
        for h in handles:
            h.remove()
        for p, r in requires.items():
            p.requires_grad_(r)
    gram = torch.zeros(k, k, dtype=torch.float64, device=device)
    covered: set[str] = set()
    for n in sorted(usable):
        m = layers[n]
        x, delta = torch.cat(acts[n]), torch.cat(deltas[n])
        acts[n] = deltas[n] = []  # free as we go
        has_bias = getattr(m, "bias", None) is not None
        if isinstance(m, nn.Linear) and x.dim() == 2:
            a, d = x.double(), delta.double()
            dd = d @ d.T
            gram += dd * (a @ a.T)
            if has_bias:
                gram += dd
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            a, d = _positions(m, x, delta)
            gram += _weight_gram(a, d, budget)
            if has_bias:
                b = d.sum(1)
                gram += (b @ b.T).double()
        else:  # BatchNorm2d, LayerNorm: per-sample gradients are small vectors
            channel_dims = (1,) if isinstance(m, nn.BatchNorm2d) else tuple(range(x.dim() - len(m.normalized_shape), x.dim()))
            summed = [dim for dim in range(1, x.dim()) if dim not in channel_dims]
            def over_positions(t: torch.Tensor) -> torch.Tensor:
                return (t.sum(summed) if summed else t).reshape(k, -1)  # sum([]) would sum everything

            rows = []
            if m.weight is not None:
                rows.append(over_positions(delta * _normalised_input(m, x)))
            if has_bias:
                rows.append(over_positions(delta))
            g = torch.cat(rows, dim=1)
            gram += (g @ g.T).double()
        covered.update(f"{n}.{leaf}" for leaf, _ in m.named_parameters(recurse=False))
    return gram, covered


def _groups(params: dict[str, torch.Tensor], rows: int, budget_bytes: int) -> list[list[str]]:
    """Consecutive parameter names packed so that ``rows x numel(group)`` fits ``budget_bytes``."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, p in params.items():
        nbytes = rows * p.numel() * p.element_size()
        if current and size + nbytes > budget_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        groups.append(current)
    return groups


def _vmap_gram(
    losses: SampleLosses, names: list[str], chunk_size: int, budget: int
) -> torch.Tensor:
    """Gram of the per-sample gradients w.r.t. the parameters ``names``, by ``vmap(grad)``."""
    model = losses.model
    samples = losses.samples
    k = samples[0].shape[0]
    device = samples[0].device
    fixed = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    gram = torch.zeros(k, k, dtype=torch.float64, device=device)

    def sample_loss(group: dict[str, torch.Tensor], *sample: torch.Tensor) -> torch.Tensor:
        return functional_call(model, ({**fixed, **group}, buffers), tuple(s[None] for s in sample)).sum()

    per_sample = vmap(grad(sample_loss), in_dims=(None,) + (0,) * len(samples))
    for group_names in _groups({n: fixed[n] for n in names}, k, budget):
        group = {n: fixed[n] for n in group_names}
        numel = sum(p.numel() for p in group.values())
        nbytes = numel * group[group_names[0]].element_size()

        def grads(lo: int, hi: int) -> torch.Tensor:
            out = torch.empty(hi - lo, numel, dtype=group[group_names[0]].dtype, device=device)
            for i in range(lo, hi, chunk_size):
                j = min(i + chunk_size, hi)
                g = per_sample(group, *(s[i:j] for s in samples))
                out[i - lo : j - lo] = torch.cat([g[n].reshape(j - i, -1) for n in group_names], dim=1)
            return out

        _add_blocked_gram(gram, grads, nbytes, budget)
    return gram


def gradient_gram(
    losses: SampleLosses, chunk_size: int = 64, max_memory_mb: float = 512, factorise_linear: bool = True
) -> torch.Tensor:
    """``G[i, j] = <g_i, g_j>`` (float64 ``[k, k]``) of the per-sample loss gradients w.r.t. the
    trainable parameters (``curvature.trainable_parameters``).

    Linear, convolution and normalisation layers use the per-layer factorisation of ``_layer_gram``
    (when ``factorise_linear``; False: everything through ``vmap``, the reference path); every
    other parameter goes through ``vmap(grad)`` in groups whose stored per-sample gradients stay
    within ``max_memory_mb`` (see the module docstring).
    """
    names = list(trainable_parameters(losses.model))
    k, device = losses.samples[0].shape[0], losses.samples[0].device
    gram = torch.zeros(k, k, dtype=torch.float64, device=device)
    covered: set[str] = set()
    if factorise_linear:
        gram, covered = _layer_gram(losses, chunk_size, int(max_memory_mb * 2**20))
    rest = [n for n in names if n not in covered]
    if rest:
        gram = gram + _vmap_gram(losses, rest, chunk_size, int(max_memory_mb * 2**20))
    return gram


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

    Build ``losses`` with ``td_sample_losses`` or ``perturbation_sample_losses``.
    """
    gram = gradient_gram(losses, chunk_size, max_memory_mb)
    matrix, norms = normalise(gram)
    matrix, norms = matrix.cpu(), norms.cpu()
    order, labels = kmeans_order(matrix, num_clusters, seed)
    return CovResult(matrix=matrix, order=order, labels=labels, grad_norms=norms)
