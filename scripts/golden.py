"""Golden runs: a small fixed set of runs whose metrics must not change when the code is restructured.

    python scripts/golden.py --write golden.json            # run the set, record every value
    python scripts/golden.py --check golden.json            # run it again, compare bit for bit

Each run goes through the real CLI (``python -m plasticity_runner``) in a fresh process on the CPU
with one torch thread, at tiny sizes, with the default diagnostics on. What is recorded per run:
every (phase, metric, step) value of its metric shards as an exact float (``float.hex``), except
the ``timing`` phase (wall-clock seconds), and the SHA-256 of every array in its ``arrays/*.npz``.

Each array is also summarised by its minimum, maximum and L2 norm (``arraystat:`` values) for
the tolerance mode below.

``--check`` prints, per run, the values that changed, vanished or were added. Changed or vanished
values fail (exit 1); added ones (a new metric) are listed and do not. The set covers several
architectures and interventions, both agents, a case study, MinAtar and Atari.

Two modes, and the check says which one it applied:

- ``exact``: every value bit for bit and every array's SHA-256. Values are bit-identical only on the
  same CPU, torch build and thread count, so this is the mode on the machine that recorded the
  baseline: ``--write`` stores that machine's facts under ``"_machine"`` (CPU model, family, model,
  stepping and torch's CPU capability; torch version and commit; torch threads), and ``--check``
  picks ``exact`` when they equal this machine's.
- ``rtol``: on any other machine (or a baseline whose machine is ``unknown``), every value and
  every ``arraystat:`` value must agree within ``--rtol`` relative (``math.isclose``, NaN equal to
  NaN); the arrays' hashes are not comparable and are only counted.

``--exact`` or ``--rtol R`` forces a mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The sizes are frozen here on purpose (they resemble tests/conftest.TINY and the test files' tiny
# presets): the recording must not move when a test's budget is edited.
COMMON = ["device=cpu", "torch_threads=1", "progress=none"]
TINY = [
    "total_steps=40",
    "log_every_steps=10",
    "probe.every_steps=20",
    "probe.steps=10",
    "probe.num_targets=3",
    "probe.batch_size=16",
    "probe.num_inputs=64",
    "probe.curve_every_steps=5",
    "agent.batch_size=32",
    "agent.learning_starts=64",
    "agent.target_update_steps=10",
    "agent.epsilon_decay_steps=20",
    "diagnostics.statistics.num_inputs=64",
    "diagnostics.curvature.num_inputs=64",
    "diagnostics.curvature.iterations=4",
    "diagnostics.curvature.num_vectors=1",
    "diagnostics.curvature.grid_points=64",
    "diagnostics.gradcov.k=32",
    "diagnostics.gradcov.num_clusters=4",
]

GOLDEN: dict[str, list[str]] = {
    "mlp_none": TINY + ["architecture.width=32"],
    "mlp_sgd_double_reset": TINY
    + [
        "architecture.width=32",
        "optimizer=sgd",
        "agent=double_dqn",
        "intervention=[weight_decay,shrink_perturb,reset_last_layer,reset_optimizer]",
    ],
    "mlp_redo_injection_random_label": TINY
    + [
        "architecture.width=32",
        "env.task=random_label",
        "intervention=[redo,plasticity_injection]",
        "intervention.redo.every_steps=10",
        "intervention.plasticity_injection.at_step=25",
    ],
    "cnn_layer_norm_two_hot": TINY
    + [
        "architecture=cnn",
        "architecture.channels=3",
        "architecture.hidden=8",
        "intervention=[layer_norm,two_hot]",
    ],
    "vit_crelu_spectral": TINY
    + [
        "architecture=vit",
        "architecture.dim=8",
        "architecture.ff_dim=16",
        "architecture.num_heads=2",
        "intervention=[crelu,spectral_norm]",
    ],
    "resnet18_none": TINY + ["architecture=resnet18", "architecture.width=2"],
    "minatar_breakout": TINY
    + [
        "env=minatar",
        "env.game=breakout",
        "architecture=minatar_cnn",
        "architecture.channels=3",
        "architecture.hidden=8",
    ],
    "memorization": [
        "env=memorization",
        "env.num_images=64",
        "env.iteration_steps=5",
        "env.num_iterations=3",
        "env.batch_size=16",
        "env.eval_samples=128",
        "architecture.width=32",
    ],
    "brownian": [
        "experiment=fig2_brownian",
        "env.dataset=digits",
        "total_steps=40",
        "log_every_steps=10",
        "env.batch_size=32",
        "env.target_update_steps=10",
        "env.measure_every_steps=20",
        "architecture.width=32",
        "diagnostics.curvature.num_inputs=64",
        "diagnostics.curvature.iterations=8",
        "diagnostics.curvature.grid_points=64",
        "diagnostics.gradcov.k=32",
        "diagnostics.gradcov.num_clusters=4",
    ],
    "atari_ln": [
        "experiment=atari_ln",
        "total_steps=12",
        "log_every_steps=6",
        "probe.every_steps=6",
        "probe.steps=3",
        "probe.num_inputs=32",
        "probe.batch_size=8",
        "probe.num_targets=2",
        "agent.learning_starts=64",
        "agent.batch_size=8",
        "agent.target_update_frames=80",
        "env.eval_every_steps=12",
        "env.eval_frames=1600",
        "env.max_episode_frames=400",
        "diagnostics.curvature.num_inputs=16",
        "diagnostics.curvature.iterations=3",
        "diagnostics.curvature.grid_points=16",
        "diagnostics.gradcov.k=8",
        "diagnostics.gradcov.num_clusters=2",
        "diagnostics.statistics.num_inputs=16",
    ],
}


MACHINE_KEY = "_machine"  # the baseline's record of the machine that wrote it (not a golden run)
UNKNOWN = "unknown"
THREADS = int(next(o for o in COMMON if o.startswith("torch_threads=")).split("=")[1])
# Across machines, rounding differences grow through training: between two x86-64 machines (same torch
# build, one thread) most values moved by < 1e-3 relative, the probe's values by up to 7e-2 (atari_ln's
# probe/plasticity, a difference of two losses after the probe's training). The default admits that.
DEFAULT_RTOL = 0.1


def cpu_model() -> str:
    """The CPU's model string, with family, model and stepping where ``/proc/cpuinfo`` has them (a
    virtual machine may report only ``AMD EPYC``)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine() or UNKNOWN
    detail = ", ".join(f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if k in info)
    return f"{name} ({detail})" if detail else name


def machine() -> dict[str, str]:
    """The facts that decide whether two machines give bit-identical values."""
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": f"{torch.__version__} ({torch.version.git_version})",
        "threads": str(THREADS),
    }


def check_mode(
    recorded: dict[str, str] | None, here: dict[str, str], rtol: float | None, force_exact: bool
) -> tuple[str, float | None, str]:
    """``("exact", None, why)`` or ``("rtol", rtol, why)``: exact when forced, or when the recording
    machine is known and equals this one; else rtol (``DEFAULT_RTOL`` unless given)."""
    if force_exact:
        return "exact", None, "--exact given"
    if rtol is not None:
        return "rtol", rtol, "--rtol given"
    recorded = recorded or {}
    unknown = sorted(k for k in here if recorded.get(k, UNKNOWN) == UNKNOWN)
    if unknown:
        return (
            "rtol",
            DEFAULT_RTOL,
            (
                f"the baseline does not record the recording machine's {', '.join(unknown)} "
                "(re-record it with --write to check bit for bit on that machine)"
            ),
        )
    differ = {k: (recorded[k], here[k]) for k in here if recorded[k] != here[k]}
    if differ:
        return (
            "rtol",
            DEFAULT_RTOL,
            "recorded on another machine: " + "; ".join(f"{k} {a!r} here {b!r}" for k, (a, b) in differ.items()),
        )
    return (
        "exact",
        None,
        "this machine is the recording machine (" + "; ".join(f"{k} {v}" for k, v in here.items()) + ")",
    )


def exact(value: float) -> str:
    return "nan" if math.isnan(value) else float(value).hex()


def record(run_dir: Path) -> dict[str, str]:
    """Every non-timing metric value of a run (exact) and the SHA-256 of each array it saved."""
    import numpy as np
    import pandas as pd

    out: dict[str, str] = {}
    shards = sorted((run_dir / "metrics").glob("*.parquet"))
    if not shards:
        raise RuntimeError(f"{run_dir}: no metric shards")
    df = pd.concat([pd.read_parquet(p) for p in shards])
    df = df[df.phase != "timing"]
    for phase, metric, step, value in df[["phase", "metric", "step", "value"]].itertuples(index=False):
        out[f"{phase}/{metric}@{int(step)}"] = exact(float(value))
    for npz in sorted((run_dir / "arrays").glob("*.npz")):
        with np.load(npz) as arrays:
            for key in sorted(arrays.files):
                a = np.ascontiguousarray(arrays[key])
                out[f"array:{npz.stem}/{key}"] = hashlib.sha256(
                    str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()
                ).hexdigest()
                if a.size and np.issubdtype(a.dtype, np.number):
                    f = a.astype(np.float64)
                    for stat, v in (("min", f.min()), ("max", f.max()), ("l2", np.sqrt(np.sum(f * f)))):
                        out[f"arraystat:{npz.stem}/{key}/{stat}"] = exact(float(v))
    return out


def _float(value: str) -> float:
    return math.nan if value == "nan" else float.fromhex(value)


def close(want: str, got: str, rtol: float) -> bool:
    """Two recorded values agree within ``rtol`` (both exact floats; NaN equals NaN)."""
    a, b = _float(want), _float(got)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol)


def relative_change(want: str, got: str) -> float:
    """``|got - want| / max(|want|, |got|)`` (0 when equal, inf when one is NaN)."""
    a, b = _float(want), _float(got)
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b)) if not (math.isnan(a) or math.isnan(b)) else math.inf


def run_all(names: list[str], work: Path) -> dict[str, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = {}
    for name in names:
        run_dir = work / name
        cmd = [sys.executable, "-m", "plasticity_runner", *GOLDEN[name], *COMMON, f"hydra.run.dir={run_dir}"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"golden run {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[name] = record(run_dir)
        print(f"[golden] {name}: {len(results[name])} values", flush=True)
    return results


def compare(want: dict[str, dict[str, str]], got: dict[str, dict[str, str]], rtol: float | None = None) -> bool:
    """Print per run what changed, vanished or was added; False when a value changed or vanished.
    ``rtol`` None: bit for bit; else values within ``rtol`` relative, array hashes only counted."""
    ok = True
    for name in want:
        w, g = want[name], got.get(name, {})
        missing = sorted(k for k in w if k not in g)
        added = sorted(k for k in g if k not in w)
        if rtol is None:
            changed = sorted(k for k in w if k in g and w[k] != g[k])
            note = ""
        else:
            hashes = [k for k in w if k.startswith("array:")]
            changed = sorted(
                k for k in w if k in g and not k.startswith("array:") and w[k] != g[k] and not close(w[k], g[k], rtol)
            )
            moved = sum(1 for k in w if k in g and not k.startswith("array:") and w[k] != g[k]) - len(changed)
            hashes_differ = sum(1 for k in hashes if k in g and w[k] != g[k])
            worst = max(
                ((relative_change(w[k], g[k]), k) for k in w if k in g and not k.startswith("array:")),
                default=(0.0, ""),
            )
            note = (
                f", {moved} within rtol, largest relative change {worst[0]:.2g}"
                f"{f' ({worst[1]})' if worst[0] else ''}, {hashes_differ} of {len(hashes)} array hashes "
                "differ (not compared)"
            )
            if hashes and not any(k.startswith("arraystat:") for k in w):
                print(f"[golden] {name}: the baseline has no arraystat values: its arrays go unchecked in rtol mode")
        status = "identical" if not (changed or missing) else "DIFFERS"
        if rtol is not None and status == "identical":
            status = f"within rtol={rtol:g}"
        print(
            f"[golden] {name}: {status} ({len(w) - len(changed) - len(missing)} equal, {len(changed)} changed, "
            f"{len(missing)} missing, {len(added)} added{note})"
        )
        for k in changed[:20]:
            print(f"    changed {k}: {w[k]} -> {g[k]}")
        for k in missing[:20]:
            print(f"    missing {k}")
        for k in added[:20]:
            print(f"    added   {k}")
        ok &= not (changed or missing)
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="JSON", help="run the golden set and record its values")
    g.add_argument("--check", metavar="JSON", help="run the golden set and compare with a recording")
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ",".join(GOLDEN))
    m = p.add_mutually_exclusive_group()
    m.add_argument("--exact", action="store_true", help="--check bit for bit, whatever machine recorded the baseline")
    m.add_argument(
        "--rtol",
        type=float,
        default=None,
        help=f"--check within this relative tolerance (default on a machine other than the "
        f"recording one: {DEFAULT_RTOL:g})",
    )
    args = p.parse_args(argv)
    if args.rtol is not None and not args.rtol > 0:
        p.error(f"--rtol must be positive, got {args.rtol}")
    names = args.only.split(",") if args.only else list(GOLDEN)
    unknown = [n for n in names if n not in GOLDEN]
    if unknown:
        p.error(f"unknown golden runs: {unknown}")
    here = machine()
    if args.check:
        baseline = json.loads(Path(args.check).read_text())
        mode, rtol, why = check_mode(baseline.get(MACHINE_KEY), here, args.rtol, args.exact)
        print(f"[golden] mode: {mode}{'' if rtol is None else f' (rtol={rtol:g})'}: {why}", flush=True)
    with tempfile.TemporaryDirectory(prefix="golden_") as work:
        got = run_all(names, Path(work))
    if args.write:
        if set(names) != set(GOLDEN):
            p.error("--write records the whole set (no --only)")
        path = Path(args.write)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({MACHINE_KEY: here, **got}, indent=1, sort_keys=True))
        os.replace(tmp, path)
        print(f"[golden] wrote {path} (machine: {here})")
        return 0
    want = {k: v for k, v in baseline.items() if k in names}
    ok = compare(want, got, rtol)
    print(f"[golden] {'passed' if ok else 'FAILED'} in {mode} mode{'' if rtol is None else f' (rtol={rtol:g})'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
