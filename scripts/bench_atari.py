"""Throughput of the Atari pipeline: prints a table of environment steps per second.

    python scripts/bench_atari.py [--game pong] [--envs 1 4 8] [--steps 2000] [--devices cpu cuda]

A *row* is one benchmark function run for each (device, num_envs). Each function gets the same
arguments and returns the number of agent steps it took and the seconds they took; the table shows
env steps/s (agent steps x num_envs, i.e. transitions/s) and emulator frames/s (x frame_skip).
To add a row (e.g. the full agent once it exists), write ``def bench_x(env, steps) -> float``
(seconds for ``steps`` agent steps on a reset env) and add it to ``ROWS``.

Rows now:
* ``env``: the vector env alone (random actions drawn on the device, as an agent would hand them).
* ``env+replay``: the env plus ``replay.add`` of every record (capacity 100k).
* ``replay.sample``: 32-transition minibatches from a full 100k replay, reported in batches/s.

On a small CPU machine pass ``--threads 1``: torch's intra-op threads spinning next to ale-py's
worker threads slow both down (the env avoids torch ops on the CPU path for this reason).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import torch

from plasticity_runner.envs.atari import AtariEnvConfig, AtariVectorEnv


def _actions(env: AtariVectorEnv, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(env.num_actions, (env.num_envs,), device=env.device, generator=generator)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_env(env: AtariVectorEnv, steps: int) -> float:
    g = torch.Generator(env.device).manual_seed(0)
    for _ in range(20):  # warm up
        env.step(_actions(env, g))
    _sync(env.device)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(_actions(env, g))
    _sync(env.device)
    return time.perf_counter() - t


def bench_env_replay(env: AtariVectorEnv, steps: int) -> float:
    g = torch.Generator(env.device).manual_seed(0)
    replay = env.make_replay(100_000)
    for _ in range(20):
        replay.add(env.step(_actions(env, g)).record)
    _sync(env.device)
    t = time.perf_counter()
    for _ in range(steps):
        replay.add(env.step(_actions(env, g)).record)
    _sync(env.device)
    return time.perf_counter() - t


def bench_replay_sample(env: AtariVectorEnv, steps: int) -> float:
    """Seconds for ``steps`` minibatches of 32 from a full 100k replay (filled with real frames)."""
    g = torch.Generator(env.device).manual_seed(0)
    replay = env.make_replay(100_000)
    rec = env.step(_actions(env, g)).record
    tick = -(10**12)  # private ticks (real ones are positive): each add continues the previous one
    for _ in range(replay.ring):
        replay.add({**rec, "tick_tm1": torch.tensor(tick), "tick_t": torch.tensor(tick + 1)})
        tick += 1
    for _ in range(5):
        replay.sample(32, g)
    _sync(env.device)
    t = time.perf_counter()
    for _ in range(steps):
        replay.sample(32, g)
    _sync(env.device)
    return time.perf_counter() - t


# name -> (function, unit, whether it scales with num_envs)
ROWS: dict[str, tuple[Callable[[AtariVectorEnv, int], float], str, bool]] = {
    "env": (bench_env, "steps", True),
    "env+replay": (bench_env_replay, "steps", True),
    "replay.sample": (bench_replay_sample, "batches", False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", default="pong")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--steps", type=int, default=2000, help="agent steps (or minibatches) per measurement")
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    header = f"{'row':<14} {'device':<6} {'envs':>4} {'agent steps/s':>14} {'env steps/s':>12} {'frames/s':>10}  unit"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"game={args.game} steps={args.steps} torch_threads={torch.get_num_threads()} "
          f"cpus={os.cpu_count()} load_avg={load}")
    print(header)
    print("-" * len(header))
    for device in args.devices:
        for row in args.rows:
            fn, unit, per_env = ROWS[row]
            for n in args.envs if per_env else args.envs[:1]:
                cfg = AtariEnvConfig(game=args.game, num_envs=n)
                env = AtariVectorEnv(cfg, device, seed=0)
                env.reset()
                secs = fn(env, args.steps)
                rate = args.steps / secs
                if unit == "steps":
                    frames = rate * n * cfg.frame_skip
                    print(f"{row:<14} {device:<6} {n:>4} {rate:>14.0f} {rate * n:>12.0f} {frames:>10.0f}  {unit}")
                else:
                    print(f"{row:<14} {device:<6} {n:>4} {rate:>14.0f} {'':>12} {'':>10}  {unit}/s")
                env.close()


if __name__ == "__main__":
    main()
