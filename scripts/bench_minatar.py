"""MinAtar throughput on this machine: env steps/s and agent steps/s. Prints a table.

    python scripts/bench_minatar.py                  # breakout, 1 and 2 torch threads, 1 and 8 copies
    python scripts/bench_minatar.py --game seaquest --envs 1,4,16 --seconds 5

* ``env``: vector-env steps/s with uniformly random actions (``MinAtarVectorEnv.step``), and the
  transitions/s that makes (steps x copies); with ``+replay`` each step is also added to the replay.
* ``agent``: the ``minatar_dqn`` preset's training loop (``trainer.learn_step`` + ``finish_step``:
  epsilon-greedy act on the network, env step, replay add, sample 32, one RMSProp step), as
  training steps/s and env transitions/s (one update per vector step: ``num_envs`` transitions).

Medians of ``--repeats`` timed windows of ``--seconds`` each. The machine may be shared: the load
average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.envs.minatar import MinAtarEnvConfig, MinAtarVectorEnv  # noqa: E402
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill  # noqa: E402


def timed(fn, seconds: float, repeats: int) -> float:
    """Median calls/s of ``fn`` over ``repeats`` windows of about ``seconds`` each."""
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_env(game: str, num_envs: int, seconds: float, repeats: int, with_replay: bool) -> float:
    env = MinAtarVectorEnv(MinAtarEnvConfig(game=game, num_envs=num_envs), "cpu", 0)
    replay = env.make_replay(100_000)
    env.reset()
    g = torch.Generator().manual_seed(0)

    def step():
        result = env.step(torch.randint(env.num_actions, (num_envs,), generator=g))
        if with_replay:
            replay.add(result.record)

    return timed(step, seconds, repeats)


def bench_agent(game: str, num_envs: int, seconds: float, repeats: int) -> float:
    cfg = compose_config(
        [
            "experiment=minatar_dqn",
            f"env.game={game}",
            f"env.num_envs={num_envs}",
            "device=cpu",
            "progress=none",
        ]
    )
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)

    def step():
        learn_step(state, agent_cfg, 0.1)
        finish_step(state, agent_cfg)

    return timed(step, seconds, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="breakout")
    p.add_argument("--envs", default="1,8", help="copies, comma-separated")
    p.add_argument("--threads", default="1,2", help="torch threads, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for n in [int(e) for e in args.envs.split(",")]:
            env_rate = bench_env(args.game, n, args.seconds, args.repeats, with_replay=False)
            replay_rate = bench_env(args.game, n, args.seconds, args.repeats, with_replay=True)
            agent_rate = bench_agent(args.game, n, args.seconds, args.repeats)
            rows.append((threads, n, env_rate, env_rate * n, replay_rate * n, agent_rate, agent_rate * n))
    print(
        f"# MinAtar {args.game} on {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f} (1 min) at the end"
    )
    print(
        "| torch threads | copies | env steps/s | env transitions/s | +replay transitions/s "
        "| agent (training) steps/s | agent transitions/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:,.0f} | {r[3]:,.0f} | {r[4]:,.0f} | {r[5]:,.0f} | {r[6]:,.0f} |")


if __name__ == "__main__":
    main()
