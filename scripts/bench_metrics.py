"""Cost of each of the field's metrics (Plasticine, Dohare et al., ReDo) per pause (and per training step for the in-loop part).

    python scripts/bench_metrics.py                      # mlp and cnn, default sizes, 1 thread
    python scripts/bench_metrics.py --archs mlp cnn vit minatar_cnn --repeats 5

Each row times one metric's own work on a built run at its default config (digits inputs, the
evaluation batch of the statistics: 1024 inputs; dynamics: 512 transitions, 512 reference inputs),
median over ``--repeats``:

* ``active units``: counting ``h > 0`` per unit on the activations of the statistics' forward;
* ``duplicate units``: the float64 Gram matrix of every activation layer and the pairwise test;
* ``stable rank + feature norm``: from the singular values the statistics already compute, and
  ``||phi(x)||`` of the features;
* ``weight change from init``: ``||theta - theta_0||`` per layer (a host read per parameter);
* ``greedy-action change``: greedy actions on the reference batch (a deep copy and a forward);
* ``grad norm at the pause``: a deep copy of both networks, the training loss and its backward;
* ``eff lr at a log point``: ``||theta - theta_prev||`` per layer, plus the snapshot after the hooks;
* ``grad norm in the loop``: ``GradNormAccumulator.add`` per training step, next to the step's
  own time (``learn_step``), and its share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.nets.layers import ACTIVATIONS  # noqa: E402
from plasticity_runner.probes.dynamics import (  # noqa: E402
    GradNormAccumulator,
    _params,
    _snapshot,
    difference_norms,
    eval_gradient_norms,
    greedy_actions,
)
from plasticity_runner.probes.statistics import duplicate_mask, stable_rank, unit_activity  # noqa: E402
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill  # noqa: E402


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def activations(net, inputs):
    """The outputs of every hidden activation module on ``inputs`` (eval mode, no grad)."""
    outs = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: outs.append(o.detach()))
        for m in net.modules()
        if isinstance(m, ACTIVATIONS)
    ]
    with torch.no_grad():
        features = net.features(inputs)
    for h in hooks:
        h.remove()
    return outs, features


def bench(arch: str, repeats: int) -> list[tuple[str, float, str]]:
    cfg = compose_config([f"architecture={arch}", "device=cpu", "torch_threads=1", "total_steps=0"])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    for _ in range(3):
        learn_step(state, agent_cfg, 0.5)
        finish_step(state, agent_cfg)
    net = state.agent.online
    d = cfg.diagnostics
    batch = state.replay.sample(int(d.statistics.num_inputs), torch.Generator().manual_seed(0))
    acts, features = activations(net, batch.o_tm1)
    rows = []

    rows.append(
        (
            "active units",
            timed(lambda: [(a > 0).sum(0) for a in acts], repeats),
            f"{len(acts)} layers, {int(d.statistics.num_inputs)} inputs",
        )
    )

    def duplicates():
        for a in acts:
            duplicate_mask(unit_activity(a), 0.01)

    rows.append(("duplicate units", timed(duplicates, repeats), "float64 Gram per layer"))
    sv = torch.linalg.svdvals(features.double())
    rows.append(
        (
            "stable rank + feature norm",
            timed(lambda: (stable_rank(sv), features.double().norm(dim=1).mean()), repeats),
            "from the SVD",
        )
    )
    tracker = state.dynamics
    rows.append(
        (
            "weight change from init",
            timed(lambda: difference_norms(_params(net), tracker.theta_0), repeats),
            f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params",
        )
    )
    reference = state.replay.sample_obs(int(d.dynamics.reference_inputs), torch.Generator().manual_seed(1))
    rows.append(
        (
            "greedy-action change",
            timed(lambda: greedy_actions(net, reference), repeats),
            f"{int(d.dynamics.reference_inputs)} reference inputs",
        )
    )
    head = state.replay.sample(int(d.dynamics.num_inputs), torch.Generator().manual_seed(2))
    rows.append(
        (
            "grad norm at the pause",
            timed(lambda: eval_gradient_norms(state.agent, head, 0), repeats),
            f"{int(d.dynamics.num_inputs)} transitions",
        )
    )
    rows.append(
        (
            "eff lr at a log point",
            timed(lambda: (difference_norms(_params(net), tracker.theta_prev), _snapshot(net)), repeats),
            "norms + snapshot",
        )
    )

    accumulator = GradNormAccumulator()
    accumulator.add(net)  # the layout is built once
    per_add = timed(lambda: accumulator.add(net), 20 * repeats)
    per_step = timed(lambda: (learn_step(state, agent_cfg, 0.5), finish_step(state, agent_cfg)), 3 * repeats)
    rows.append(
        (
            "grad norm in the loop (per step)",
            per_add,
            f"{100 * per_add / per_step:.1f}% of a {per_step * 1e3:.1f} ms training step",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| arch | metric | seconds | what |")
    print("|---|---|---|---|")
    for arch in args.archs:
        for name, seconds, what in bench(arch, args.repeats):
            print(f"| {arch} | {name} | {seconds:.2g} | {what} |", flush=True)


if __name__ == "__main__":
    main()
