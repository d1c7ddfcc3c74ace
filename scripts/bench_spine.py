"""Benchmark of the runner spine: training steps/s and the probe phase, vectorised vs one by one.

MLP (width 512) on the digits classification MDP, batch 512, the run's Adam. Prints a table of
medians over repeats (these machines are noisy); tests never assert on these numbers.

    python scripts/bench_spine.py                 # cpu, and cuda when present
    python scripts/bench_spine.py --device cpu --repeats 5 --probe-steps 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.cli import compose_config
from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised, make_targets
from plasticity_runner.trainer import build_run, prefill, train_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(device: str, steps: int, repeats: int) -> float:
    cfg = compose_config([f"device={device}"])
    state = build_run(cfg, torch.device(device))
    prefill(state, int(cfg.agent.learning_starts))
    for _ in range(20):  # warm-up
        train_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))
    rates = []
    for _ in range(repeats):
        sync(state.obs.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))
        sync(state.obs.device)
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_probe(device: str, probe_steps: int, repeats: int, batch_size: int) -> tuple[float, float]:
    cfg = compose_config([f"device={device}"])
    state = build_run(cfg, torch.device(device))
    prefill(state, int(cfg.agent.learning_starts))
    gen = torch.Generator(state.obs.device).manual_seed(0)
    inputs = state.replay.sample_obs(int(cfg.probe.num_inputs), gen)
    T = int(cfg.probe.num_targets)
    targets = make_targets(state.build_fresh, inputs, list(range(T)), 0.0, cfg.probe.sin_scale)
    out = {}
    for name, fit in (("vectorised", fit_targets_vectorised), ("sequential", fit_targets_sequential)):
        times = []
        for _ in range(repeats):
            sync(state.obs.device)
            t0 = time.perf_counter()
            fit(state.agent.online, cfg.optimizer, inputs, targets, probe_steps, batch_size, 0, 20)
            sync(state.obs.device)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out["vectorised"], out["sequential"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append")
    parser.add_argument("--steps", type=int, default=200, help="training steps per repeat")
    parser.add_argument("--probe-steps", type=int, default=100, help="probe optimizer steps per repeat")
    parser.add_argument("--probe-batch", type=int, action="append", help="probe minibatch sizes (default 128 512)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    batches = args.probe_batch or [128, 512]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; medians of {args.repeats} repeats")
    print(f"{'device':<7}{'what':<44}{'value':>12}")
    for device in devices:
        rate = bench_train(device, args.steps, args.repeats)
        print(f"{device:<7}{'training steps/s (MLP 512, digits, batch 512)':<44}{rate:>12.1f}")
        for b in batches:
            vec, seq = bench_probe(device, args.probe_steps, args.repeats, b)
            per_pause = 2000 / args.probe_steps
            print(f"{device:<7}{f'probe, 10 targets, batch {b}: vectorised s/pause':<44}{vec * per_pause:>12.1f}")
            print(f"{device:<7}{f'probe, 10 targets, batch {b}: one-by-one s/pause':<44}{seq * per_pause:>12.1f}")
            print(f"{device:<7}{f'probe, batch {b}: speed-up':<44}{seq / vec:>11.2f}x")


if __name__ == "__main__":
    main()
