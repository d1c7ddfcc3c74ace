"""Cost of one pause's diagnostics (statistics, curvature, gradient covariance) per architecture.

Prints a table: seconds per diagnostic for MLP, CNN, ResNet-18 and ViT (each with its
``configs/architecture`` defaults, the paper's sizes) on cpu, and on cuda when present. Sizes
default to the ``diagnostics`` block of ``configs/config.yaml``; ``--quick`` uses small ones
(a 2-core CPU would take hours for ResNet-18 at the defaults). An architecture not registered in
``nets.BODIES`` is skipped with a message.

    python scripts/bench_diagnostics.py                       # default sizes, digits-shaped inputs
    python scripts/bench_diagnostics.py --quick --archs resnet18 vit
    python scripts/bench_diagnostics.py --obs 3,32,32 --devices cuda --max-memory-mb 8192
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from omegaconf import OmegaConf

from plasticity_runner.agents.dqn import DQNAgent
from plasticity_runner.config import SCHEMAS, CurvatureConfig, GradCovConfig, StatisticsConfig
from plasticity_runner.envs.base import Batch
from plasticity_runner.nets import BODIES, build_network
from plasticity_runner.probes.curvature import hessian_spectrum
from plasticity_runner.probes.gradcov import gradient_covariance, td_sample_losses
from plasticity_runner.probes.statistics import network_statistics

ARCHS = ("mlp", "cnn", "resnet18", "vit")
NUM_ACTIONS = 10


def plain(cls, **overrides):
    """A config dataclass's defaults (interpolated cadences dropped) as an attribute object."""
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "every_steps"}
    return argparse.Namespace(**{**values, **overrides})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench(arch: str, device: torch.device, obs_shape: tuple[int, ...], args) -> dict[str, float] | None:
    arch_cfg = OmegaConf.structured(SCHEMAS["architecture"][arch])
    torch.manual_seed(0)
    online = build_network(arch_cfg, obs_shape, NUM_ACTIONS).to(device)
    target = build_network(arch_cfg, obs_shape, NUM_ACTIONS).to(device)
    agent_cfg = OmegaConf.create(dict(gamma=0.99, double_dqn=False))
    agent = DQNAgent(agent_cfg, online, target, torch.optim.SGD(online.parameters(), lr=0.0), [], NUM_ACTIONS)
    g = torch.Generator(device).manual_seed(0)
    n = max(args.stat_inputs, args.curv_inputs, args.k)
    batch = Batch(
        o_tm1=torch.rand(n, *obs_shape, generator=g, device=device),
        a_tm1=torch.randint(NUM_ACTIONS, (n,), generator=g, device=device),
        r_t=torch.rand(n, generator=g, device=device),
        discount_t=torch.ones(n, device=device),
        o_t=torch.rand(n, *obs_shape, generator=g, device=device),
    )
    stats_cfg = plain(StatisticsConfig)
    curv_cfg = plain(CurvatureConfig, iterations=args.iterations, num_vectors=args.vectors)
    head = Batch(*(t[: args.k] for t in dataclasses.astuple(batch)))
    row = {"params_M": sum(p.numel() for p in online.parameters()) / 1e6}
    row["statistics_s"] = timed(device, lambda: network_statistics(online, batch.o_tm1[: args.stat_inputs], stats_cfg))
    row["curvature_s"] = timed(device, lambda: hessian_spectrum(online, batch.o_tm1[: args.curv_inputs], 1, curv_cfg))
    row["hvp_ms"] = 1e3 * row["curvature_s"] / (args.iterations * args.vectors)
    row["gradcov_s"] = timed(
        device,
        lambda: gradient_covariance(
            td_sample_losses(agent, head), chunk_size=args.chunk_size, max_memory_mb=args.max_memory_mb, seed=0
        ),
    )
    return row


def main() -> None:
    stats_d, curv_d, cov_d = plain(StatisticsConfig), plain(CurvatureConfig), plain(GradCovConfig)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="cuda is skipped when absent")
    p.add_argument("--obs", default="1,8,8", help="observation shape C,H,W (default: digits; CIFAR-10 is 3,32,32)")
    p.add_argument("--stat-inputs", type=int, default=stats_d.num_inputs)
    p.add_argument("--curv-inputs", type=int, default=curv_d.num_inputs)
    p.add_argument("--iterations", type=int, default=curv_d.iterations)
    p.add_argument("--vectors", type=int, default=curv_d.num_vectors)
    p.add_argument("--k", type=int, default=cov_d.k)
    p.add_argument("--chunk-size", type=int, default=cov_d.chunk_size)
    p.add_argument("--max-memory-mb", type=float, default=cov_d.max_memory_mb)
    p.add_argument(
        "--quick", action="store_true", help="small sizes: 256 stat inputs, 64 curvature inputs x 10 x 1, k=64"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.quick:
        args.stat_inputs, args.curv_inputs, args.iterations, args.vectors, args.k = 256, 64, 10, 1, 64
    if args.threads:
        torch.set_num_threads(args.threads)
    obs_shape = tuple(int(x) for x in args.obs.split(","))
    devices = []
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("skip cuda: torch sees no CUDA device")
            continue
        devices.append(torch.device(name))

    # warm-up: the first torch.func call of a process pays a one-off set-up cost
    small = {"stat_inputs": 8, "curv_inputs": 8, "iterations": 2, "vectors": 1, "k": 8}
    warm = argparse.Namespace(**{**vars(args), **small})
    for device in devices:
        bench("mlp", device, (1, 8, 8), warm)

    print(
        f"obs {obs_shape}; statistics: {args.stat_inputs} inputs; curvature: {args.curv_inputs} inputs x "
        f"{args.iterations} Lanczos iterations x {args.vectors} vectors; gradcov: k={args.k}, chunk "
        f"{args.chunk_size}, budget {args.max_memory_mb:g} MiB; torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'arch':<10} {'device':<6} {'params_M':>9} {'statistics_s':>13} {'curvature_s':>12} "
        f"{'hvp_ms':>9} {'gradcov_s':>10}"
    )
    print(header)
    print("-" * len(header))
    for arch in args.archs:
        if arch not in BODIES or arch not in SCHEMAS["architecture"]:
            print(f"{arch:<10} skipped: not registered in nets.BODIES / config.SCHEMAS['architecture'] yet")
            continue
        for device in devices:
            try:
                r = bench(arch, device, obs_shape, args)
            except torch.cuda.OutOfMemoryError as exc:  # report and go on with the next one
                print(f"{arch:<10} {device.type:<6} out of memory: {str(exc).splitlines()[0]}")
                torch.cuda.empty_cache()
                continue
            print(
                f"{arch:<10} {device.type:<6} {r['params_M']:>9.3f} {r['statistics_s']:>13.2f} "
                f"{r['curvature_s']:>12.2f} {r['hvp_ms']:>9.1f} {r['gradcov_s']:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
