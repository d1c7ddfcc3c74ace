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

Choices the paper leaves open (named here and in docs/concepts.md): the minibatch size, the size of X,
a scalar offset ``a`` (mean over inputs and actions), the same minibatch for every target at a
step, and the curve as the mean minibatch loss over windows of ``curve_every_steps``.

The fit itself (vectorised over the T copies, or one target at a time) is in ``plasticity_fit.py``.

Network modes: the copies train in train mode, as the agent trains (dropout on, a different mask
per copy; BatchNorm on batch statistics, each copy updating its own running statistics, stacked
like the parameters); every loss on all of ``X`` (initial, final), the offset ``a`` and the fresh
target networks are evaluated in eval mode (no dropout, BatchNorm on running statistics), so they
are deterministic and never write to a network. Parameters that do not train in the run (the
frozen heads of plasticity injection) do not train in the probe either.

As a diagnostic (``Probe``, registered at the end of this module) the probe runs at every pause
(``probe.every_steps``, the pause interval, and the pauses a chain adds around its switches) on
``probe.num_inputs`` replay observations of its own (stream ``probe/inputs``), all its randomness
from the pause's ``probe`` stream (``seeding.probe_seed``). It writes phase ``probe``
(``probe_loss``, ``probe_initial_loss``, ``probe_baseline``, ``probe_offset``, ``plasticity``,
``probe_loss_target<j>``) and arrays ``probe/curve_loss`` ``[T, K]`` and ``probe/curve_steps`` ``[K]``.
Its config stays at the top-level key ``probe`` (``ProbeConfig``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from .. import registry
from ..errors import ConfigError, choice, positive
from ..seeding import probe_seed, probe_target_seeds
from .base import Diagnostic, Output, PauseView
from .plasticity_fit import chunked, fit_population_vectorised, fit_targets_sequential, fit_targets_vectorised

# the names it writes (phase ``probe``); the report keys on them (``report/names.py``)
PROBE_LOSS, PROBE_BASELINE, PLASTICITY = "probe_loss", "probe_baseline", "plasticity"
CURVE_LOSS, CURVE_STEPS = "probe/curve_loss", "probe/curve_steps"


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
            PROBE_LOSS: final.mean().item(),
            "probe_initial_loss": self.initial_loss.double().mean().item(),
            PROBE_BASELINE: self.baseline.double().mean().item(),
            "probe_offset": self.offset,
        }
        out[PLASTICITY] = out[PROBE_BASELINE] - out[PROBE_LOSS]
        out.update({f"probe_loss_target{j:02d}": v for j, v in enumerate(final.tolist())})
        return out


def _fork_rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


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


def plasticity_probe(
    net: nn.Module,
    build_fresh: Callable[[], nn.Module],
    optimizer_cfg: Any,
    inputs: torch.Tensor,
    probe_cfg: Any,
    seed: int,
    compiled: Callable[..., torch.Tensor] | None = None,
    advance: Callable[[int], None] | None = None,
) -> ProbeResult:
    """Run the probe of eq. (5) from a copy of ``net`` on the input set ``inputs``.

    ``compiled``: the run's compiled minibatch loss (``fastpath.compiled_probe_fit``), vectorised fit only.
    ``advance(n)``: told after each probe step (``probe_steps(probe_cfg)`` in all; progress).
    ``net`` is never modified; all randomness comes from ``seed`` (fresh initialisations under
    ``fork_rng``, minibatches from a private generator), so the caller's RNG streams are untouched.
    """
    offset, targets = probe_targets(net, build_fresh, inputs, probe_cfg, seed)
    args = (
        net,
        optimizer_cfg,
        inputs,
        targets,
        probe_cfg.steps,
        probe_cfg.batch_size,
        seed,
        probe_cfg.curve_every_steps,
    )
    two_hot_fit = fits_cross_entropy(probe_cfg)
    if probe_cfg.vectorised:
        initial, final, curve_sum = fit_targets_vectorised(
            *args, compiled=compiled, two_hot_fit=two_hot_fit, advance=advance
        )
    else:
        initial, final, curve_sum = fit_targets_sequential(*args, two_hot_fit=two_hot_fit, advance=advance)
    return probe_result(initial, final, curve_sum, targets, offset, probe_cfg)


def probe_targets(
    net: nn.Module, build_fresh: Callable[[], nn.Module], inputs: torch.Tensor, probe_cfg: Any, seed: int
) -> tuple[float, torch.Tensor]:
    """The offset ``a`` (``net``'s mean prediction on ``inputs``, in eval mode) and the targets
    ``[T, N, A]`` of the probe of seed ``seed`` (``make_targets``)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        offset = float(chunked(net, inputs).mean())
    net.train(was_training)
    T = int(probe_cfg.num_targets)
    return offset, make_targets(build_fresh, inputs, probe_target_seeds(seed, T), offset, probe_cfg.sin_scale)


def fits_cross_entropy(probe_cfg: Any) -> bool:
    """Whether a two-hot network fits the targets by its cross-entropy (``probe.two_hot_fit``)."""
    return choice(getattr(probe_cfg, "two_hot_fit", "expected_q")) == "cross_entropy"


def probe_result(
    initial: torch.Tensor,
    final: torch.Tensor,
    curve_sum: torch.Tensor,
    targets: torch.Tensor,
    offset: float,
    probe_cfg: Any,
) -> ProbeResult:
    """The ``ProbeResult`` of a fit: the losses ``[T]``, the curve's window sums ``[T, K]`` (divided
    here by each window's steps) and the targets ``[T, N, A]`` (their variances: the baselines)."""
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


def population_probe(
    nets: list[nn.Module],
    build_fresh: list[Callable[[], nn.Module]],
    optimizer_cfg: Any,
    inputs: list[torch.Tensor],
    probe_cfg: Any,
    seeds: list[int],
    compiled: Callable[..., torch.Tensor] | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[ProbeResult]:
    """The probe of ``plasticity_probe`` for each of ``M`` members at once: member ``i``'s network
    ``nets[i]``, its ``build_fresh[i]``, input set ``inputs[i]`` and probe seed ``seeds[i]``; the
    ``M x T`` copies fitted as one stack (``fit_population_vectorised``; the networks must share
    one structure, ``plasticity_fit.structure_key``). ``compiled``: the compiled
    ``population_loss`` (``fastpath.compiled_population_loss``) or None (eager)."""
    made = [probe_targets(n, b, x, probe_cfg, s) for n, b, x, s in zip(nets, build_fresh, inputs, seeds)]
    targets = torch.stack([t for _, t in made])
    initial, final, curve_sum = fit_population_vectorised(
        nets,
        optimizer_cfg,
        torch.stack(list(inputs)),
        targets,
        probe_cfg.steps,
        probe_cfg.batch_size,
        seeds,
        probe_cfg.curve_every_steps,
        compiled=compiled,
        two_hot_fit=fits_cross_entropy(probe_cfg),
        advance=advance,
    )
    return [
        probe_result(initial[i], final[i], curve_sum[i], targets[i], offset, probe_cfg)
        for i, (offset, _) in enumerate(made)
    ]


def probe_steps(probe_cfg: Any) -> int:
    """The probe steps of one pause: ``steps``, times ``num_targets`` when fitted one at a time."""
    return int(probe_cfg.steps) * (1 if probe_cfg.vectorised else int(probe_cfg.num_targets))


# ------------------------------------------------------------------------------ the diagnostic


class ProbeAt(str, enum.Enum):
    before_interventions = "before_interventions"  # the network as trained, before the step's hooks
    after_interventions = "after_interventions"  # after the step's after-step and target-update hooks


class TwoHotFit(str, enum.Enum):
    expected_q = "expected_q"  # the squared error of the expected Q-values, as a scalar head is fitted
    cross_entropy = "cross_entropy"  # the two-hot cross-entropy of the head's logits to two_hot(g)


@dataclass
class ProbeConfig:
    """The plasticity probe (config key ``probe``); ``every_steps`` is the pause interval."""

    enabled: bool = True
    every_steps: int = 5000
    num_targets: int = 10
    steps: int = 2000
    batch_size: int = 128
    num_inputs: int = 2048
    sin_scale: float = 1e5
    curve_every_steps: int = 20
    vectorised: bool = True
    at: ProbeAt = ProbeAt.before_interventions
    two_hot_fit: TwoHotFit = TwoHotFit.expected_q


def check(cfg: Any, key: str) -> None:
    """Sizes positive, a minibatch within the input set, and an input set the replay holds at the
    first pause (``min(agent.learning_starts, agent.replay_capacity)``; a continual protocol has
    no replay)."""
    for name in ("every_steps", "num_targets", "steps", "batch_size", "num_inputs", "curve_every_steps"):
        positive(cfg, f"{key}.{name}")
    probe = OmegaConf.select(cfg, key)
    if probe.batch_size > probe.num_inputs:
        raise ConfigError(
            f"{key}.batch_size",
            f"the probe minibatch ({probe.batch_size}) is larger than its input set {key}.num_inputs ({probe.num_inputs})",
        )
    env = registry.parts("env").get(OmegaConf.select(cfg, "env.name"))
    if env is not None and env.spec.continual:
        return  # a continual protocol draws X from its current task (``continual/``), not from a replay
    agent = cfg.agent
    replay_at_first_pause = min(agent.learning_starts, agent.replay_capacity)
    if probe.enabled and probe.num_inputs > replay_at_first_pause:
        raise ConfigError(
            f"{key}.num_inputs",
            f"the probe needs {probe.num_inputs} replay inputs but the replay holds "
            f"{replay_at_first_pause} at the first pause (min(agent.learning_starts, agent.replay_capacity))",
        )


class Probe(Diagnostic):
    """The plasticity probe of eq. (5) at every pause (module docstring)."""

    name, phase, key = "probe", "probe", "probe"
    scalars = (PROBE_LOSS, "probe_initial_loss", PROBE_BASELINE, "probe_offset", PLASTICITY, "probe_loss_target*")
    arrays = (CURVE_LOSS, CURVE_STEPS)

    def due(self, cfg: Any, step: int) -> bool:
        return bool(cfg.probe.enabled)  # every pause: the pauses are the probe's own cadence

    def own_inputs(self, cfg: Any) -> int:
        return int(cfg.probe.num_inputs)

    def steps(self, cfg: Any) -> int:
        return probe_steps(cfg.probe)

    def detail(self, cfg: Any) -> str:
        return f"{cfg.probe.num_targets} targets x {cfg.probe.steps} steps"

    def run(self, view: PauseView) -> Output:
        cfg = view.cfg
        result = plasticity_probe(
            view.online,
            view.build_fresh,
            cfg.optimizer,
            view.own_inputs,
            cfg.probe,
            probe_seed(view.seed, view.step),
            compiled=view.compiled_probe_fit,
            advance=view.advance,
        )
        return probe_output(result)


def probe_output(result: ProbeResult) -> Output:
    """What the probe writes at a pause: its scalars (phase ``probe``) and its curve arrays."""
    arrays = {CURVE_LOSS: result.curve.cpu().numpy(), CURVE_STEPS: result.curve_steps.cpu().numpy()}
    return Output(result.scalars(), arrays)


# trainer_only: the case studies of section 4 (env=memorization, brownian) run no probe
registry.register("diagnostic", "probe", ProbeConfig, build=Probe, check=check, order=0, trainer_only=True)
