"""The plasticity probe of sections 2.2 and 3.1 (equation 5).

From a copy of the current parameters theta_t, fit ``T`` random regression targets

    g_j(x) = a + sin(sin_scale * f(x; w0_j)),   j = 1..T,

where ``w0_j`` is a fresh initialisation of the same architecture (interventions included), and
``a`` is the current network's mean prediction over the probe inputs and actions. Each target is
fitted for ``steps`` optimizer steps with the run's optimizer type and hyperparameters (fresh
state), on minibatches of the probe input set ``X`` (observations drawn from the replay buffer).

Recorded per target: the loss on all of ``X`` before fitting (``initial``) and after (``final``),
the baseline ``b_j = Var[g_j(X)]`` and the training-loss curve. Losses and variances are means
over inputs *and* actions (one squared error per Q-output), so ``P = mean_j b_j - mean_j final_j``.

Choices the paper leaves open (named here and in the README): the minibatch size, the size of X,
a scalar offset ``a`` (mean over inputs and actions), the same minibatch for every target at a
step, and the curve as the mean minibatch loss over windows of ``curve_every_steps``.

The vectorised fit stacks the T copies (``torch.func.stack_module_state``) and runs them with
``vmap(functional_call)``; the summed loss gives each copy exactly its own gradient, and the
optimizer is elementwise, so one optimizer over the stacked parameters equals T separate ones.

Network modes: the copies train in train mode, as the agent trains (dropout on, a different mask
per copy; BatchNorm on batch statistics, each copy updating its own running statistics, stacked
like the parameters); every loss on all of ``X`` (initial, final), the offset ``a`` and the fresh
target networks are evaluated in eval mode (no dropout, BatchNorm on running statistics), so they
are deterministic and never write to a network. Parameters that do not train in the run (the
frozen heads of plasticity injection) do not train in the probe either.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..nets.heads import InjectedHead, TwoHotHead, two_hot
from ..optim import build_optimizer
from ..seeding import stream_seed


@dataclass
class ProbeResult:
    initial_loss: torch.Tensor  # [T] loss on X before fitting
    final_loss: torch.Tensor  # [T] loss on X after fitting
    baseline: torch.Tensor  # [T] variance of each target over X (and actions)
    curve: torch.Tensor  # [T, K] mean minibatch loss over each window of curve_every_steps
    curve_steps: torch.Tensor  # [K] probe step at the end of each window
    offset: float  # a, the network's mean prediction

    def scalars(self) -> dict[str, float]:
        final = self.final_loss.double().cpu()
        out = {
            "probe_loss": final.mean().item(),
            "probe_initial_loss": self.initial_loss.double().mean().item(),
            "probe_baseline": self.baseline.double().mean().item(),
            "probe_offset": self.offset,
        }
        out["plasticity"] = out["probe_baseline"] - out["probe_loss"]
        out.update({f"probe_loss_target{j:02d}": v for j, v in enumerate(final.tolist())})
        return out


def _fork_rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def target_seeds(seed: int, num_targets: int) -> list[int]:
    """The seeds of the fresh initialisations ``w0_j`` of one pause's targets (stream ``targets``
    of the pause's probe seed)."""
    return [stream_seed(seed, "targets", j) for j in range(num_targets)]


def minibatch_seed(seed: int) -> int:
    """The seed of the probe's minibatch indices (stream ``minibatches`` of the pause's probe seed)."""
    return stream_seed(seed, "minibatches")


class full_fp32:
    """Full fp32 matmuls and convolutions inside the block, whatever ``speed.tf32`` set.

    ``sin(1e5 * f)`` turns TF32's ~1e-3 relative rounding into phase errors of several radians, so
    targets built under TF32 would depend on the GPU. On the CPU the flags change nothing."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, _matmul_precision())
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if self.saved[2] is not None:
            torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: Any) -> None:
        matmul, cudnn, precision = self.saved
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
        if precision is not None:
            torch.set_float32_matmul_precision(precision)


def _matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or None where torch refuses to say because the
    legacy ``allow_tf32`` flags were set (torch 2.11 on CUDA raises "mix of the legacy and new
    APIs"); then the legacy flags, which ``full_fp32`` sets and restores, are what decide TF32."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@torch.no_grad()
def make_targets(
    build_fresh: Callable[[], nn.Module], inputs: torch.Tensor, seeds: list[int], offset: float, sin_scale: float
) -> torch.Tensor:
    """Targets ``[T, N, A]``: ``offset + sin(sin_scale * f(X; w0_j))``, ``w0_j`` built under seed j.

    Network initialisation runs under ``torch.random.fork_rng``, so the caller's RNG state is
    untouched; ``f(X; w0_j)`` is computed in full fp32 (``full_fp32``), never in TF32.
    """
    targets = []
    for seed in seeds:
        with torch.random.fork_rng(devices=_fork_rng_devices(inputs.device)):
            torch.manual_seed(seed)
            fresh = build_fresh().to(inputs.device).eval()
        with full_fp32():
            targets.append(offset + torch.sin(sin_scale * fresh(inputs)))
    return torch.stack(targets)


def two_hot_support(net: nn.Module) -> torch.Tensor | None:
    """The support of ``net``'s two-hot head (plasticity injection's wrapped head included), or None."""
    head = getattr(net, "head", None)
    if isinstance(head, InjectedHead):
        head = head.old
    return head.support if isinstance(head, TwoHotHead) else None


class RawOutputs(nn.Module):
    """``net``'s head outputs before the readout (two-hot logits ``[B, A, K]``), as a module, so the
    probe can fit them through ``functional_call`` (``probe.two_hot_fit=cross_entropy``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head.raw(self.net.body(x))


def fit_loss(out: torch.Tensor, y: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    """The probe's fitting objective per leading index, mean over inputs and actions: the squared
    error of the outputs ``out [..., B, A]`` (``support`` None), or the two-hot cross-entropy of the
    logits ``out [..., B, A, K]`` to ``two_hot(y)`` on ``support``."""
    if support is None:
        return ((out - y) ** 2).mean(dim=(-2, -1))
    return -(two_hot(y, support) * torch.log_softmax(out, dim=-1)).sum(-1).mean(dim=(-2, -1))


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 4096, dim: int = -2) -> torch.Tensor:
    """``fn(x)`` in chunks of inputs, concatenated along the outputs' input dimension ``dim``."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=dim)


def _is_linear_weight(base: nn.Module, name: str, stacked: torch.Tensor) -> bool:
    module_name, _, leaf = name.rpartition(".")
    return leaf == "weight" and stacked.dim() == 3 and isinstance(base.get_submodule(module_name), nn.Linear)


def _stacked_forward(
    base: nn.Module, leaves: dict[str, torch.Tensor], transposed: frozenset[str], buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """The outputs [T, B, A] of the T stacked copies on the same inputs ``x``."""
    params = {k: v.mT if k in transposed else v for k, v in leaves.items()}
    return vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None), randomness="different")(
        params, buffers, x
    )


def per_target_loss(
    base: nn.Module, leaves: dict[str, torch.Tensor], transposed: frozenset[str], buffers: dict[str, torch.Tensor],
    x: torch.Tensor, y: torch.Tensor, support: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fitting objective (``fit_loss``) of each of the T stacked copies on the minibatch ``x``
    against ``y`` [T, B, A]: mean squared error, or with ``support`` the two-hot cross-entropy.

    Everything comes in as an argument (the network copy, the stacked parameters), so a compiled
    version (``fastpath.probe_loss``) is traced at the first pause and reused at every later one."""
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
    ``compiled``: the run's compiled ``per_target_loss`` (``fastpath.probe_loss``: ``speed.compile`` /
    ``speed.cuda_graphs``) for the minibatch losses; the losses on all of X stay eager.
    ``advance(1)`` is called after each probe step (progress; a Python call, no host read)."""
    T, device = targets.shape[0], inputs.device
    support = two_hot_support(net) if two_hot_fit else None
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
            out = _chunked(lambda x: _stacked_forward(base, leaves, transposed, buffers, x), inputs, dim=1)
            q = out if support is None else q_net.head.readout(out)
            return ((q - targets) ** 2).mean(dim=(1, 2))

    minibatch_loss = per_target_loss if compiled is None else compiled
    initial = full_loss()
    base.train()
    generator = torch.Generator(device).manual_seed(minibatch_seed(seed))
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
    support = two_hot_support(net) if two_hot_fit else None
    initial, final = torch.zeros(T, device=device), torch.zeros(T, device=device)
    curve = torch.zeros(T, -(-steps // curve_every_steps), device=device)
    for j in range(T):
        model = copy.deepcopy(net).eval()
        fitted = model if support is None else RawOutputs(model)
        optimizer = build_optimizer(optimizer_cfg, [p for p in model.parameters() if p.requires_grad])
        with torch.no_grad():
            initial[j] = ((_chunked(model, inputs) - targets[j]) ** 2).mean()
        model.train()
        generator = torch.Generator(device).manual_seed(minibatch_seed(seed))
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
            final[j] = ((_chunked(model, inputs) - targets[j]) ** 2).mean()
    return initial, final, curve


def plasticity_probe(
    net: nn.Module,
    build_fresh: Callable[[], nn.Module],
    optimizer_cfg: Any,
    inputs: torch.Tensor,
    probe_cfg: Any,
    seed: int,
    compiled: Callable[..., torch.Tensor] | None = None,
    progress: Any = None,
) -> ProbeResult:
    """Run the probe of eq. (5) from a copy of ``net`` on the input set ``inputs``.

    ``compiled``: the run's compiled minibatch loss (``fastpath.probe_loss``), vectorised fit only.
    ``progress``: a ``progress.PauseProgress`` (None: no progress); the fit reports its steps to it.
    ``net`` is never modified; all randomness comes from ``seed`` (fresh initialisations under
    ``fork_rng``, minibatches from a private generator), so the caller's RNG streams are untouched.
    """
    was_training = net.training
    net.eval()
    with torch.no_grad():
        offset = float(_chunked(net, inputs).mean())
    net.train(was_training)
    T = int(probe_cfg.num_targets)
    targets = make_targets(build_fresh, inputs, target_seeds(seed, T), offset, probe_cfg.sin_scale)
    args = (net, optimizer_cfg, inputs, targets, probe_cfg.steps, probe_cfg.batch_size, seed, probe_cfg.curve_every_steps)
    fit = getattr(probe_cfg, "two_hot_fit", "expected_q")
    two_hot_fit = str(getattr(fit, "value", fit)) == "cross_entropy"
    advance = None if progress is None else progress.start("probe", int(probe_cfg.steps) * (1 if probe_cfg.vectorised else T))
    if probe_cfg.vectorised:
        initial, final, curve_sum = fit_targets_vectorised(*args, compiled=compiled, two_hot_fit=two_hot_fit, advance=advance)
    else:
        initial, final, curve_sum = fit_targets_sequential(*args, two_hot_fit=two_hot_fit, advance=advance)
    every, steps = int(probe_cfg.curve_every_steps), int(probe_cfg.steps)
    ends = torch.clamp(torch.arange(1, curve_sum.shape[1] + 1) * every, max=steps)
    counts = ends - torch.arange(curve_sum.shape[1]) * every
    return ProbeResult(
        initial_loss=initial,
        final_loss=final,
        baseline=targets.var(dim=(1, 2), unbiased=False),
        curve=curve_sum / counts.to(curve_sum),
        curve_steps=ends,
        offset=offset,
    )
