"""The Gram matrix ``G[i, j] = <g_i, g_j>`` of per-sample loss gradients, for the gradient
covariance C_k of eq. (3) (``gradcov.py``).

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parametrize

from .curvature import trainable_parameters


@dataclass
class SampleLosses:
    """A batch of ``k`` samples and a module whose ``forward(*samples)`` gives their losses ``[k]``.

    ``model`` is an eval-mode copy (never the training network); sample ``i``'s loss may depend on
    sample ``i`` only.
    """

    model: nn.Module
    samples: tuple[torch.Tensor, ...]


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
            channel_dims = (
                (1,) if isinstance(m, nn.BatchNorm2d) else tuple(range(x.dim() - len(m.normalized_shape), x.dim()))
            )
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


def _vmap_gram(losses: SampleLosses, names: list[str], chunk_size: int, budget: int) -> torch.Tensor:
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
