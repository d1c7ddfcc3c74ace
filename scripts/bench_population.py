"""Benchmark: a population of N members in one process against the same N runs one after another.

    python scripts/bench_population.py                      # every case, 8 members, 1 thread
    python scripts/bench_population.py --cases mlp16,mlp128 --steps 300 --members 8
    python scripts/bench_population.py --profile mlp128     # cProfile of the vmapped population
    python scripts/bench_population.py --e2e                # fig5_quick, shortened: 30 runs vs 10 populations

Each case trains the N seeds three ways in this one process, on the CPU with one thread:
``singles`` (N ``train`` calls one after another), ``population.mode=sequential`` and
``population.mode=vmap``. The pauses' diagnostics are off (the probe, statistics, curvature,
gradcov: what a pause costs is the probe's own benchmark, ``bench_pause.py``); the training-dynamics
log-point metrics stay on, as in a default run. Reported per way:

* ``loop_s``: the CPU seconds of the training loops (the trainer's log windows timed with
  ``time.process_time``: the machine may be shared), summed over the runs (singles) or one
  member's (a population's members share their loop); for the
  compiled step (``vmap+compile``: ``speed.compile=true``) the steady state, the first of the four
  log windows (which holds the compilation) replaced by the mean of the other three;
* ``compile s``: the compilation's seconds, so estimated;
* ``wall_s``: the whole invocation's CPU seconds, build, prefill and outputs included;
* ``ratio``: the singles' ``wall_s`` (``loop_s``) divided by the way's: > 1 means faster. The
  whole-invocation ratio is the fair one: a population member's log windows also hold the other
  members' log-point work, which a single run's windows leave out.

``--e2e`` runs ``experiment=fig5_quick`` through the real CLI (``-m``, Hydra's basic launcher: one
job after another) twice, shortened (``E2E_SCALE``): as its 30 single runs (5 widths x 2 target
periods x 3 seeds) and as 10 populations of the 3 seeds (``population.seeds=[0,1,2]``, vmap); it
reports the CPU seconds of each sweep (the child processes') and their ratio, pauses included.

Never run from a test: speed is measured here, correctness in ``tests/test_population.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from plasticity_runner import load_sweep, trainer  # noqa: E402
from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.trainer import train  # noqa: E402

# The machine is shared: the loop's windows are timed in this process's CPU seconds, not wall-clock
# seconds, so another process's load does not count (one thread: CPU time is what the loop costs).
trainer.time = SimpleNamespace(perf_counter=time.process_time)

QUIET = [
    "probe.enabled=false",
    "diagnostics.statistics.enabled=false",
    "diagnostics.curvature.enabled=false",
    "diagnostics.gradcov.enabled=false",
    "checkpoint.enabled=false",
    "progress=none",
    "device=cpu",
    "torch_threads=1",
]
CASES = {
    "mlp16": ["architecture.width=16", "agent.batch_size=512"],
    "mlp32": ["architecture.width=32", "agent.batch_size=512"],
    "mlp64": ["architecture.width=64", "agent.batch_size=512"],
    "mlp128": ["architecture.width=128", "agent.batch_size=512"],
    "mlp512": ["architecture.width=512", "agent.batch_size=512"],
    "minatar_cnn": ["env=minatar", "env.game=breakout", "architecture=minatar_cnn", "agent.batch_size=32"],
}
GOALS = {"mlp16": 3.0, "mlp32": 3.0, "mlp64": 3.0, "mlp128": 1.5, "mlp512": 1.0, "minatar_cnn": 2.0}


def loop_seconds(run_dir: Path) -> float:
    df = load_sweep(run_dir)
    return float(df[(df.phase == "timing") & (df.metric == "train_s")]["value"].sum())


def first_window_seconds(run_dir: Path) -> float:
    df = load_sweep(run_dir)
    rows = df[(df.phase == "timing") & (df.metric == "train_s")].sort_values("step")
    return float(rows["value"].iloc[0])


def run_case(name: str, steps: int, members: int, out: Path) -> dict[str, dict[str, float]]:
    seeds = list(range(members))
    base = QUIET + CASES[name] + [f"total_steps={steps}", f"log_every_steps={steps // 4}", f"probe.every_steps={steps}"]
    results: dict[str, dict[str, float]] = {}
    t0 = time.process_time()
    loop = 0.0
    for s in seeds:
        train(compose_config(base + [f"seed={s}"]), out / name / "singles" / f"seed={s}")
        loop += loop_seconds(out / name / "singles" / f"seed={s}")
    results["singles"] = {"loop_s": loop, "wall_s": time.process_time() - t0}
    ways = {"sequential": ["population.mode=sequential"], "vmap": ["population.mode=vmap"]}
    ways["vmap+compile"] = ["population.mode=vmap", "speed.compile=true"]
    for way, opts in ways.items():
        d = out / name / way
        t0 = time.process_time()
        train(compose_config(base + [f"population.seeds=[{','.join(map(str, seeds))}]", *opts]), d)
        # a compiled step: its first window holds the compilation; the steady loop is the rest, scaled
        first = first_window_seconds(d / "seed=0") if "compile" in way else 0.0
        loop = loop_seconds(d / "seed=0")
        steady = (loop - first) * 4 / 3 if "compile" in way else loop
        results[way] = {"loop_s": steady, "wall_s": time.process_time() - t0, "compile_s": first - steady / 4}
    return results


# fig5_quick shortened to fit a shared CPU: 1000 steps, pauses at 0, 500, 1000 with a 100-step probe
E2E_SCALE = [
    "total_steps=1000",
    "log_every_steps=250",
    "probe.every_steps=500",
    "probe.steps=100",
    "progress=none",
    "device=cpu",
    "torch_threads=1",
]


def e2e(out: Path) -> None:
    import resource

    def sweep(extra: list[str], where: Path) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "plasticity_runner", "-m", "experiment=fig5_quick", *E2E_SCALE, *extra]
        subprocess.run([*cmd, f"hydra.sweep.dir={where}"], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu, time.perf_counter() - t0

    single_cpu, single_wall = sweep([], out / "singles")
    pop_cpu, pop_wall = sweep(["population.seeds=[0,1,2]", "hydra.sweeper.params.seed=0"], out / "populations")
    print("| fig5_quick (shortened) | CPU s | wall s |")
    print("|---|---|---|")
    print(f"| 30 single runs | {single_cpu:.1f} | {single_wall:.1f} |")
    print(f"| 10 populations of 3 (vmap) | {pop_cpu:.1f} | {pop_wall:.1f} |")
    print(f"| ratio | {single_cpu / pop_cpu:.2f}x | {single_wall / pop_wall:.2f}x |")


def profile(name: str, steps: int, members: int, out: Path) -> None:
    seeds = ",".join(map(str, range(members)))
    cfg = compose_config(
        QUIET + CASES[name] + [f"total_steps={steps}", f"log_every_steps={steps}", f"population.seeds=[{seeds}]"]
    )
    prof = cProfile.Profile()
    prof.enable()
    train(cfg, out / "profile")
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--profile", default=None, help="a case to profile (cProfile) instead of the table")
    parser.add_argument("--e2e", action="store_true", help="fig5_quick (shortened) as runs vs as populations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="bench_population_"))
    try:
        if args.profile:
            profile(args.profile, args.steps, args.members, out)
            return
        if args.e2e:
            load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            print(f"# load at start: {load}")
            e2e(out)
            load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            print(f"# load at end: {load}")
            return
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"# {args.members} members, {args.steps} steps each, CPU, 1 thread; load at start: {load}")
        print(f"# torch {torch.__version__}")
        header = "| case | 8 runs: CPU s (loop s) | sequential | vmap | vmap+compile (compile s) | goal |"
        print("# each way: whole-invocation CPU ratio (the runs' / the way's); in parentheses the loop-only ratio")
        print(header)
        print("|" + "---|" * 6)
        for name in args.cases.split(","):
            r = run_case(name, args.steps, args.members, out)
            single = r["singles"]

            def cell(way: str) -> str:
                w = r[way]
                return f"{single['wall_s'] / w['wall_s']:.2f}x ({single['loop_s'] / w['loop_s']:.2f}x)"

            compile_s = r["vmap+compile"]["compile_s"]
            print(
                f"| {name} | {single['wall_s']:.2f} ({single['loop_s']:.2f}) | {cell('sequential')} | {cell('vmap')} "
                f"| {cell('vmap+compile')} ({compile_s:.1f}) | >= {GOALS.get(name)}x |",
                flush=True,
            )
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"# load at end: {load}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
