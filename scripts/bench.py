"""One benchmark harness for the runner: prints a table and, with ``--json``, writes it.

    python scripts/bench.py --quick                       # about a minute on a 2-core CPU
    python scripts/bench.py --device cuda --cuda-graphs   # the fast path on a GPU
    python scripts/bench.py --only train,probe --threads 1 --json out.json

Sub-benchmarks (``--only``, comma-separated; default: all of them, in this order):

* ``peak``: the machine's dense-matmul peak on a big square (``torch.mm``; cpu: 2048^3 fp32, 1024^3
  with ``--quick``; cuda: 8192^3 in fp32, TF32 and bf16).
* ``train``: training steps/s on the classification MDP (digits) for MLP, CNN, ResNet-18 and ViT
  at batch 512 (``trainer.learn_step`` then ``finish_step``, as the loop runs them), the bare
  supervised step of the same network and batch (forward, backward, the run's optimizer), their
  ratio (the *overhead ratio*) and the ratio of their FLOP counts (``torch.utils.flop_counter``:
  the floor the overhead ratio could reach).
* ``probe``: the probe's fit of 10 targets (MLP on digits), vectorised vs one by one
  (``fit_targets_vectorised`` / ``fit_targets_sequential``) at probe batch 128 and 512, scaled to
  a pause of ``probe.steps`` (2000) optimizer steps.
* ``diagnostics``: seconds per pause of each diagnostic, through ``probes.pause.run_diagnostics``.
* ``atari``: vector-env steps/s (env alone, env + replay.add, replay.sample) at 1, 4 and 8 envs;
  agent steps/s (env steps per second of wall time, learning included) of the ``atari_ln`` preset
  at 1, 4 and 8 envs; the CleanRL ``dqn_atari.py`` setting (``CLEANRL_SETTING``: 1 env, batch 32,
  an update every 4 agent steps, Nature CNN, DQN, Adam 1e-4, replay 100k, exploration 0.01); the
  bytes of a 100k-transition replay.

Roofline columns: every row that runs the networks (training steps, the probe's fits, each
diagnostic, the Atari learner step) gets its achieved FLOP/s and its fraction of the matmul peak.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one eager call of the row's
own function (``plasticity_runner.roofline.measure``; GEMMs, convolutions and attention count,
elementwise ops count 0; grouped convolution backward, which it over-counts, recounted). The
peak is ``torch.mm`` at the row's dominant GEMM shape (its largest FLOP carrier, a convolution as
its im2col GEMM) or on the big square, whichever is higher, measured in the same run next to the
row, in the row's precision (fp32; TF32 on cuda when ``speed.tf32`` is on). Goals (cpu, 1 thread):
the probe's vectorised fit >= 70% at MLP-512, the DQN training step >= 50%, curvature and
gradcov >= 30% (``ROOFLINE_GOALS``).

Every measurement calls the project's code (``build_train_state``, ``prefill``, ``learn_step``,
``finish_step``, ``fastpath.configure``, the probe and diagnostics functions, the Atari env and replay). Timings
are ``torch.utils.benchmark.Timer.blocked_autorange`` medians (CUDA synchronised, the process's
thread count, calls per block chosen to fill ``--block-s``) over interleaved repeats (comparisons
alternate their two sides, so load from other jobs hits both); the table shows the spread
(min..max), and ``torch.utils.benchmark.Compare``'s table of every timed block goes to stderr. Peak memory is
``torch.cuda.max_memory_allocated`` per row group on cuda, and the process's peak RSS so far
(``getrusage``, a high-water mark that only grows) on cpu. ``docs/performance.md`` explains each row.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.benchmark as benchmark
from omegaconf import OmegaConf

from plasticity_runner import fastpath, roofline
from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.cli import compose_config
from plasticity_runner.optim import build_optimizer
from plasticity_runner.probes.pause import diagnostics as registered_diagnostics
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill

BENCHES = ("peak", "train", "probe", "diagnostics", "atari")
ARCHS = ("mlp", "cnn", "resnet18", "vit")


# ------------------------------------------------------------------------------ measuring


def sync(device: torch.device) -> None:
    """Wait for the device (the diagnostics rows read the pause's own ``timing/*_s`` values)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Every timing goes through torch.utils.benchmark.Timer: it synchronises CUDA around each block,
# runs with the process's torch thread count (``num_threads``; Timer's default is 1), and
# ``blocked_autorange`` picks the calls per block. Each measurement is kept for ``Compare``'s table.
MEASUREMENTS: list[benchmark.Measurement] = []


def timer(fn: Callable[[], Any], label: str = "bench", sub_label: str = "", description: str = "") -> benchmark.Timer:
    return benchmark.Timer(
        stmt="fn()",
        globals={"fn": fn},
        num_threads=torch.get_num_threads(),
        label=label,
        sub_label=sub_label,
        description=description,
    )


def timed(device: torch.device, fn: Callable[[], Any], n: int = 1) -> float:
    """Seconds for ``n`` calls of ``fn`` (device work included: ``Timer.timeit``)."""
    return timer(fn).timeit(n).mean * n


def per_call(
    fn: Callable[[], Any], block_s: float, label: str = "bench", sub_label: str = "", description: str = ""
) -> float:
    """Seconds per call of ``fn``: the median block of ``Timer.blocked_autorange`` over at least ``block_s``."""
    m = timer(fn, label, sub_label, description).blocked_autorange(min_run_time=block_s)
    MEASUREMENTS.append(m)
    return m.median


def interleaved(
    device: torch.device, fns: dict[str, Callable[[], Any]], block_s: float, repeats: int, label: str = "bench"
) -> dict[str, list[float]]:
    """Seconds per call of each function (``per_call``), ``repeats`` times, the order alternating
    every repeat (load from other jobs hits both sides of a comparison)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(per_call(fns[name], block_s, label, f"repeat {r}", name))
    return out


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-repeat ratios (each repeat measured both sides back to back)."""
    return statistics.median(a / b for a, b in zip(num, den))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def peak_note(device: torch.device) -> str:
    return "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS so far"


# ------------------------------------------------------------------------------ results


class Results:
    """Rows of (bench, row, value, unit), with optional spread, goal, notes and roofline columns
    (``flops`` per call, ``flop_s`` achieved, ``peak_flop_s`` at ``peak_shape``, ``frac_peak``,
    ``roofline_goal`` / ``roofline_goal_met``: see ``Roofline.fields``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        bench: str,
        row: str,
        value: float | None,
        unit: str,
        *,
        spread: list[float] | None = None,
        goal: str = "",
        note: str = "",
        **extra: Any,
    ) -> None:
        entry = {"bench": bench, "row": row, "value": value, "unit": unit, "goal": goal, "note": note, **extra}
        if spread:
            entry["min"], entry["max"], entry["repeats"] = min(spread), max(spread), len(spread)
        self.rows.append(entry)
        print(format_row(entry), flush=True)

    def failed(self, bench: str, what: str, exc: BaseException) -> None:
        """A row that could not be measured: say why and go on."""
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        self.add(
            bench, f"{what} FAILED".strip(), None, "", note=f"{type(exc).__name__}: {first_line}"[:300], failed=True
        )


def guarded(res: Results, bench: str, what: str, device: torch.device, fn: Callable[[], Any]) -> Any:
    """``fn()``, or a FAILED row naming ``what`` when it raises (the harness goes on)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - report the row and go on with the next one
        res.failed(bench, what, exc)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0 or 0.01 <= abs(v) < 1e6:
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v:.3g}"


HEADER = (
    f"{'bench':<12}{'row':<52}{'value':>10}  {'unit':<12}{'min..max':<18}{'goal':<24}"
    f"{'GFLOP/s':>9}{'% peak':>8}  {'peak GFLOP/s @ shape':<28}{'roofline goal':<16}note"
)


def format_row(r: dict[str, Any]) -> str:
    spread = f"{_fmt(r['min'])}..{_fmt(r['max'])}" if "min" in r else ""
    value = _fmt(r["value"])
    flop_s = _fmt(r["flop_s"] / 1e9) if r.get("flop_s") else ""
    frac = f"{100 * r['frac_peak']:.0f}%" if r.get("frac_peak") is not None else ""
    peak = f"{_fmt(r['peak_flop_s'] / 1e9)} @ {r['peak_shape']} {r['peak_precision']}" if r.get("peak_flop_s") else ""
    rgoal = ""
    if r.get("roofline_goal") is not None:
        rgoal = f"≥ {100 * r['roofline_goal']:.0f}%: {'met' if r['roofline_goal_met'] else 'NOT met'}"
    return (
        f"{r['bench']:<12}{r['row']:<52}{value:>10}  {r['unit']:<12}{spread:<18}{r['goal']:<24}"
        f"{flop_s:>9}{frac:>8}  {peak:<28}{rgoal:<16}{r['note']}"
    )


# ------------------------------------------------------------------------------ roofline


# goals of the fraction of the matmul peak (cpu, 1 thread)
ROOFLINE_GOALS = {"train": 0.5, "probe_vectorised": 0.7, "curvature": 0.3, "gradcov": 0.3}


class Roofline:
    """Per-row roofline columns: FLOPs of one call (``roofline.measure``: ``FlopCounterMode``, grouped
    convolution backward recounted), its dominant GEMM shape, and the matmul peak measured in this
    run in the row's precision (fp32; tf32 on cuda when TF32 is on): the larger of the peak at the
    row's dominant shape and the peak on the big square of ``bench_peak``, so that a kernel faster
    than ``mm`` at that shape (oneDNN's direct convolution) cannot read above 100%."""

    def __init__(self, device: torch.device, args: argparse.Namespace) -> None:
        self.device = device
        self.peaks = roofline.Peaks(device, block_s=min(args.block_s, 0.25), repeats=args.repeats)
        self.goals = device.type == "cpu"
        side = 8192 if device.type == "cuda" else (1024 if args.quick else 2048)
        self.square: roofline.Shape = (1, side, side, side)

    def measure(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """FLOPs and GEMM shapes of one call of ``fn`` (one eager call under the counters)."""
        return roofline.measure(fn)

    def fields(
        self, counted: dict[str, Any] | None, seconds: float | None, goal: str | None = None, flops: float | None = None
    ) -> dict[str, Any]:
        """Columns of a row whose one call of ``seconds`` does ``flops`` (default: ``counted``'s)."""
        if counted is None or not seconds:
            return {}
        flops = counted["flops"] if flops is None else flops
        out: dict[str, Any] = {"flops": flops, "flop_s": flops / seconds}
        shape = roofline.dominant_shape(counted["shapes"])
        if shape is None:
            return out
        mode = roofline.row_precision(self.device)
        try:
            # measured again next to each row (on cpu: the machine's speed drifts with other jobs)
            fresh = self.device.type == "cpu"
            at_shape, square = self.peaks.rate(shape, mode, fresh), self.peaks.rate(self.square, mode, fresh)
        except Exception as exc:  # noqa: BLE001 - a peak that cannot be measured leaves the row without it
            out["peak_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return out
        peak, used = (at_shape, shape) if at_shape >= square else (square, self.square)
        out.update(
            peak_flop_s=peak,
            peak_shape=roofline.shape_str(used),
            peak_precision=mode,
            frac_peak=out["flop_s"] / peak,
            dominant_shape=roofline.shape_str(shape),
            peak_at_dominant_shape_flop_s=at_shape,
            frac_peak_at_dominant_shape=out["flop_s"] / at_shape,
        )
        if goal is not None and self.goals:
            out.update(roofline_goal=ROOFLINE_GOALS[goal], roofline_goal_met=out["frac_peak"] >= ROOFLINE_GOALS[goal])
        return out


def bench_peak(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    """The machine's dense-matmul peak on a big square (cpu: 2048^3 fp32; cuda: 8192^3 in fp32, TF32
    and bf16). The rows' own shapes are measured when each row is (``peak_*`` columns)."""
    side = rl.square[1]
    modes = roofline.PRECISIONS if device.type == "cuda" else ("fp32",)
    for mode in modes:
        shape = rl.square

        def one(mode: str = mode, shape: roofline.Shape = shape) -> None:
            rl.peaks.rate(shape, mode, fresh=True)
            rates = rl.peaks.measured[(shape, mode)][-1]
            res.add(
                "peak",
                f"matmul peak {side}^3 {mode}",
                statistics.median(rates) / 1e9,
                "GFLOP/s",
                spread=[r / 1e9 for r in rates],
                note=f"torch.mm, {torch.get_num_threads()} threads" if device.type == "cpu" else "torch.mm",
                precision=mode,
                shape=roofline.shape_str(shape),
            )

        guarded(res, "peak", f"matmul peak {side}^3 {mode}", device, one)


# ------------------------------------------------------------------------------ train


def speed_overrides(args: argparse.Namespace) -> list[str]:
    return [f"speed.compile={str(args.compile).lower()}", f"speed.cuda_graphs={str(args.cuda_graphs).lower()}"]


def compile_mode(args: argparse.Namespace, device: torch.device) -> str | None:
    """The torch.compile mode ``fastpath.configure`` picks for the agent's and the probe's loss (None: eager)."""
    return fastpath.compile_mode(argparse.Namespace(compile=args.compile, cuda_graphs=args.cuda_graphs), device)


def supervised_step(
    state: Any, cfg: Any, device: torch.device, mode: str | None, notes: dict[str, str] | None = None
) -> Callable[[], None]:
    """A bare supervised step of a copy of the online network on one replay batch of the run's
    size: forward (train mode, the head's squared error to fixed targets), backward, the run's
    optimizer. Compiled like the agent's loss when the fast path is on."""
    net = copy.deepcopy(state.agent.online).train()
    optimizer = build_optimizer(cfg.optimizer, [p for p in net.parameters() if p.requires_grad])
    batch = state.replay.sample(int(cfg.agent.batch_size), torch.Generator(device).manual_seed(123))
    target = batch.r_t.clone()

    def loss() -> torch.Tensor:
        return net.td_loss(batch.o_tm1, batch.a_tm1, target).mean()

    if mode is not None:
        compiled = torch.compile(loss, mode=mode, dynamic=False)
        loss = fastpath.CompiledOrEager(loss, compiled, "supervised", notes if notes is not None else {})

    def step() -> None:
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


def bench_train(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    archs = args.archs
    if args.quick and device.type == "cpu" and "resnet18" in archs and not args.archs_given:
        archs = [a for a in archs if a != "resnet18"]
        res.add("train", "resnet18", None, "", note="skipped in --quick on cpu (seconds per step); pass --archs")
    for arch in archs:
        guarded(res, "train", arch, device, lambda arch=arch: train_arch(args, device, res, rl, arch))


def train_arch(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline, arch: str) -> None:
    cfg = compose_config(
        [
            f"device={device.type}",
            f"architecture={arch}",
            f"env.dataset={args.dataset}",
            "agent.batch_size=512",
            *speed_overrides(args),
            *args.set,
        ]
    )
    reset_peak(device)
    state = build_train_state(cfg, device)
    prefill(state, int(cfg.agent.learning_starts))

    def dqn() -> None:
        learn_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))
        finish_step(state, cfg.agent)

    mode = compile_mode(args, device)
    sup = supervised_step(state, cfg, device, None)
    counted_dqn, counted_sup = rl.measure(dqn), rl.measure(sup)  # eager; doubles as the first warm-up
    flops_dqn, flops_sup = counted_dqn["flops"], counted_sup["flops"]
    notes = fastpath.configure(cfg.speed, state.agent, device)
    sup_notes: dict[str, str] = {}
    if mode is not None:
        sup = supervised_step(state, cfg, device, mode, sup_notes)
    for _ in range(args.warmup if mode is None else max(args.warmup, 5)):  # graph trees record on call 3
        dqn(), sup()
    t = interleaved(device, {"dqn": dqn, "sup": sup}, args.block_s, args.repeats, label=f"train {arch}")
    fast = ", ".join(f"{k}: {v}" for k, v in notes.items() if k != "tf32") or "eager"
    b = int(cfg.agent.batch_size)
    goal_rate = "≥ 5000 (H100, graphs)" if arch == "mlp" and device.type == "cuda" else ""
    res.add(
        "train",
        f"{arch} DQN training steps/s (batch {b})",
        1 / statistics.median(t["dqn"]),
        "steps/s",
        spread=[1 / x for x in t["dqn"]],
        goal=goal_rate,
        note=fast,
        arch=arch,
        fast_path=notes,
        **rl.fields(counted_dqn, statistics.median(t["dqn"]), "train"),
    )
    sup_note = "eager" if mode is None else sup_notes.get("supervised", f"torch.compile(mode={mode})")
    res.add(
        "train",
        f"{arch} supervised steps/s (batch {b})",
        1 / statistics.median(t["sup"]),
        "steps/s",
        spread=[1 / x for x in t["sup"]],
        note=sup_note,
        arch=arch,
        **rl.fields(counted_sup, statistics.median(t["sup"])),
    )
    ratios = [a / s for a, s in zip(t["dqn"], t["sup"])]
    goal = "≤ 2.0 (cpu)" if arch == "mlp" and device.type == "cpu" else ""
    res.add(
        "train",
        f"{arch} overhead ratio (DQN step / supervised)",
        median_ratio(t["dqn"], t["sup"]),
        "x",
        spread=ratios,
        goal=goal,
        arch=arch,
    )
    res.add(
        "train",
        f"{arch} FLOP ratio (DQN step / supervised)",
        flops_dqn / max(flops_sup, 1),
        "x",
        note=f"{flops_dqn / 1e9:.3g} / {flops_sup / 1e9:.3g} GFLOP",
        arch=arch,
    )
    res.add("train", f"{arch} peak memory", peak_mb(device), "MiB", note=peak_note(device), arch=arch)


# ------------------------------------------------------------------------------ probe


def bench_probe(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    from plasticity_runner.probes.plasticity import make_targets

    cfg = compose_config(
        [f"device={device.type}", "architecture=mlp", f"env.dataset={args.dataset}", *speed_overrides(args), *args.set]
    )
    state = build_train_state(cfg, device)
    prefill(state, int(cfg.agent.learning_starts))
    inputs = state.replay.sample_obs(int(cfg.probe.num_inputs), torch.Generator(device).manual_seed(0))
    T, net = int(cfg.probe.num_targets), state.agent.online
    targets = make_targets(state.build_fresh, inputs, list(range(T)), 0.0, cfg.probe.sin_scale)
    notes: dict[str, str] = {}
    compiled = fastpath.compiled_probe_fit(cfg.speed, cfg.probe, device, notes)
    for batch_size in args.probe_batches:
        guarded(
            res,
            "probe",
            f"probe batch {batch_size}",
            device,
            lambda b=batch_size: probe_batch(args, device, res, rl, cfg, net, inputs, targets, compiled, notes, b),
        )


def probe_batch(
    args: argparse.Namespace,
    device: torch.device,
    res: Results,
    rl: Roofline,
    cfg: Any,
    net: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    compiled: Any,
    notes: dict[str, str],
    batch_size: int,
) -> None:
    from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised

    T, pause_steps = int(targets.shape[0]), int(cfg.probe.steps)
    steps, every = args.probe_steps, int(cfg.probe.curve_every_steps)
    reset_peak(device)

    def fit(fn: Callable, n: int, eager: bool = False) -> Callable[[], Any]:
        # --compile / --cuda-graphs: the vectorised side runs the run's compiled loss
        use = compiled is not None and fn is fit_targets_vectorised and not eager
        extra = {"compiled": compiled} if use else {}
        return lambda: fn(net, cfg.optimizer, inputs, targets, n, batch_size, 0, every, **extra)

    vec, seq = fit(fit_targets_vectorised, steps), fit(fit_targets_sequential, steps)
    fit(fit_targets_vectorised, 1)(), fit(fit_targets_sequential, 1)()  # warm-up (torch.func set-up, compile)
    # FLOPs of a pause: the fixed part plus pause_steps x one step (eager counts: a compiled loss
    # runs the same GEMMs)
    counted = {}
    for key, fn in (("vec", fit_targets_vectorised), ("seq", fit_targets_sequential)):
        c0, c2 = rl.measure(fit(fn, 0, eager=True)), rl.measure(fit(fn, 2, eager=True))
        per_step = (c2["flops"] - c0["flops"]) / 2
        shapes = {k: v - c0["shapes"].get(k, 0) for k, v in c2["shapes"].items()}
        counted[key] = {"flops": c0["flops"] + per_step * pause_steps, "shapes": shapes, "per_step": per_step}
    # the part that does not scale with the steps: copies, the loss on all of X before and after
    fixed = {
        "vec": timed(device, fit(fit_targets_vectorised, 0)),
        "seq": timed(device, fit(fit_targets_sequential, 0)),
    }
    t = interleaved(device, {"vec": vec, "seq": seq}, args.block_s, args.repeats, label=f"probe batch {batch_size}")
    pause = {k: [fixed[k] + max(x - fixed[k], 0.0) * pause_steps / steps for x in v] for k, v in t.items()}
    what = f"MLP, {T} targets, probe batch {batch_size}"
    how = f", {notes['probe']}" if compiled else ""
    note = f"{steps} steps timed, scaled to {pause_steps}"
    width = cfg.architecture.get("width", None)
    goal = "probe_vectorised" if width == 512 else None
    res.add(
        "probe",
        f"vectorised fit s/pause ({what}{how})",
        statistics.median(pause["vec"]),
        "s",
        spread=pause["vec"],
        note=f"{note}; fixed part {fixed['vec']:.2f} s; {counted['vec']['per_step'] / 1e9:.3g} GFLOP/step",
        batch_size=batch_size,
        **rl.fields(counted["vec"], statistics.median(pause["vec"]), goal),
    )
    res.add(
        "probe",
        f"one-by-one fit s/pause ({what})",
        statistics.median(pause["seq"]),
        "s",
        spread=pause["seq"],
        note=f"{note}; fixed part {fixed['seq']:.2f} s; {counted['seq']['per_step'] / 1e9:.3g} GFLOP/step",
        batch_size=batch_size,
        **rl.fields(counted["seq"], statistics.median(pause["seq"])),
    )
    goal_x = "≥ 8x (gpu)" if device.type == "cuda" else "≥ 1.5x (2-core cpu)"
    res.add(
        "probe",
        f"vectorised speed-up (probe batch {batch_size})",
        median_ratio(pause["seq"], pause["vec"]),
        "x",
        spread=[s / v for s, v in zip(pause["seq"], pause["vec"])],
        goal=goal_x,
        batch_size=batch_size,
    )
    res.add("probe", f"peak memory (probe batch {batch_size})", peak_mb(device), "MiB", note=peak_note(device))


# ------------------------------------------------------------------------------ diagnostics


class CaptureWriter:
    """Stands in for ``MetricsWriter``: keeps the scalars ``probes.pause.run_diagnostics`` records."""

    def __init__(self) -> None:
        self.scalars: dict[tuple[str, str], float] = {}

    def add(self, step: int, phase: str, metric: str, value: float) -> None:
        self.scalars[(phase, metric)] = float(value)

    def add_many(self, step: int, phase: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.add(step, phase, k, v)

    def add_array(self, name: str, array: Any) -> None:
        pass


def diagnostics_overrides(quick: bool) -> list[str]:
    if not quick:
        return []
    return [
        "diagnostics.statistics.num_inputs=256",
        "diagnostics.curvature.num_inputs=64",
        "diagnostics.curvature.iterations=10",
        "diagnostics.curvature.num_vectors=1",
        "diagnostics.gradcov.k=64",
    ]


# the registered diagnostics but the probe, which is timed on its own (``bench_probe``)
DIAGNOSTICS = tuple(d.name for d in registered_diagnostics() if d.name != "probe")


def only_diagnostic(cfg: Any, name: str | None) -> Any:
    """A copy of ``cfg`` with every diagnostic but ``name`` switched off (the probe too; None: all
    but the probe on)."""
    out = copy.deepcopy(cfg)
    for d in registered_diagnostics():
        OmegaConf.update(out, f"{d.config_key()}.enabled", d.name == name or (name is None and d.name != "probe"))
    return out


def bench_diagnostics(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    archs = args.archs
    if args.quick and not args.archs_given:
        archs = ["mlp"]
        res.add("diagnostics", "cnn, resnet18, vit", None, "", note="skipped in --quick; pass --archs")
    warm = [True]
    for arch in archs:
        guarded(res, "diagnostics", arch, device, lambda arch=arch: diagnostics_arch(args, device, res, rl, arch, warm))


def warm_up_diagnostics(cfg: Any, state: Any) -> None:
    """The first torch.func call of a process pays a one-off set-up cost: pay it on tiny sizes."""
    from plasticity_runner.probes.pause import run_diagnostics

    small = only_diagnostic(cfg, None)
    for key, value in (
        ("statistics.num_inputs", 8),
        ("curvature.num_inputs", 8),
        ("curvature.iterations", 2),
        ("gradcov.k", 8),
    ):
        OmegaConf.update(small, f"diagnostics.{key}", value)
    run_diagnostics(small, state, CaptureWriter())


def diagnostics_arch(
    args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline, arch: str, warm: list[bool]
) -> None:
    from plasticity_runner.probes.pause import run_diagnostics

    sizes = diagnostics_overrides(args.diagnostics_sizes == "small")
    cfg = compose_config(
        [
            f"device={device.type}",
            f"architecture={arch}",
            f"env.dataset={args.dataset}",
            "total_steps=0",
            *sizes,
            *args.set,
        ]
    )
    state = build_train_state(cfg, device)
    prefill(state, int(cfg.agent.learning_starts))
    if warm[0]:
        warm_up_diagnostics(cfg, state)
        warm[0] = False
    reset_peak(device)
    runs = []
    every = only_diagnostic(cfg, None)  # the probe is timed on its own
    for _ in range(1 if args.quick else max(1, args.repeats // 2)):
        writer = CaptureWriter()
        sync(device)
        run_diagnostics(every, state, writer)
        sync(device)
        runs.append(writer.scalars)
    d = cfg.diagnostics
    what = {
        "statistics": f"{d.statistics.num_inputs} inputs",
        "curvature": f"{d.curvature.num_inputs} inputs x {d.curvature.iterations} it x {d.curvature.num_vectors} vec",
        "gradcov": f"k={d.gradcov.k}, budget {d.gradcov.max_memory_mb:g} MiB",
        "dynamics": f"{d.dynamics.num_inputs} transitions, {d.dynamics.reference_inputs} reference inputs",
    }
    for name in DIAGNOSTICS:
        size = what.get(name, "")
        values = [r[("timing", f"{name}_s")] for r in runs]
        # FLOPs: one more run of this diagnostic alone, under the counters (not timed)
        counted = rl.measure(lambda: run_diagnostics(only_diagnostic(cfg, name), state, CaptureWriter()))
        res.add(
            "diagnostics",
            f"{arch} {name} s/pause",
            statistics.median(values),
            "s",
            spread=values,
            note=size,
            arch=arch,
            **rl.fields(counted, statistics.median(values), name if name in ROOFLINE_GOALS else None),
        )
    res.add("diagnostics", f"{arch} peak memory", peak_mb(device), "MiB", note=peak_note(device), arch=arch)


# ------------------------------------------------------------------------------ atari


def _actions(env: Any, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(env.num_actions, (env.num_envs,), device=env.device, generator=generator)


def atari_env_rate(env: Any, steps: int) -> float:
    """Seconds for ``steps`` vector steps of the env alone (random actions drawn on the device)."""
    g = torch.Generator(env.device).manual_seed(0)
    for _ in range(20):
        env.step(_actions(env, g))
    return timed(env.device, lambda: env.step(_actions(env, g)), steps)


def atari_env_replay_rate(env: Any, steps: int) -> float:
    """Seconds for ``steps`` vector steps, each record added to a 100k replay."""
    g = torch.Generator(env.device).manual_seed(0)
    replay = env.make_replay(100_000)
    for _ in range(20):
        replay.add(env.step(_actions(env, g)).record)
    return timed(env.device, lambda: replay.add(env.step(_actions(env, g)).record), steps)


def atari_sample_rate(env: Any, steps: int, fill: int | None = None) -> float:
    """Seconds for ``steps`` minibatches of 32 from a 100k replay holding ``fill`` transitions (all
    when None). Sampling draws over every slot's weight, so its cost does not depend on the fill."""
    g = torch.Generator(env.device).manual_seed(0)
    replay = env.make_replay(100_000)
    rec = env.step(_actions(env, g)).record
    tick = -(10**12)  # private ticks (real ones are positive): each add continues the previous one
    for _ in range(replay.ring if fill is None else min(fill, replay.ring)):
        replay.add({**rec, "tick_tm1": torch.tensor(tick), "tick_t": torch.tensor(tick + 1)})
        tick += 1
    for _ in range(5):
        replay.sample(32, g)
    return timed(env.device, lambda: replay.sample(32, g), steps)


# CleanRL's dqn_atari.py: one env, batch 32, an update every 4 env steps, the Nature CNN without layer
# norm, DQN's max target, Adam (lr 1e-4, eps 1e-8), a target copy every 1000 env steps, and the
# exploration it has after its decay (0.01: every step runs the network to act). Replay 100k.
CLEANRL_SETTING = [
    "intervention=[none]",
    "agent=dqn",
    "optimizer=adam",
    "optimizer.lr=1e-4",
    "optimizer.eps=1e-8",
    "env.num_envs=1",
    "agent.update_every_env_steps=4",
    "agent.batch_size=32",
    "agent.replay_capacity=100000",
    "agent.target_update_steps=250",
    "agent.epsilon_start=0.01",
    "agent.epsilon_end=0.01",
]


def atari_agent(
    args: argparse.Namespace, device: torch.device, overrides: list[str], rl: Roofline
) -> tuple[list[float], tuple[int, int], Any, dict, dict]:
    """Env steps/s of the training step (``learn_step`` then ``finish_step``: act, env step, store,
    sample, learn, hooks, target bookkeeping), and the roofline columns of one training step (FLOPs
    counted on an eager call, before the fast path)."""
    cfg = compose_config(
        [
            "experiment=atari_ln",
            f"env.game={args.game}",
            f"device={device.type}",
            "progress=none",
            f"agent.learning_starts={args.atari_prefill}",
            *overrides,
            *speed_overrides(args),
        ]
    )
    state = build_train_state(cfg, device)
    prefill(state, int(cfg.agent.learning_starts))

    def step() -> None:
        learn_step(state, cfg.agent, epsilon_at(state.step, cfg.agent, state.clock))  # the preset's decay counts frames
        finish_step(state, cfg.agent)

    counted = rl.measure(step)
    notes = fastpath.configure(cfg.speed, state.agent, device)

    for _ in range(args.warmup if compile_mode(args, device) is None else max(args.warmup, 5)):
        step()
    per_step = [per_call(step, args.block_s, "atari agent step") for _ in range(args.repeats)]
    env_steps = int(cfg.agent.update_every_env_steps) * int(cfg.env.num_envs)  # transitions per training step
    rates = [env_steps / t for t in per_step]
    replay = state.replay
    replay_bytes = (replay.nbytes(), replay._valid_host.nbytes + replay.slot_tick.nbytes)  # device, host mirrors
    roof = rl.fields(counted, statistics.median(per_step))
    # the learner step alone: agent.learn on one replay batch (TD loss with the target forward,
    # backward, optimizer), without acting, the emulator and the replay
    batch = replay.sample(int(cfg.agent.batch_size), torch.Generator(device).manual_seed(1))
    step_no = [state.step]

    def learn() -> None:
        step_no[0] += 1
        state.agent.learn(batch, step_no[0], run_hooks=False)

    learn_counted = rl.measure(learn)
    for _ in range(args.warmup):
        learn()
    per_learn = [per_call(learn, args.block_s, "atari learner step") for _ in range(args.repeats)]
    roof["learner"] = {"per_s": [1 / t for t in per_learn], **rl.fields(learn_counted, statistics.median(per_learn))}
    state.env.close()
    return rates, replay_bytes, cfg, notes, roof


def bench_atari(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    from plasticity_runner.envs.atari import AtariEnvConfig, AtariVectorEnv

    steps = args.atari_steps
    for n in args.envs:
        guarded(res, "atari", f"env, {n} envs", device, lambda n=n: atari_env_rows(args, device, res, n, steps))

    def sample_row() -> None:
        env = AtariVectorEnv(AtariEnvConfig(game=args.game, num_envs=1), device, seed=0)
        env.reset()
        fill = 2_000 if args.quick else None
        rates = [steps / atari_sample_rate(env, steps, fill) for _ in range(1)]
        env.close()
        res.add(
            "atari",
            "replay.sample, batch 32, capacity 100k",
            statistics.median(rates),
            "batches/s",
            note=f"{'2k' if fill else '100k'} stored",
        )

    guarded(res, "atari", "replay.sample", device, sample_row)

    for n in args.envs:

        def ln_row(n: int = n) -> None:
            reset_peak(device)
            rates, _, cfg, notes, roof = atari_agent(args, device, [f"env.num_envs={n}"], rl)
            learner = roof.pop("learner")
            res.add(
                "atari",
                f"agent steps/s, atari_ln preset, {n} env{'s' if n > 1 else ''}",
                statistics.median(rates),
                "env steps/s",
                spread=rates,
                note=f"LN Nature CNN, Double DQN, batch {cfg.agent.batch_size}, update every "
                f"{cfg.agent.update_every_env_steps} vector steps; FLOP/s of a training step",
                num_envs=n,
                fast_path=notes,
                **roof,
            )
            add_learner_row(
                res,
                f"learner steps/s, atari_ln preset, {n} env{'s' if n > 1 else ''}",
                learner,
                f"agent.learn alone: LN Nature CNN, Double DQN, batch {cfg.agent.batch_size}, RMSProp",
            )

        guarded(res, "atari", f"agent, atari_ln, {n} envs", device, ln_row)
    guarded(res, "atari", "agent, CleanRL setting", device, lambda: atari_cleanrl_rows(args, device, res, rl))


def add_learner_row(res: Results, row: str, learner: dict[str, Any], note: str) -> None:
    rates = learner.pop("per_s")
    res.add("atari", row, statistics.median(rates), "updates/s", spread=rates, note=note, **learner)


def atari_env_rows(args: argparse.Namespace, device: torch.device, res: Results, n: int, steps: int) -> None:
    from plasticity_runner.envs.atari import AtariEnvConfig, AtariVectorEnv

    cfg = AtariEnvConfig(game=args.game, num_envs=n)
    rows = (
        ("env", atari_env_rate, "env steps/s"),
        ("env + replay.add", atari_env_replay_rate, "env steps/s"),
    )
    env = AtariVectorEnv(cfg, device, seed=0)
    env.reset()
    for name, fn, unit in rows:
        rates = [steps * n / fn(env, steps) for _ in range(max(1, args.repeats // 2))]
        res.add(
            "atari",
            f"{name}, {n} env{'s' if n > 1 else ''}",
            statistics.median(rates),
            unit,
            spread=rates,
            note=f"{statistics.median(rates) * cfg.frame_skip:.0f} frames/s",
            num_envs=n,
        )
    env.close()


def atari_cleanrl_rows(args: argparse.Namespace, device: torch.device, res: Results, rl: Roofline) -> None:
    from plasticity_runner.envs.atari_replay import AtariReplay

    reset_peak(device)
    rates, replay_bytes, cfg, notes, roof = atari_agent(args, device, CLEANRL_SETTING, rl)
    learner = roof.pop("learner")
    res.add(
        "atari",
        "agent steps/s, CleanRL dqn_atari setting",
        statistics.median(rates),
        "env steps/s",
        spread=rates,
        goal="≥ 2x CleanRL (outside)",
        note="1 env, batch 32, update every 4, Nature CNN, replay 100k, DQN, Adam 1e-4, eps-greedy 0.01; "
        "FLOP/s of a training step (the Atari learner step)",
        num_envs=1,
        fast_path=notes,
        **roof,
    )
    add_learner_row(
        res,
        "learner steps/s, CleanRL dqn_atari setting",
        learner,
        "agent.learn alone: Nature CNN, DQN, batch 32, Adam (the Atari learner step)",
    )
    res.add("atari", "peak memory (CleanRL setting)", peak_mb(device), "MiB", note=peak_note(device))
    dev_bytes, host = replay_bytes
    assert dev_bytes == AtariReplay.memory_bytes(int(cfg.agent.replay_capacity), 1)
    res.add(
        "atari",
        "replay bytes, 100k transitions",
        (dev_bytes + host) / 1e9,
        "GB",
        goal="≤ 1 GB",
        note=f"{dev_bytes / 1e9:.3f} GB on {device.type} + {host / 1e6:.1f} MB host mirrors",
    )


# ------------------------------------------------------------------------------ main


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _items(values: list[str] | None, default: Any) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; the default when not given."""
    if not values:
        return list(default)
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present, else cpu")
    p.add_argument("--quick", action="store_true", help="small sizes: about a minute on a 2-core CPU")
    p.add_argument("--only", nargs="+", default=None, help=f"subset of {','.join(BENCHES)} (commas or spaces)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows and the run's context here")
    p.add_argument("--compile", action="store_true", help="speed.compile=true: torch.compile the TD loss")
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="speed.cuda_graphs=true: compile with CUDA graphs (falls back on cpu; the table says so)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads; default 1 on cpu (see docs/performance.md), torch's own on cuda; 0: torch's",
    )
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats per measurement (default 5, quick 3)")
    p.add_argument("--block-s", type=float, default=None, help="seconds per timed block (default 1.0, quick 0.25)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 3, quick 1)")
    p.add_argument("--archs", nargs="+", default=None, help=f"subset of {','.join(ARCHS)} (train, diagnostics)")
    p.add_argument("--dataset", default="digits", help="classification data set (digits needs no files)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the classification runs (train, probe, diagnostics); repeatable, "
        "e.g. --set architecture.width=64 (the rows keep their names: read the note)",
    )
    p.add_argument("--probe-steps", type=int, default=None, help="probe optimizer steps timed (default 200, quick 20)")
    p.add_argument(
        "--probe-batches", nargs="+", default=None, help="probe minibatch sizes (default 128,512; quick 128)"
    )
    p.add_argument(
        "--diagnostics-sizes",
        choices=["config", "small"],
        default=None,
        help="config: the diagnostics block of configs/config.yaml; small: the --quick sizes "
        "(statistics 256 inputs, curvature 64 inputs x 10 x 1, gradcov k=64). "
        "Default: config, quick: small",
    )
    p.add_argument("--game", default="pong")
    p.add_argument("--envs", nargs="+", default=None, help="Atari num_envs of the per-env rows (default 1,4,8)")
    p.add_argument("--atari-steps", type=int, default=None, help="vector steps per env-row measurement")
    p.add_argument("--atari-prefill", type=int, default=None, help="random transitions before timing the agent")
    args = p.parse_args(argv)
    args.only = _items(args.only, BENCHES)
    unknown = sorted(set(args.only) - set(BENCHES))
    if unknown:
        p.error(f"--only: unknown sub-benchmark(s) {unknown}; choose from {','.join(BENCHES)}")
    args.archs_given = args.archs is not None
    args.diagnostics_sizes = args.diagnostics_sizes or ("small" if args.quick else "config")
    args.archs = _items(args.archs, ARCHS)
    args.probe_batches = [int(b) for b in _items(args.probe_batches, ["128"] if args.quick else ["128", "512"])]
    args.envs = [int(n) for n in _items(args.envs, ["1", "4", "8"])]
    q = args.quick
    args.repeats = args.repeats or (3 if q else 5)
    args.block_s = args.block_s or (0.25 if q else 1.0)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    args.probe_steps = args.probe_steps or (10 if q else 100)
    args.atari_steps = args.atari_steps or (100 if q else 1000)
    args.atari_prefill = args.atari_prefill or (200 if q else 2000)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        # on a shared CPU, torch's OpenMP threads spin-wait against other jobs: every number comes
        # out several times slower and noisy (docs/performance.md); one thread measures the code
        torch.set_num_threads(threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    load0 = os.getloadavg()
    meta = {
        "device": device.type,
        "machine": machine(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "compile": args.compile,
        "cuda_graphs": args.cuda_graphs,
        "repeats": args.repeats,
        "load_avg_start": load0,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv[1:] if argv is None else argv,
        "overrides": args.set,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(
        f"{meta['machine']} | torch {meta['torch']} | {meta['torch_threads']} threads, {meta['cpu_count']} cpus | "
        f"device {device.type} | compile={args.compile} cuda_graphs={args.cuda_graphs} | medians of "
        f"{args.repeats} | load avg {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )
    if args.set:
        print(f"config overrides of the classification runs: {' '.join(args.set)}")
    if (
        device.type == "cpu"
        and torch.get_num_threads() > 1
        and load0[0] >= (os.cpu_count() or 1) - 0.5
        and os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive"
    ):
        print(
            "warning: several torch threads on a loaded CPU: OpenMP threads spin against other jobs and the "
            "numbers come out several times slower; use --threads 1 or OMP_WAIT_POLICY=PASSIVE (docs/performance.md)"
        )
    print(HEADER)
    print("-" * len(HEADER))
    res = Results()
    rl = Roofline(device, args)
    t0 = time.perf_counter()
    runners = {
        "peak": bench_peak,
        "train": bench_train,
        "probe": bench_probe,
        "diagnostics": bench_diagnostics,
        "atari": bench_atari,
    }
    seconds = {}
    for name in BENCHES:
        if name not in args.only:
            continue
        t = time.perf_counter()
        guarded(res, name, "", device, lambda name=name: runners[name](args, device, res, rl))
        seconds[name] = time.perf_counter() - t
    load1 = os.getloadavg()
    meta.update(load_avg_end=load1, seconds=seconds, total_s=time.perf_counter() - t0)
    meta["matmul_peaks"] = [
        {"shape": roofline.shape_str(shape), "precision": mode, "flop_s": statistics.median(rates), "blocks": rates}
        for (shape, mode), runs in rl.peaks.measured.items()
        for rates in runs
    ]
    meta["roofline_goals"] = ROOFLINE_GOALS
    meta["flop_counting"] = (
        "torch.utils.flop_counter.FlopCounterMode (GEMMs, convolutions, attention; "
        "elementwise ops count 0), one eager call per row"
    )
    print(
        f"done in {meta['total_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
        f"load avg {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"
    )
    if MEASUREMENTS:  # torch.utils.benchmark's own table of every timed block (stderr: stdout is the rows)
        print(benchmark.Compare(MEASUREMENTS), file=sys.stderr)
    out = {"meta": meta, "rows": res.rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
