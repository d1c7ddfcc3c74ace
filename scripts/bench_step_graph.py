"""Training steps/s of the eager step against ``speed.step_graph`` (the whole step compiled) on the
CPU, one thread, the default run (MLP 2x512, batch 512, DQN, digits). Prints a table.

    python scripts/bench_step_graph.py                        # the default run
    python scripts/bench_step_graph.py --overrides env=cartpole architecture.width=64
    python scripts/bench_step_graph.py --json out.json

What is timed: the loop's training step (``learn_step``, or ``StepGraph.learn_step``, then
``finish_step``: the hooks and the target copy), without pauses or log points. The compiled
function is compiled before the timing (its first call). Medians of ``--repeats`` windows of
``--seconds`` each, the two modes interleaved; the machine may be shared: the load average is
printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plasticity_runner.agents.dqn import epsilon_at  # noqa: E402
from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.step_graph import StepGraph  # noqa: E402
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill  # noqa: E402


def setup(overrides: list[str], graph: bool):
    cfg = compose_config(["device=cpu", "torch_threads=1", *overrides])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    learn = StepGraph(state, cfg.agent, torch.device("cpu")).learn_step if graph else learn_step

    def step() -> None:
        learn(state, agent_cfg, epsilon_at(state.step, agent_cfg, state.clock))
        finish_step(state, agent_cfg)

    t0 = time.perf_counter()
    step()  # the compile, for the graph
    return step, time.perf_counter() - t0


def window(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--overrides", nargs="*", default=[], help="config overrides (default: the default run)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per timed window")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per mode")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    eager, _ = setup(args.overrides, False)
    graph, compile_s = setup(args.overrides, True)
    rates: dict[str, list[float]] = {"eager": [], "step_graph": []}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits both
        rates["eager"].append(window(eager, args.seconds))
        rates["step_graph"].append(window(graph, args.seconds))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["step_graph"] / med["eager"]
    load = os.getloadavg()
    print(f"overrides: {args.overrides or '(the default run)'}; 1 thread; load average {load[0]:.2f}")
    print(f"{'mode':<12}{'steps/s (median)':>18}{'windows':>40}")
    for k, v in rates.items():
        print(f"{k:<12}{med[k]:>18.1f}{str([round(x, 1) for x in v]):>40}")
    print(f"step_graph / eager: {ratio:.3f} (first call, with the compile: {compile_s:.1f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "overrides": args.overrides,
                    "rates": rates,
                    "median": med,
                    "ratio": ratio,
                    "compile_s": compile_s,
                    "load": load,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
