"""The fit of the plasticity probe (eq. 5): ``T`` copies of the network, each fitted to its own
target for ``steps`` optimizer steps on minibatches of the probe's input set (``plasticity.py``
builds the targets and reads the results).

The vectorised fit stacks the T copies (``torch.func.stack_module_state``) and runs them with
``vmap(functional_call)``; the summed loss gives each copy exactly its own gradient, and the
optimizer is elementwise, so one optimizer over the stacked parameters equals T separate ones.
``fit_targets_sequential`` is the same fit one target at a time, the reference for the vectorised
one. Both draw the minibatch indices from the probe seed's ``minibatches`` stream
(``seeding.probe_minibatch_seed``), the same minibatch for every target at a step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..nets.heads import InjectedHead, TwoHotHead, two_hot
from ..optim import build_optimizer
from ..seeding import probe_minibatch_seed


def categorical_head(net: nn.Module) -> nn.Module | None:
    """``net``'s categorical head (two-hot or HL-Gauss; plasticity injection's wrapped head
    included), whose ``target_distribution`` the cross-entropy fit uses, or None."""
    head = getattr(net, "head", None)
    if isinstance(head, InjectedHead):
        head = head.old
    return head if isinstance(head, TwoHotHead) else None


class RawOutputs(nn.Module):
    """``net``'s head outputs before the readout (two-hot logits ``[B, A, K]``), as a module, so the
    probe can fit them through ``functional_call`` (``probe.two_hot_fit=cross_entropy``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head.raw(self.net.body(x))


def fit_loss(out: torch.Tensor, y: torch.Tensor, support: Any) -> torch.Tensor:
    """The probe's fitting objective per leading index, mean over inputs and actions: the squared
    error of the outputs ``out [..., B, A]`` (``support`` None), or the cross-entropy of the logits
    ``out [..., B, A, K]`` to the head's categorical target of ``y``: ``two_hot(y)`` when
    ``support`` is the support tensor, ``support.target_distribution(y)`` when it is the head
    (two-hot or HL-Gauss, ``categorical_head``)."""
    if support is None:
        return ((out - y) ** 2).mean(dim=(-2, -1))
    target = two_hot(y, support) if isinstance(support, torch.Tensor) else support.target_distribution(y)
    return -(target * torch.log_softmax(out, dim=-1)).sum(-1).mean(dim=(-2, -1))


def chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 4096, dim: int = -2
) -> torch.Tensor:
    """``fn(x)`` in chunks of inputs, concatenated along the outputs' input dimension ``dim``."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=dim)


def _is_linear_weight(base: nn.Module, name: str, stacked: torch.Tensor) -> bool:
    module_name, _, leaf = name.rpartition(".")
    return leaf == "weight" and stacked.dim() == 3 and isinstance(base.get_submodule(module_name), nn.Linear)


def _stacked_forward(
    base: nn.Module,
    leaves: dict[str, torch.Tensor],
    transposed: frozenset[str],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """The outputs [T, B, A] of the T stacked copies on the same inputs ``x``."""
    params = {k: v.mT if k in transposed else v for k, v in leaves.items()}
    return vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None), randomness="different")(
        params, buffers, x
    )


def per_target_loss(
    base: nn.Module,
    leaves: dict[str, torch.Tensor],
    transposed: frozenset[str],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    support: Any = None,
) -> torch.Tensor:
    """The fitting objective (``fit_loss``) of each of the T stacked copies on the minibatch ``x``
    against ``y`` [T, B, A]: mean squared error, or with ``support`` the two-hot cross-entropy.

    Everything comes in as an argument (the network copy, the stacked parameters), so a compiled
    version (``fastpath.compiled_probe_fit``) is traced at the first pause and reused at every later one."""
    return fit_loss(_stacked_forward(base, leaves, transposed, buffers, x), y, support)


def fit_targets_vectorised(
    net: nn.Module,
    optimizer_cfg: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
    seed: int,
    curve_every_steps: int,
    compiled: Callable[..., torch.Tensor] | None = None,
    two_hot_fit: bool = False,
    advance: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit all ``T`` targets at once from copies of ``net``; returns (initial, final, curve).

    ``initial`` and ``final`` are the squared errors of the Q-values on all of X; the curve is the
    minibatch objective fitted: the same squared error or, with ``two_hot_fit`` on a two-hot
    network, the two-hot cross-entropy of its logits (``fit_loss``).
    ``compiled``: the run's compiled ``per_target_loss`` (``fastpath.compiled_probe_fit``: ``speed.compile`` /
    ``speed.cuda_graphs``) for the minibatch losses; the losses on all of X stay eager.
    ``advance(1)`` is called after each probe step (progress; a Python call, no host read)."""
    T, device = targets.shape[0], inputs.device
    support = categorical_head(net) if two_hot_fit else None
    q_net = copy.deepcopy(net)
    base = q_net if support is None else RawOutputs(q_net)
    trainable = {k: p.requires_grad for k, p in base.named_parameters()}
    stacked, buffers = stack_module_state([base] * T)
    # A stacked Linear weight [T, out, in] is kept as its contiguous transpose [T, in, out] and
    # handed to the network as a view. Under vmap a Linear computes x @ W^T as one bmm, and its weight
    # gradient comes out in the [T, in, out] layout: this way the bmm reads a contiguous operand,
    # autograd hands the gradient over without a transposing copy, and the optimizer's kernels run
    # on contiguous tensors (each transposing copy costs as much as a third of the step's matmuls).
    transposed = frozenset(k for k, v in stacked.items() if _is_linear_weight(base, k, v))
    leaves = {
        k: (v.detach().mT.contiguous() if k in transposed else v.detach().clone()).requires_grad_(trainable[k])
        for k, v in stacked.items()
    }
    buffers = {k: v.detach().clone() for k, v in buffers.items()}
    optimizer = build_optimizer(optimizer_cfg, [v for k, v in leaves.items() if trainable[k]])

    def full_loss() -> torch.Tensor:
        base.eval()
        with torch.no_grad():
            out = chunked(lambda x: _stacked_forward(base, leaves, transposed, buffers, x), inputs, dim=1)
            q = out if support is None else q_net.head.readout(out)
            return ((q - targets) ** 2).mean(dim=(1, 2))

    minibatch_loss = per_target_loss if compiled is None else compiled
    initial = full_loss()
    base.train()
    generator = torch.Generator(device).manual_seed(probe_minibatch_seed(seed))
    curve = torch.zeros(T, -(-steps // curve_every_steps), device=device)
    for i in range(steps):
        idx = torch.randint(inputs.shape[0], (batch_size,), generator=generator, device=device)
        per_target = minibatch_loss(base, leaves, transposed, buffers, inputs[idx], targets[:, idx], support)
        optimizer.zero_grad(set_to_none=True)
        per_target.sum().backward()
        optimizer.step()
        curve[:, i // curve_every_steps] += per_target.detach()
        if advance is not None:
            advance(1)
    return initial, full_loss(), curve


def fit_targets_sequential(
    net: nn.Module,
    optimizer_cfg: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
    seed: int,
    curve_every_steps: int,
    two_hot_fit: bool = False,
    advance: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same fit one target at a time (the reference for the vectorised fit); ``advance(1)``
    after each probe step of each target."""
    T, device = targets.shape[0], inputs.device
    support = categorical_head(net) if two_hot_fit else None
    initial, final = torch.zeros(T, device=device), torch.zeros(T, device=device)
    curve = torch.zeros(T, -(-steps // curve_every_steps), device=device)
    for j in range(T):
        model = copy.deepcopy(net).eval()
        fitted = model if support is None else RawOutputs(model)
        optimizer = build_optimizer(optimizer_cfg, [p for p in model.parameters() if p.requires_grad])
        with torch.no_grad():
            initial[j] = ((chunked(model, inputs) - targets[j]) ** 2).mean()
        model.train()
        generator = torch.Generator(device).manual_seed(probe_minibatch_seed(seed))
        for i in range(steps):
            idx = torch.randint(inputs.shape[0], (batch_size,), generator=generator, device=device)
            loss = fit_loss(fitted(inputs[idx]), targets[j, idx], support)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curve[j, i // curve_every_steps] += loss.detach()
            if advance is not None:
                advance(1)
        model.eval()
        with torch.no_grad():
            final[j] = ((chunked(model, inputs) - targets[j]) ** 2).mean()
    return initial, final, curve


# ------------------------------------------------------------------------------ a population's fit


def _population_forward(
    base: nn.Module,
    leaves: dict[str, torch.Tensor],
    transposed: frozenset[str],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """The outputs ``[M, T, B, A]`` of ``M x T`` stacked copies (``leaves`` ``[M, T, ...]``), the
    ``T`` copies of member ``m`` on that member's inputs ``x[m]`` (``x`` ``[M, B, ...]``)."""
    return vmap(
        lambda p, b, xm: _stacked_forward(base, p, transposed, b, xm), in_dims=(0, 0, 0), randomness="different"
    )(leaves, buffers, x)


def population_loss(
    base: nn.Module,
    leaves: dict[str, torch.Tensor],
    transposed: frozenset[str],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    support: Any = None,
) -> torch.Tensor:
    """``per_target_loss`` of a population: the fitting objective ``[M, T]`` of each of the
    ``M x T`` stacked copies on its member's minibatch ``x`` ``[M, B, ...]`` against ``y``
    ``[M, T, B, A]``. Everything comes in as an argument, so one compiled version
    (``fastpath.compiled_population_loss``) serves every pause of every member."""
    return fit_loss(_population_forward(base, leaves, transposed, buffers, x), y, support)


def fit_population_vectorised(
    nets: list[nn.Module],
    optimizer_cfg: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
    seeds: list[int],
    curve_every_steps: int,
    compiled: Callable[..., torch.Tensor] | None = None,
    two_hot_fit: bool = False,
    advance: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fit_targets_vectorised`` for ``M`` members at once: member ``m``'s ``T`` copies of
    ``nets[m]`` fit its targets ``targets[m]`` ``[T, N, A]`` on its inputs ``inputs[m]``
    ``[N, ...]``, with the minibatch indices of its own probe seed ``seeds[m]``; returns
    (initial ``[M, T]``, final ``[M, T]``, curve sums ``[M, T, K]``).

    The ``M x T`` copies are one stack (leaves ``[M, T, ...]``) under a nested ``vmap`` (members,
    then targets); the summed loss gives each copy exactly its own gradient and the optimizer is
    elementwise, so the fit is ``M`` separate ``fit_targets_vectorised``. The networks must share
    one structure (``structure_key``): member 0's copy is the module every member's parameters
    run through. ``compiled``: ``compiled_population_loss`` (None: eager)."""
    M, T = targets.shape[:2]
    N, device = inputs.shape[1], inputs.device
    support = categorical_head(nets[0]) if two_hot_fit else None
    copies = [copy.deepcopy(net) for net in nets]
    q_net = copies[0]
    bases = copies if support is None else [RawOutputs(c) for c in copies]
    base = bases[0]
    trainable = {k: p.requires_grad for k, p in base.named_parameters()}
    stacked, buffers = stack_module_state([b for b in bases for _ in range(T)])  # [M * T, ...], member-major
    transposed = frozenset(k for k, v in stacked.items() if _is_linear_weight(base, k, v))  # as in the single fit
    leaves = {
        k: (v.detach().unflatten(0, (M, T)).mT if k in transposed else v.detach().unflatten(0, (M, T)))
        .contiguous()
        .clone()
        .requires_grad_(trainable[k])
        for k, v in stacked.items()
    }
    buffers = {k: v.detach().unflatten(0, (M, T)).clone() for k, v in buffers.items()}
    del stacked
    optimizer = build_optimizer(optimizer_cfg, [v for k, v in leaves.items() if trainable[k]])

    def full_loss() -> torch.Tensor:
        # member by member, as the single fit (one stack of all members' activations on all of X
        # would be members times larger, out of cache on a CPU)
        base.eval()
        with torch.no_grad():
            out = []
            for m in range(M):
                own, own_buffers = {k: v[m] for k, v in leaves.items()}, {k: v[m] for k, v in buffers.items()}
                q = chunked(lambda x: _stacked_forward(base, own, transposed, own_buffers, x), inputs[m], dim=1)
                q = q if support is None else q_net.head.readout(q)
                out.append(((q - targets[m]) ** 2).mean(dim=(1, 2)))
            return torch.stack(out)

    minibatch_loss = population_loss if compiled is None else compiled
    initial = full_loss()
    base.train()
    generators = [torch.Generator(device).manual_seed(probe_minibatch_seed(s)) for s in seeds]
    # member m's inputs and targets in one flat table each, so a step gathers every member's
    # minibatch with one index_select: rows m * N + idx_m
    flat_inputs = inputs.reshape(M * N, *inputs.shape[2:])
    flat_targets = targets.transpose(1, 2).reshape(M * N, T, *targets.shape[3:])  # [M * N, T, A]
    row_offsets = (torch.arange(M, device=device) * N)[:, None]
    curve = torch.zeros(M, T, -(-steps // curve_every_steps), device=device)
    for i in range(steps):
        idx = torch.stack([torch.randint(N, (batch_size,), generator=g, device=device) for g in generators])
        rows = (idx + row_offsets).reshape(-1)
        x = flat_inputs.index_select(0, rows).unflatten(0, (M, batch_size))
        y = flat_targets.index_select(0, rows).unflatten(0, (M, batch_size)).transpose(1, 2)  # [M, T, B, A]
        per_copy = minibatch_loss(base, leaves, transposed, buffers, x, y, support)
        optimizer.zero_grad(set_to_none=True)
        per_copy.sum().backward()
        optimizer.step()
        curve[:, :, i // curve_every_steps] += per_copy.detach()
        if advance is not None:
            advance(1)
    return initial, full_loss(), curve
