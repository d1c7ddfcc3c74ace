"""The pause of a population: the diagnostics of ``M`` members' pauses (runs of one config that
differ only in ``seed``, trained in one process) at one training step, each member's written to
its own metrics writer exactly as ``pause.run_pause`` writes it for that member alone.

``run_population_pause`` keeps every rule of a single pause, per member: its streams derive from
its own seed (its evaluation batch, its probe inputs, targets and minibatches, the diagnostics'
own streams), a member with non-finite parameters records ``train/nonfinite_params = 1`` and is
not measured, and nothing touches a member's networks, replay or training RNG streams.

What runs together and what runs per member:

* the plasticity probe (``probe.vectorised=true``): the members whose networks share one structure
  (``structure_key``: the same modules, parameter and buffer shapes, trainable flags and plain
  attributes; e.g. one member's head replaced by plasticity injection and another's not form two
  groups) are fitted as one stack of ``members x num_targets`` copies (on a CPU, stacks of at most
  ``CPU_STACK_PARAMS`` parameters)
  (``plasticity.population_probe``; ``torch.func`` as the single probe), with the compiled
  population loss where the members' runs compile theirs (``speed.compile`` /
  ``speed.cuda_graphs``: ``fastpath.compiled_population_loss``). A member probed on its own
  goes through the single pause's probe, with a debug log line saying why: it is the only one of
  its structure, or its network draws from the global RNG in train mode (dropout: a stack would
  draw other masks than its own run), or ``probe.vectorised=false``, or on a CPU its network is so
  large that a stack of two would pass ``CPU_STACK_PARAMS``;
* every other diagnostic runs per member (its cost is small next to the probe's at the default
  sizes; ``scripts/bench_population_pause.py`` measures each).

A stacked probe's ``timing/probe_s`` is the stack's wall-clock seconds divided by its members.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from .. import seeding
from ..progress import PauseProgress
from .base import Diagnostic, Output
from .pause import diagnostic_view, due, parameters_finite, pause_view, write_output
from .plasticity import Probe, fits_cross_entropy, population_probe, probe_output
from .plasticity_fit import categorical_head

log = logging.getLogger("plasticity_runner")


def run_population_pause(
    cfgs: Sequence[Any],
    states: Sequence[Any],
    writers: Sequence[Any],
    global_rng_states: list[dict[str, Any]] | None = None,
    progress: Any = None,
) -> list[dict[str, float]]:
    """The pause of every member at their common step: member ``i`` (config ``cfgs[i]``, training
    state ``states[i]``, a ``trainer.TrainState``, metrics writer ``writers[i]``) gets what
    ``run_pause(cfgs[i], states[i], writers[i])`` writes; returns each member's probe scalars
    (empty for a member whose probe did not run).

    ``global_rng_states``: each member's process-wide RNG state (``train_state.global_rng_state()``)
    where the population keeps one per member: a member's own diagnostics run with its state set,
    and its entry is replaced by the state they leave (only a network that draws from the global
    RNG in train mode, dropout, moves it); the process's own state is restored at the end. None:
    they run on the process's global RNG, as a single run's do. ``progress``: a
    ``progress.PauseProgress`` (None: one from the first member's ``progress``).
    """
    check_population(cfgs, states, writers)
    step = int(states[0].step)
    results: list[dict[str, float]] = [{} for _ in states]
    live = []
    for i, (state, writer) in enumerate(zip(states, writers)):
        if parameters_finite(state.agent.online):
            live.append(i)
        else:  # the single pause's rule, per member
            writer.add(step, "train", "nonfinite_params", 1.0)
    if not live:
        return results
    todo = due(cfgs[live[0]], step)
    if not todo:
        return results
    progress = progress or PauseProgress(cfgs[live[0]].progress, step)
    saved = seeding_state() if global_rng_states is not None else None
    try:
        bases = {i: pause_view(cfgs[i], states[i], todo) for i in live}
        for d in todo:
            if isinstance(d, Probe):
                outputs = _population_probe(d, cfgs, states, writers, bases, live, global_rng_states, progress)
                for i, out in outputs.items():
                    results[i] = dict(out.scalars)
                continue
            for i in live:
                with member_rng(global_rng_states, i):
                    _run_one(d, cfgs[i], states[i], writers[i], bases[i], progress)
    finally:
        if saved is not None:
            restore_seeding_state(saved)
    return results


def check_population(cfgs: Sequence[Any], states: Sequence[Any], writers: Sequence[Any]) -> None:
    """One config, one writer and one state per member; the configs differ in ``seed`` alone and
    the members pause at one step."""
    if not (len(cfgs) == len(states) == len(writers)) or not cfgs:
        raise ValueError(
            f"a population pause needs one config, state and writer per member, got "
            f"{len(cfgs)} configs, {len(states)} states and {len(writers)} writers"
        )
    steps = {int(s.step) for s in states}
    if len(steps) > 1:
        raise ValueError(f"the members of a population pause at one step, got steps {sorted(steps)}")
    first = _without_seed(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], start=1):
        if _without_seed(cfg) != first:
            raise ValueError(f"member {i}'s config differs from member 0's in more than seed")


def _without_seed(cfg: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    out.pop("seed", None)
    return out


def _run_one(d: Diagnostic, cfg: Any, state: Any, writer: Any, base: Any, progress: Any) -> Output:
    """Diagnostic ``d`` of one member, written to its writer (``pause.run_diagnostics``'s loop body)."""
    t0 = time.perf_counter()
    advance = progress.start(f"{d.name} (seed {cfg.seed})", d.steps(cfg))
    out = d.run(diagnostic_view(base, d, state, advance))
    seconds = time.perf_counter() - t0
    write_output(writer, base.step, d, out, seconds)
    progress.done(f"{d.name} (seed {cfg.seed})", seconds, d.detail(cfg))
    return out


def _population_probe(
    d: Probe,
    cfgs: Sequence[Any],
    states: Sequence[Any],
    writers: Sequence[Any],
    bases: dict[int, Any],
    live: list[int],
    global_rng_states: list[dict[str, Any]] | None,
    progress: Any,
) -> dict[int, Output]:
    """The probe of the members ``live``: stacked per structure group, per member where it cannot
    stack (module docstring)."""
    step = bases[live[0]].step
    views = {i: diagnostic_view(bases[i], d, states[i]) for i in live}  # each member's input set X
    groups, alone = probe_groups(cfgs, views, live)
    outputs: dict[int, Output] = {}
    for members in groups:
        cfg = cfgs[members[0]]
        t0 = time.perf_counter()
        label = f"probe ({len(members)} members)"
        advance = progress.start(label, d.steps(cfg))
        compiled = None
        if views[members[0]].compiled_probe_fit is not None:  # the members' runs compile their probe loss
            from ..fastpath import compile_mode, compiled_population_loss

            compiled = compiled_population_loss(compile_mode(cfg.speed, views[members[0]].own_inputs.device))
        results = population_probe(
            [views[i].online for i in members],
            [views[i].build_fresh for i in members],
            cfg.optimizer,
            [views[i].own_inputs for i in members],
            cfg.probe,
            [seeding.probe_seed(views[i].seed, step) for i in members],
            compiled=compiled,
            advance=advance,
        )
        seconds = time.perf_counter() - t0
        share = seconds / len(members)
        for i, result in zip(members, results):
            outputs[i] = probe_output(result)
            write_output(writers[i], step, d, outputs[i], share)
        progress.done(label, seconds, f"{len(members)} members x {d.detail(cfg)}")
    for i, reason in alone.items():
        log.debug(
            "population pause at step %d: member %d (seed %s) probed on its own: %s", step, i, cfgs[i].seed, reason
        )
        with member_rng(global_rng_states, i):
            outputs[i] = _run_one(d, cfgs[i], states[i], writers[i], bases[i], progress)
    return {i: outputs[i] for i in live if i in outputs}


# On a CPU a stack holds at most this many parameters (copies x parameters per copy): past it the
# stack's parameters, gradients and Adam moments leave the caches, and a stacked step is no faster
# than the members' separate ones (``scripts/bench_population_pause.py``: at MLP width 512, 3.0 M
# parameters per member's 10 copies, a stack of 8 members ran 0.97x the separate fits' speed in
# CPU time, stacks of 2 as fast as them or faster). A GPU takes every member in one stack.
CPU_STACK_PARAMS = 2**23


def probe_groups(cfgs: Sequence[Any], views: dict[int, Any], live: list[int]) -> tuple[list[list[int]], dict[int, str]]:
    """The members whose probes stack (stacks of two or more, by ``structure_key``, in member
    order, on a CPU of at most ``CPU_STACK_PARAMS`` parameters) and those probed on their own,
    each with the reason."""
    alone: dict[int, str] = {}
    by_key: dict[Any, list[int]] = {}
    for i in live:
        probe_cfg = cfgs[i].probe
        if not probe_cfg.vectorised:
            alone[i] = "probe.vectorised=false fits the targets one at a time"
            continue
        view = views[i]
        if draws_global_rng(view.online, view.own_inputs):
            alone[i] = "its network draws from the global RNG in train mode (dropout)"
            continue
        key = (structure_key(view.online, fits_cross_entropy(probe_cfg)), view.compiled_probe_fit is not None)
        by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        if len(members) == 1:
            alone[members[0]] = "no other member's network has its structure"
            continue
        view = views[members[0]]
        size = stack_size(view.online, int(cfgs[members[0]].probe.num_targets), view.own_inputs.device)
        for start in range(0, len(members), size):
            stack = members[start : start + size]
            if len(stack) > 1:
                groups.append(stack)
            else:
                alone[stack[0]] = f"a stack of two members would hold more than {CPU_STACK_PARAMS} parameters (CPU)"
    return groups, dict(sorted(alone.items()))


def stack_size(net: nn.Module, num_targets: int, device: torch.device) -> int:
    """How many members one stack of the probe holds: on a CPU as many as ``CPU_STACK_PARAMS``
    parameters allow (at least one), on another device all."""
    if device.type != "cpu":
        return 2**62
    per_member = num_targets * sum(p.numel() for p in net.parameters())
    return max(1, CPU_STACK_PARAMS // max(per_member, 1))


# ------------------------------------------------------------------------------ what can stack


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` if it is a plain Python value (recursively through tuples and lists), else None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = tuple(_plain(v) for v in value)
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    return None


def structure_key(net: nn.Module, cross_entropy: bool = False) -> tuple:
    """What two networks must share to be fitted as one stack through one of them
    (``functional_call`` runs every member's parameters and buffers through member 0's module):
    per module its class, its plain attributes (sizes, rates, flags), the content of any plain
    tensor attribute and its hook counts; every parameter's name, shape, dtype and trainable flag;
    every buffer's name, shape and dtype; and with the cross-entropy fit (``cross_entropy``) the
    content of the categorical head's buffers (its support, which the fit reads outside the stack)."""
    modules = []
    for name, m in net.named_modules():
        attrs, tensors = [], []
        for k, v in sorted(vars(m).items()):
            if k.startswith("_"):
                continue
            if isinstance(v, torch.Tensor):
                tensors.append((k, tuple(v.shape), str(v.dtype), _digest(v)))
            elif _plain(v) is not None or v is None:
                attrs.append((k, _plain(v)))
        hooks = (len(m._forward_hooks), len(m._forward_pre_hooks))
        modules.append((name, f"{type(m).__module__}.{type(m).__qualname__}", tuple(attrs), tuple(tensors), hooks))
    params = tuple((n, tuple(p.shape), str(p.dtype), p.requires_grad) for n, p in net.named_parameters())
    buffers = tuple((n, tuple(b.shape), str(b.dtype)) for n, b in net.named_buffers())
    head = categorical_head(net) if cross_entropy else None
    support = None if head is None else tuple((n, _digest(b)) for n, b in head.named_buffers())
    return tuple(modules), params, buffers, support


def draws_global_rng(net: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether a train-mode forward of (a copy of) ``net`` on two of ``inputs`` draws from the
    global RNG (dropout): such a member's probe copies draw their masks from it, so a stack with
    other members would draw other masks than the member's own run."""
    model = copy.deepcopy(net).train()
    device = inputs.device
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else []):
        before = torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None
        with torch.no_grad():
            model(inputs[:2])
        after = torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None
    return not torch.equal(before[0], after[0]) or (cuda and not torch.equal(before[1], after[1]))


# ------------------------------------------------------------------------------ global RNG per member


def seeding_state() -> dict[str, Any]:
    """The process's global RNG states (``train_state.global_rng_state``)."""
    from ..train_state import global_rng_state

    return global_rng_state()


def restore_seeding_state(state: dict[str, Any]) -> None:
    from ..train_state import set_global_rng_state

    set_global_rng_state(state)


@contextlib.contextmanager
def member_rng(global_rng_states: list[dict[str, Any]] | None, i: int) -> Iterator[None]:
    """Member ``i``'s global RNG state set around the block and read back after it (nothing when
    the population keeps none)."""
    if global_rng_states is None:
        yield
        return
    restore_seeding_state(global_rng_states[i])
    try:
        yield
    finally:
        global_rng_states[i] = seeding_state()
