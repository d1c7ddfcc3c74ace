"""What the pause of a population costs against its members' pauses one after another.

    python scripts/bench_population_pause.py                      # 8 members, default MLP (width 512), 1 thread
    python scripts/bench_population_pause.py --set architecture.width=64 --probe-steps 200
    python scripts/bench_population_pause.py --members 4 --json out.json

The members are single runs of the default config (``configs/config.yaml``; the digits
classification MDP) with seeds ``0..members-1``, each built by ``trainer.build_train_state``, its replay
prefilled and ``--train-steps`` training steps taken (``total_steps``: the pause is the final
one, where every diagnostic is due). The pause is the run's default pause, every default
diagnostic on, with the probe's ``probe.steps`` set to
``--probe-steps`` (the default 2000 steps at width 512 would take minutes per member on one
thread; the probe's share scales with its steps, the other diagnostics' does not).

Timed, in one process and on deep copies of the same states:

* ``separate``: ``probes.pause.run_pause`` of each member, one after another;
* ``population``: ``probes.population.run_population_pause`` of all members.

Each variant runs ``--repeats`` times (alternating, after one warm-up pause of each); the table
gives the median wall time (``wall_s``), the process's CPU time (``cpu_s``: with one thread, the
figure a busy shared machine disturbs least), and per diagnostic the seconds it recorded
(``timing/<name>_s``, summed over members; a stacked probe records its share per member, so the
sum is the stack's time). Nothing is asserted on time; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.probes.pause import run_pause  # noqa: E402
from plasticity_runner.probes.population import run_population_pause  # noqa: E402
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill  # noqa: E402


class TimingWriter:
    """Keeps the ``timing`` rows of a pause (the metrics writer's interface)."""

    def __init__(self) -> None:
        self.timing: dict[str, float] = {}

    def add(self, step, phase, metric, value) -> None:
        if phase == "timing":
            self.timing[metric] = self.timing.get(metric, 0.0) + float(value)

    def add_many(self, step, phase, values) -> None:
        for metric, value in values.items():
            self.add(step, phase, metric, value)

    def add_array(self, name, array) -> None:
        pass


def build_members(overrides: list[str], members: int, train_steps: int, device: torch.device):
    cfgs = [compose_config([f"device={device.type}", "progress=none", *overrides, f"seed={s}"]) for s in range(members)]
    states = []
    for cfg in cfgs:
        state = build_train_state(cfg, device)
        prefill(state, int(cfg.agent.learning_starts))
        for _ in range(train_steps):
            learn_step(state, cfg.agent, 0.1)
            finish_step(state, cfg.agent)
        states.append(state)
    return cfgs, states


def separate(cfgs, states) -> tuple[float, dict[str, float]]:
    copies = [copy.deepcopy(s) for s in states]
    writers = [TimingWriter() for _ in cfgs]
    t0, c0 = time.perf_counter(), time.process_time()
    for cfg, state, writer in zip(cfgs, copies, writers):
        run_pause(cfg, state, writer)
    return time.perf_counter() - t0, {"cpu_s": time.process_time() - c0, **summed(writers)}


def population(cfgs, states) -> tuple[float, dict[str, float]]:
    copies = [copy.deepcopy(s) for s in states]
    writers = [TimingWriter() for _ in cfgs]
    t0, c0 = time.perf_counter(), time.process_time()
    run_population_pause(cfgs, copies, writers)
    return time.perf_counter() - t0, {"cpu_s": time.process_time() - c0, **summed(writers)}


def summed(writers: list[TimingWriter]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in writers:
        for k, v in w.timing.items():
            out[k] = out.get(k, 0.0) + v
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--probe-steps", type=int, default=50, help="probe.steps of the timed pauses")
    p.add_argument("--train-steps", type=int, default=5, help="training steps of each member before its pause")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # total_steps = the steps taken: the pause is the final one, where every diagnostic is due
    overrides = [
        f"probe.steps={args.probe_steps}",
        f"total_steps={args.train_steps}",
        f"torch_threads={args.threads}",
        *args.set,
    ]
    load0 = os.getloadavg()
    print(
        f"torch {torch.__version__} | {torch.get_num_threads()} threads | device {device} | {args.members} members "
        f"| load avg {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} | overrides: {' '.join(overrides)}",
        flush=True,
    )
    cfgs, states = build_members(overrides, args.members, args.train_steps, device)
    separate(cfgs[:1], states[:1])  # warm-up: torch.func and the diagnostics' set-up
    population(cfgs[:2], states[:2])
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {"separate": [], "population": []}
    for _ in range(args.repeats):
        runs["separate"].append(separate(cfgs, states))
        runs["population"].append(population(cfgs, states))
    load1 = os.getloadavg()
    names = sorted({k for r in runs.values() for _, t in r for k in t})
    table = {}
    for variant, results in runs.items():
        table[variant] = {"wall_s": statistics.median(w for w, _ in results)}
        for name in names:
            table[variant][name] = statistics.median(t.get(name, 0.0) for _, t in results)
    ratio = table["separate"]["wall_s"] / table["population"]["wall_s"]
    cpu_ratio = table["separate"]["cpu_s"] / table["population"]["cpu_s"]
    print("\n| part | separate (s) | population (s) | ratio |")
    print("|---|---|---|---|")
    for name in ["wall_s", *names]:
        a, b = table["separate"][name], table["population"][name]
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b if b else float('nan'):.2f} |")
    print(
        f"\npopulation pause: {ratio:.2f}x the separate pauses' speed (wall), {cpu_ratio:.2f}x (CPU time); "
        f"load avg at the end {load1[0]:.2f}"
    )
    out = {
        "meta": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "members": args.members,
            "overrides": overrides,
            "load_avg_start": load0,
            "load_avg_end": load1,
        },
        "table": table,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
    }
    if args.json:
        tmp = Path(args.json + ".tmp")  # whole or not at all
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, args.json)
    return out


if __name__ == "__main__":
    main()
