"""What one probe pause costs, per architecture: the plasticity probe and each diagnostic.

    python scripts/bench_pause.py                                  # every architecture, default sizes, 1 thread
    python scripts/bench_pause.py --archs cnn vit --parts curvature gradcov
    python scripts/bench_pause.py --archs resnet18 --set diagnostics.gradcov.k=64 --json out.json

Sizes are the run's defaults (``configs/config.yaml``: the probe's 10 targets x 2000 steps at
batch 128 on 2048 inputs, the paper's; the ``diagnostics:`` block) unless ``--set`` changes them.
Inputs are digits (1x8x8) from a prefilled replay, the networks freshly initialised.

* ``probe``: ``plasticity_probe`` (targets, the vectorised fit, the losses on all of X), timed with
  0 and with ``--probe-steps`` optimizer steps and scaled to ``probe.steps``:
  ``t(0) + (t(n) - t(0)) * probe.steps / n``.
* each registered diagnostic but the probe (``bench.DIAGNOSTICS``: statistics, curvature, gradcov, dynamics, ...): ``probes.pause.run_diagnostics`` with only that diagnostic on, the
  seconds it records (``timing/<name>_s``), once each (``--repeats`` for more; the table shows the
  median).

The last column is the diagnostics' total over the probe's time: the goal is <= 1.
Nothing is asserted on time; run it on a quiet machine, 1 torch thread.
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
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import DIAGNOSTICS, CaptureWriter, only_diagnostic, warm_up_diagnostics  # noqa: E402  (scripts/ is on sys.path when run)

from plasticity_runner import registry  # noqa: E402
from plasticity_runner.cli import compose_config  # noqa: E402
from plasticity_runner.probes.pause import run_diagnostics  # noqa: E402
from plasticity_runner.probes.plasticity import plasticity_probe  # noqa: E402
from plasticity_runner.trainer import build_train_state, prefill  # noqa: E402

ARCHS = tuple(registry.parts("architecture"))  # every registered architecture, in its order
PARTS = ("probe", *DIAGNOSTICS)


def time_probe(cfg: Any, state: Any, steps: int) -> float:
    """Seconds of one pause's probe, from a fit of 0 and of ``steps`` steps, scaled."""
    inputs = state.replay.sample_obs(int(cfg.probe.num_inputs), torch.Generator(state.obs.device).manual_seed(0))
    net = state.agent.online

    def run(n: int) -> float:
        probe_cfg = copy.deepcopy(cfg.probe)
        OmegaConf.update(probe_cfg, "steps", n)
        OmegaConf.update(probe_cfg, "curve_every_steps", max(1, min(n, int(cfg.probe.curve_every_steps))))
        t0 = time.perf_counter()
        plasticity_probe(net, state.build_fresh, cfg.optimizer, inputs, probe_cfg, seed=0)
        return time.perf_counter() - t0

    run(1)  # warm-up: torch.func set-up
    fixed, fitted = run(0), run(steps)
    return fixed + max(fitted - fixed, 0.0) * int(cfg.probe.steps) / steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--parts", nargs="+", default=list(PARTS), help=f"subset of {' '.join(PARTS)}")
    p.add_argument("--probe-steps", type=int, default=20, help="probe steps timed, scaled to probe.steps")
    p.add_argument("--repeats", type=int, default=1, help="runs of each diagnostic (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load0 = os.getloadavg()
    print(
        f"torch {torch.__version__} | {torch.get_num_threads()} threads | device {device} | load avg "
        f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} | overrides: {' '.join(args.set) or 'none'}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    warm = True
    for arch in args.archs:
        cfg = compose_config(
            [
                f"device={device.type}",
                f"architecture={arch}",
                f"env.dataset={args.dataset}",
                "total_steps=0",
                "progress=none",
                *args.set,
            ]
        )
        state = build_train_state(cfg, device)
        prefill(state, int(cfg.agent.learning_starts))
        params = sum(p.numel() for p in state.agent.online.parameters())
        row: dict[str, Any] = {"arch": arch, "params": params}
        if warm and set(args.parts) & set(DIAGNOSTICS):
            warm_up_diagnostics(cfg, state)
            warm = False
        for part in args.parts:
            try:
                if part == "probe":
                    row["probe_s"] = time_probe(cfg, state, args.probe_steps)
                else:
                    values = []
                    for _ in range(args.repeats):
                        writer = CaptureWriter()
                        run_diagnostics(only_diagnostic(cfg, part), state, writer)
                        values.append(writer.scalars[("timing", f"{part}_s")])
                    row[f"{part}_s"] = statistics.median(values)
            except Exception as exc:  # noqa: BLE001 - report the part and go on
                row[f"{part}_error"] = f"{type(exc).__name__}: {exc}"[:200]
            print(f"  {arch} {part}: {row.get(f'{part}_s', row.get(f'{part}_error'))}", flush=True)
        diag = [row.get(f"{n}_s") for n in DIAGNOSTICS]
        if all(d is not None for d in diag) and row.get("probe_s"):
            row["diagnostics_over_probe"] = sum(diag) / row["probe_s"]
        rows.append(row)
        del state
    load1 = os.getloadavg()

    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    print("\n| arch | params | " + " | ".join(f"{n}_s" for n in PARTS) + " | diagnostics / probe |")
    print("|---|---|" + "---|" * len(PARTS) + "---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['params'] / 1e6:.2f} M | "
            + " | ".join(f(r.get(f"{n}_s")) for n in PARTS)
            + f" | {f(r.get('diagnostics_over_probe'))} |"
        )
    print(f"load avg at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    out = {
        "meta": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_avg_start": load0,
            "load_avg_end": load1,
            "overrides": args.set,
            "probe_steps_timed": args.probe_steps,
        },
        "rows": rows,
    }
    if args.json:
        tmp = Path(args.json + ".tmp")  # whole or not at all
        tmp.write_text(json.dumps(out, indent=1, default=str))
        os.replace(tmp, args.json)
    return out


if __name__ == "__main__":
    main()
