"""One benchmark harness for the runner: prints a table and, with ``--json``, writes it.

    python scripts/bench.py --quick                       # about a minute on a 2-core CPU
    python scripts/bench.py --device cuda --cuda-graphs   # the fast path on a GPU
    python scripts/bench.py --only train,probe --threads 1 --json out.json

Sub-benchmarks (``--only``, comma-separated; default: all of them, in this order):

* ``train``: training steps/s on the classification MDP (digits) for MLP, CNN, ResNet-18 and ViT
  at batch 512 (``trainer.train_step``), the bare supervised step of the same network and batch
  (forward, backward, the run's optimizer), their ratio (the *overhead ratio*) and the ratio of
  their FLOP counts (``torch.utils.flop_counter``: the floor the overhead ratio could reach).
* ``probe``: the probe's fit of 10 targets (MLP on digits), vectorised vs one by one
  (``fit_targets_vectorised`` / ``fit_targets_sequential``) at probe batch 128 and 512, scaled to
  a pause of ``probe.steps`` (2000) optimizer steps.
* ``diagnostics``: seconds per pause of each diagnostic, through ``run_diagnostics``.
* ``atari``: vector-env steps/s (env alone, env + replay.add, replay.sample) at 1, 4 and 8 envs;
  agent steps/s (env steps per second of wall time, learning included) of the ``atari_ln`` preset
  at 1, 4 and 8 envs; the CleanRL ``dqn_atari.py`` setting (``CLEANRL_SETTING``: 1 env, batch 32,
  an update every 4 agent steps, Nature CNN, DQN, Adam 1e-4, replay 100k, exploration 0.01); the
  bytes of a 100k-transition replay.

Every measurement calls the project's code (``build_run``, ``prefill``, ``train_step``,
``fastpath.configure``, the probe and diagnostics functions, the Atari env and replay). Timings
are medians over interleaved repeats (comparisons alternate their two sides, so load from other
jobs hits both); the table shows the spread (min..max). Peak memory is
``torch.cuda.max_memory_allocated`` per row group on cuda, and the process's peak RSS so far
(``getrusage``, a high-water mark that only grows) on cpu. ``the README (section on speed)`` explains each row.
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
from omegaconf import OmegaConf

from plasticity_runner import fastpath
from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.cli import compose_config
from plasticity_runner.optim import build_optimizer
from plasticity_runner.trainer import build_run, prefill, train_step

BENCHES = ("train", "probe", "diagnostics", "atari")
ARCHS = ("mlp", "cnn", "resnet18", "vit")


# ------------------------------------------------------------------------------ measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any], n: int = 1) -> float:
    """Seconds for ``n`` calls of ``fn`` (device work included)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - t0


def calls_per_block(device: torch.device, fn: Callable[[], Any], target_s: float, cap: int = 10_000) -> int:
    """How many calls of ``fn`` fill about ``target_s`` seconds (from one timed call)."""
    return max(1, min(cap, int(target_s / max(timed(device, fn), 1e-6))))


def interleaved(
    device: torch.device, fns: dict[str, Callable[[], Any]], n: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` times, the order alternating every repeat."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(timed(device, fns[name], n) / n)
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
    """Rows of (bench, row, value, unit), with optional spread, goal and notes."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, bench: str, row: str, value: float | None, unit: str, *, spread: list[float] | None = None,
            goal: str = "", note: str = "", **extra: Any) -> None:
        entry = {"bench": bench, "row": row, "value": value, "unit": unit, "goal": goal, "note": note, **extra}
        if spread:
            entry["min"], entry["max"], entry["repeats"] = min(spread), max(spread), len(spread)
        self.rows.append(entry)
        print(format_row(entry), flush=True)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0 or 0.01 <= abs(v) < 1e6:
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v:.3g}"


HEADER = f"{'bench':<12}{'row':<52}{'value':>10}  {'unit':<12}{'min..max':<18}{'goal':<24}note"


def format_row(r: dict[str, Any]) -> str:
    spread = f"{_fmt(r['min'])}..{_fmt(r['max'])}" if "min" in r else ""
    value = _fmt(r["value"])
    return f"{r['bench']:<12}{r['row']:<52}{value:>10}  {r['unit']:<12}{spread:<18}{r['goal']:<24}{r['note']}"


# ------------------------------------------------------------------------------ train


def speed_overrides(args: argparse.Namespace) -> list[str]:
    return [f"speed.compile={str(args.compile).lower()}", f"speed.cuda_graphs={str(args.cuda_graphs).lower()}"]


def compile_mode(args: argparse.Namespace, device: torch.device) -> str | None:
    """The torch.compile mode ``fastpath.configure`` picks for the agent's and the probe's loss (None: eager)."""
    return fastpath.compile_mode(argparse.Namespace(compile=args.compile, cuda_graphs=args.cuda_graphs), device)


def flop_count(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def supervised_step(state: Any, cfg: Any, device: torch.device, mode: str | None,
                    notes: dict[str, str] | None = None) -> Callable[[], None]:
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


def bench_train(args: argparse.Namespace, device: torch.device, res: Results) -> None:
    archs = args.archs
    if args.quick and device.type == "cpu" and "resnet18" in archs and not args.archs_given:
        archs = [a for a in archs if a != "resnet18"]
        res.add("train", "resnet18", None, "", note="skipped in --quick on cpu (seconds per step); pass --archs")
    for arch in archs:
        cfg = compose_config(
            [f"device={device.type}", f"architecture={arch}", f"env.dataset={args.dataset}", "agent.batch_size=512",
             *speed_overrides(args), *args.set]
        )
        reset_peak(device)
        state = build_run(cfg, device)
        prefill(state, int(cfg.agent.learning_starts))

        def dqn() -> None:
            train_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))

        mode = compile_mode(args, device)
        sup = supervised_step(state, cfg, device, None)
        flops_dqn, flops_sup = flop_count(dqn), flop_count(sup)  # eager; doubles as the first warm-up
        notes = fastpath.configure(cfg.speed, state.agent, device)
        sup_notes: dict[str, str] = {}
        if mode is not None:
            sup = supervised_step(state, cfg, device, mode, sup_notes)
        for _ in range(args.warmup if mode is None else max(args.warmup, 5)):  # graph trees record on call 3
            dqn(), sup()
        n = calls_per_block(device, dqn, args.block_s)
        t = interleaved(device, {"dqn": dqn, "sup": sup}, n, args.repeats)
        fast = ", ".join(f"{k}: {v}" for k, v in notes.items() if k != "tf32") or "eager"
        b = int(cfg.agent.batch_size)
        goal_rate = "≥ 5000 (H100, graphs)" if arch == "mlp" and device.type == "cuda" else ""
        res.add("train", f"{arch} DQN training steps/s (batch {b})", 1 / statistics.median(t["dqn"]), "steps/s",
                spread=[1 / x for x in t["dqn"]], goal=goal_rate, note=fast, arch=arch, fast_path=notes)
        sup_note = "eager" if mode is None else sup_notes.get("supervised", f"torch.compile(mode={mode})")
        res.add("train", f"{arch} supervised steps/s (batch {b})", 1 / statistics.median(t["sup"]), "steps/s",
                spread=[1 / x for x in t["sup"]], note=sup_note, arch=arch)
        ratios = [a / s for a, s in zip(t["dqn"], t["sup"])]
        goal = "≤ 2.0 (cpu)" if arch == "mlp" and device.type == "cpu" else ""
        res.add("train", f"{arch} overhead ratio (DQN step / supervised)", median_ratio(t["dqn"], t["sup"]), "x",
                spread=ratios, goal=goal, arch=arch)
        res.add("train", f"{arch} FLOP ratio (DQN step / supervised)", flops_dqn / max(flops_sup, 1), "x",
                note=f"{flops_dqn / 1e9:.3g} / {flops_sup / 1e9:.3g} GFLOP", arch=arch)
        res.add("train", f"{arch} peak memory", peak_mb(device), "MiB", note=peak_note(device), arch=arch)
        state = sup = None  # free this architecture before building the next (the closures are done)


# ------------------------------------------------------------------------------ probe


def bench_probe(args: argparse.Namespace, device: torch.device, res: Results) -> None:
    from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised, make_targets

    cfg = compose_config([f"device={device.type}", "architecture=mlp", f"env.dataset={args.dataset}", *speed_overrides(args), *args.set])
    state = build_run(cfg, device)
    prefill(state, int(cfg.agent.learning_starts))
    inputs = state.replay.sample_obs(int(cfg.probe.num_inputs), torch.Generator(device).manual_seed(0))
    T, pause_steps = int(cfg.probe.num_targets), int(cfg.probe.steps)
    targets = make_targets(state.build_fresh, inputs, list(range(T)), 0.0, cfg.probe.sin_scale)
    steps, net, every = args.probe_steps, state.agent.online, int(cfg.probe.curve_every_steps)
    notes: dict[str, str] = {}
    compiled = fastpath.probe_loss(cfg.speed, cfg.probe, device, notes)
    for batch_size in args.probe_batches:
        reset_peak(device)

        def fit(fn: Callable, n: int) -> Callable[[], Any]:
            # --compile / --cuda-graphs: the vectorised side runs the run's compiled loss
            extra = {"compiled": compiled} if compiled is not None and fn is fit_targets_vectorised else {}
            return lambda: fn(net, cfg.optimizer, inputs, targets, n, batch_size, 0, every, **extra)

        vec, seq = fit(fit_targets_vectorised, steps), fit(fit_targets_sequential, steps)
        fit(fit_targets_vectorised, 1)(), fit(fit_targets_sequential, 1)()  # warm-up (torch.func set-up, compile)
        # the part that does not scale with the steps: copies, the loss on all of X before and after
        fixed = {
            "vec": timed(device, fit(fit_targets_vectorised, 0)),
            "seq": timed(device, fit(fit_targets_sequential, 0)),
        }
        t = interleaved(device, {"vec": vec, "seq": seq}, 1, args.repeats)
        pause = {k: [fixed[k] + max(x - fixed[k], 0.0) * pause_steps / steps for x in v] for k, v in t.items()}
        what = f"MLP, {T} targets, probe batch {batch_size}"
        how = f", {notes['probe']}" if compiled else ""
        note = f"{steps} steps timed, scaled to {pause_steps}"
        res.add("probe", f"vectorised fit s/pause ({what}{how})", statistics.median(pause["vec"]), "s",
                spread=pause["vec"], note=f"{note}; fixed part {fixed['vec']:.2f} s", batch_size=batch_size)
        res.add("probe", f"one-by-one fit s/pause ({what})", statistics.median(pause["seq"]), "s",
                spread=pause["seq"], note=f"{note}; fixed part {fixed['seq']:.2f} s", batch_size=batch_size)
        goal = "≥ 8x (gpu)" if device.type == "cuda" else "≥ 1.5x (2-core cpu)"
        res.add("probe", f"vectorised speed-up (probe batch {batch_size})", median_ratio(pause["seq"], pause["vec"]),
                "x", spread=[s / v for s, v in zip(pause["seq"], pause["vec"])], goal=goal, batch_size=batch_size)
        res.add("probe", f"peak memory (probe batch {batch_size})", peak_mb(device), "MiB", note=peak_note(device))


# ------------------------------------------------------------------------------ diagnostics


class CaptureWriter:
    """Stands in for ``MetricsWriter``: keeps the scalars ``run_diagnostics`` records."""

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
    return ["diagnostics.statistics.num_inputs=256", "diagnostics.curvature.num_inputs=64",
            "diagnostics.curvature.iterations=10", "diagnostics.curvature.num_vectors=1", "diagnostics.gradcov.k=64"]


def bench_diagnostics(args: argparse.Namespace, device: torch.device, res: Results) -> None:
    from plasticity_runner.probes.diagnostics import run_diagnostics

    archs = args.archs
    if args.quick and not args.archs_given:
        archs = ["mlp"]
        res.add("diagnostics", "cnn, resnet18, vit", None, "", note="skipped in --quick; pass --archs")
    sizes = diagnostics_overrides(args.diagnostics_sizes == "small")
    for i, arch in enumerate(archs):
        cfg = compose_config(
            [f"device={device.type}", f"architecture={arch}", f"env.dataset={args.dataset}", "total_steps=0", *sizes,
             *args.set]
        )
        state = build_run(cfg, device)
        prefill(state, int(cfg.agent.learning_starts))
        if i == 0:  # warm-up: the first torch.func call of a process pays a one-off set-up cost
            small = copy.deepcopy(cfg)
            OmegaConf.update(small, "diagnostics.statistics.num_inputs", 8)
            OmegaConf.update(small, "diagnostics.curvature.num_inputs", 8)
            OmegaConf.update(small, "diagnostics.curvature.iterations", 2)
            OmegaConf.update(small, "diagnostics.gradcov.k", 8)
            run_diagnostics(small, state, CaptureWriter())
        reset_peak(device)
        runs = []
        for _ in range(1 if args.quick else max(1, args.repeats // 2)):
            writer = CaptureWriter()
            sync(device)
            run_diagnostics(cfg, state, writer)
            sync(device)
            runs.append(writer.scalars)
        d = cfg.diagnostics
        what = {
            "statistics": f"{d.statistics.num_inputs} inputs",
            "curvature": f"{d.curvature.num_inputs} inputs x {d.curvature.iterations} it "
                         f"x {d.curvature.num_vectors} vec",
            "gradcov": f"k={d.gradcov.k}, budget {d.gradcov.max_memory_mb:g} MiB",
        }
        for name, size in what.items():
            values = [r[("timing", f"{name}_s")] for r in runs]
            res.add("diagnostics", f"{arch} {name} s/pause", statistics.median(values), "s", spread=values,
                    note=size, arch=arch)
        res.add("diagnostics", f"{arch} peak memory", peak_mb(device), "MiB", note=peak_note(device), arch=arch)
        del state


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
    "intervention=[none]", "agent=dqn", "optimizer=adam", "optimizer.lr=1e-4", "optimizer.eps=1e-8",
    "env.num_envs=1", "agent.update_every_env_steps=4", "agent.batch_size=32", "agent.replay_capacity=100000",
    "agent.target_update_steps=250", "agent.epsilon_start=0.01", "agent.epsilon_end=0.01",
]


def atari_agent(
    args: argparse.Namespace, device: torch.device, overrides: list[str]
) -> tuple[list[float], tuple[int, int], Any, dict]:
    """Env steps/s of ``train_step`` (act, env step, store, sample, learn, target bookkeeping)."""
    cfg = compose_config(
        ["experiment=atari_ln", f"env.game={args.game}", f"device={device.type}", "progress=none",
         f"agent.learning_starts={args.atari_prefill}", *overrides, *speed_overrides(args)]
    )
    state = build_run(cfg, device)
    notes = fastpath.configure(cfg.speed, state.agent, device)
    prefill(state, int(cfg.agent.learning_starts))

    def step() -> None:
        train_step(state, cfg.agent, epsilon_at(state.step, cfg.agent, state.clock))  # the preset's decay counts frames

    for _ in range(args.warmup if compile_mode(args, device) is None else max(args.warmup, 5)):
        step()
    n = calls_per_block(device, step, args.block_s)
    per_step = [timed(device, step, n) / n for _ in range(args.repeats)]
    env_steps = int(cfg.agent.update_every_env_steps) * int(cfg.env.num_envs)  # transitions per train_step
    rates = [env_steps / t for t in per_step]
    replay = state.replay
    replay_bytes = (replay.nbytes(), replay._valid_host.nbytes + replay.slot_tick.nbytes)  # device, host mirrors
    state.env.close()
    return rates, replay_bytes, cfg, notes


def bench_atari(args: argparse.Namespace, device: torch.device, res: Results) -> None:
    from plasticity_runner.envs.atari import AtariEnvConfig, AtariVectorEnv
    from plasticity_runner.envs.atari_replay import AtariReplay

    steps = args.atari_steps
    for n in args.envs:
        cfg = AtariEnvConfig(game=args.game, num_envs=n)
        rows = (
            ("env", atari_env_rate, "env steps/s"),
            ("env + replay.add", atari_env_replay_rate, "env steps/s"),
        )
        env = AtariVectorEnv(cfg, device, seed=0)
        env.reset()
        for name, fn, unit in rows:
            rates = [steps * n / fn(env, steps) for _ in range(max(1, args.repeats // 2))]
            res.add("atari", f"{name}, {n} env{'s' if n > 1 else ''}", statistics.median(rates), unit,
                    spread=rates, note=f"{statistics.median(rates) * cfg.frame_skip:.0f} frames/s", num_envs=n)
        env.close()
    env = AtariVectorEnv(AtariEnvConfig(game=args.game, num_envs=1), device, seed=0)
    env.reset()
    fill = 2_000 if args.quick else None
    rates = [steps / atari_sample_rate(env, steps, fill) for _ in range(1)]
    env.close()
    res.add("atari", "replay.sample, batch 32, capacity 100k", statistics.median(rates), "batches/s",
            note=f"{'2k' if fill else '100k'} stored")

    for n in args.envs:
        reset_peak(device)
        rates, _, cfg, notes = atari_agent(args, device, [f"env.num_envs={n}"])
        res.add("atari", f"agent steps/s, atari_ln preset, {n} env{'s' if n > 1 else ''}", statistics.median(rates),
                "env steps/s", spread=rates,
                note=f"LN Nature CNN, Double DQN, batch {cfg.agent.batch_size}, update every "
                     f"{cfg.agent.update_every_env_steps} vector steps", num_envs=n, fast_path=notes)
    reset_peak(device)
    rates, replay_bytes, cfg, notes = atari_agent(
        args, device, CLEANRL_SETTING
    )
    res.add("atari", "agent steps/s, CleanRL dqn_atari setting", statistics.median(rates), "env steps/s",
            spread=rates, goal="≥ 2x CleanRL (outside)",
            note="1 env, batch 32, update every 4, Nature CNN, replay 100k, DQN, Adam 1e-4, eps-greedy 0.01",
            num_envs=1, fast_path=notes)
    res.add("atari", "peak memory (CleanRL setting)", peak_mb(device), "MiB", note=peak_note(device))
    dev_bytes, host = replay_bytes
    assert dev_bytes == AtariReplay.memory_bytes(int(cfg.agent.replay_capacity), 1)
    res.add("atari", "replay bytes, 100k transitions", (dev_bytes + host) / 1e9, "GB", goal="≤ 1 GB",
            note=f"{dev_bytes / 1e9:.3f} GB on {device.type} + {host / 1e6:.1f} MB host mirrors")


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
    p.add_argument("--cuda-graphs", action="store_true",
                   help="speed.cuda_graphs=true: compile with CUDA graphs (falls back on cpu; the table says so)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads; default 1 on cpu (see the README (section on speed)), torch's own on cuda; 0: torch's")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats per measurement (default 5, quick 3)")
    p.add_argument("--block-s", type=float, default=None, help="seconds per timed block (default 1.0, quick 0.25)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 3, quick 1)")
    p.add_argument("--archs", nargs="+", default=None, help=f"subset of {','.join(ARCHS)} (train, diagnostics)")
    p.add_argument("--dataset", default="digits", help="classification data set (digits needs no files)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for the classification runs (train, probe, diagnostics); repeatable, "
                        "e.g. --set architecture.width=64 (the rows keep their names: read the note)")
    p.add_argument("--probe-steps", type=int, default=None, help="probe optimizer steps timed (default 200, quick 20)")
    p.add_argument("--probe-batches", nargs="+", default=None,
                   help="probe minibatch sizes (default 128,512; quick 128)")
    p.add_argument("--diagnostics-sizes", choices=["config", "small"], default=None,
                   help="config: the diagnostics block of configs/config.yaml; small: the --quick sizes "
                        "(statistics 256 inputs, curvature 64 inputs x 10 x 1, gradcov k=64). "
                        "Default: config, quick: small")
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
        # out several times slower and noisy (the README (section on speed)); one thread measures the code
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
    print(f"{meta['machine']} | torch {meta['torch']} | {meta['torch_threads']} threads, {meta['cpu_count']} cpus | "
          f"device {device.type} | compile={args.compile} cuda_graphs={args.cuda_graphs} | medians of "
          f"{args.repeats} | load avg {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    if args.set:
        print(f"config overrides of the classification runs: {' '.join(args.set)}")
    if device.type == "cpu" and torch.get_num_threads() > 1 and load0[0] >= (os.cpu_count() or 1) - 0.5 \
            and os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive":
        print("warning: several torch threads on a loaded CPU: OpenMP threads spin against other jobs and the "
              "numbers come out several times slower; use --threads 1 or OMP_WAIT_POLICY=PASSIVE (the README (section on speed))")
    print(HEADER)
    print("-" * len(HEADER))
    res = Results()
    t0 = time.perf_counter()
    runners = {"train": bench_train, "probe": bench_probe, "diagnostics": bench_diagnostics, "atari": bench_atari}
    seconds = {}
    for name in BENCHES:
        if name not in args.only:
            continue
        t = time.perf_counter()
        try:
            runners[name](args, device, res)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next sub-benchmark
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            res.add(name, "FAILED", None, "", note=f"{type(exc).__name__}: {first_line}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        seconds[name] = time.perf_counter() - t
    load1 = os.getloadavg()
    meta.update(load_avg_end=load1, seconds=seconds, total_s=time.perf_counter() - t0)
    print(f"done in {meta['total_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}); "
          f"load avg {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    out = {"meta": meta, "rows": res.rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
