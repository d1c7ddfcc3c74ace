"""Golden runs: a small fixed set of runs whose metrics must not change when the code is restructured.

    python scripts/golden.py --write golden.json            # run the set, record every value
    python scripts/golden.py --check golden.json            # run it again, compare bit for bit

Each run goes through the real CLI (``python -m plasticity_runner``) in a fresh process on the CPU
with one torch thread, at tiny sizes, with the default diagnostics on. What is recorded per run:
every (phase, metric, step) value of its metric shards as an exact float (``float.hex``), except
the ``timing`` phase (wall-clock seconds), and the SHA-256 of every array in its ``arrays/*.npz``.

``--check`` prints, per run, the values that changed, vanished or were added. Changed or vanished
values fail (exit 1); added ones (a new metric) are listed and do not. The set covers several
architectures and interventions, both agents, a case study, MinAtar and Atari.

Values are bit-identical only on the same machine type, torch build and thread count: record and
check on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The sizes are frozen here on purpose (they resemble tests/conftest.TINY and the test files' tiny
# presets): the recording must not move when a test's budget is edited.
COMMON = ["device=cpu", "torch_threads=1", "progress=none"]
TINY = [
    "total_steps=40", "log_every_steps=10", "probe.every_steps=20", "probe.steps=10",
    "probe.num_targets=3", "probe.batch_size=16", "probe.num_inputs=64", "probe.curve_every_steps=5",
    "agent.batch_size=32", "agent.learning_starts=64", "agent.target_update_steps=10",
    "agent.epsilon_decay_steps=20",
    "diagnostics.statistics.num_inputs=64", "diagnostics.curvature.num_inputs=64",
    "diagnostics.curvature.iterations=4", "diagnostics.curvature.num_vectors=1",
    "diagnostics.curvature.grid_points=64", "diagnostics.gradcov.k=32", "diagnostics.gradcov.num_clusters=4",
]

GOLDEN: dict[str, list[str]] = {
    "mlp_none": TINY + ["architecture.width=32"],
    "mlp_sgd_double_reset": TINY + [
        "architecture.width=32", "optimizer=sgd", "agent=double_dqn",
        "intervention=[weight_decay,shrink_perturb,reset_last_layer,reset_optimizer]",
    ],
    "mlp_redo_injection_random_label": TINY + [
        "architecture.width=32", "env.task=random_label", "intervention=[redo,plasticity_injection]",
        "intervention.redo.every_steps=10", "intervention.plasticity_injection.at_step=25",
    ],
    "cnn_layer_norm_two_hot": TINY + [
        "architecture=cnn", "architecture.channels=3", "architecture.hidden=8",
        "intervention=[layer_norm,two_hot]",
    ],
    "vit_crelu_spectral": TINY + [
        "architecture=vit", "architecture.dim=8", "architecture.ff_dim=16", "architecture.num_heads=2",
        "intervention=[crelu,spectral_norm]",
    ],
    "resnet18_none": TINY + ["architecture=resnet18", "architecture.width=2"],
    "minatar_breakout": TINY + [
        "env=minatar", "env.game=breakout", "architecture=minatar_cnn", "architecture.channels=3",
        "architecture.hidden=8",
    ],
    "memorization": [
        "env=memorization", "env.num_images=64", "env.iteration_steps=5", "env.num_iterations=3",
        "env.batch_size=16", "env.eval_samples=128", "architecture.width=32",
    ],
    "brownian": [
        "experiment=fig2_brownian", "env.dataset=digits", "total_steps=40", "log_every_steps=10", "env.batch_size=32",
        "env.target_update_steps=10", "env.measure_every_steps=20", "architecture.width=32",
        "diagnostics.curvature.num_inputs=64", "diagnostics.curvature.iterations=8",
        "diagnostics.curvature.grid_points=64", "diagnostics.gradcov.k=32", "diagnostics.gradcov.num_clusters=4",
    ],
    "atari_ln": [
        "experiment=atari_ln", "total_steps=12", "log_every_steps=6", "probe.every_steps=6", "probe.steps=3",
        "probe.num_inputs=32", "probe.batch_size=8", "probe.num_targets=2", "agent.learning_starts=64",
        "agent.batch_size=8", "agent.target_update_frames=80", "env.eval_every_steps=12",
        "env.eval_frames=1600", "env.max_episode_frames=400", "diagnostics.curvature.num_inputs=16",
        "diagnostics.curvature.iterations=3", "diagnostics.curvature.grid_points=16",
        "diagnostics.gradcov.k=8", "diagnostics.gradcov.num_clusters=2", "diagnostics.statistics.num_inputs=16",
    ],
}


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
                out[f"array:{npz.stem}/{key}"] = hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()
    return out


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


def compare(want: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> bool:
    ok = True
    for name in want:
        w, g = want[name], got.get(name, {})
        changed = sorted(k for k in w if k in g and w[k] != g[k])
        missing = sorted(k for k in w if k not in g)
        added = sorted(k for k in g if k not in w)
        status = "identical" if not (changed or missing) else "DIFFERS"
        print(f"[golden] {name}: {status} ({len(w) - len(changed) - len(missing)} equal, {len(changed)} changed, "
              f"{len(missing)} missing, {len(added)} added)")
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
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(GOLDEN)
    unknown = [n for n in names if n not in GOLDEN]
    if unknown:
        p.error(f"unknown golden runs: {unknown}")
    with tempfile.TemporaryDirectory(prefix="golden_") as work:
        got = run_all(names, Path(work))
    if args.write:
        path = Path(args.write)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(got, indent=1, sort_keys=True))
        os.replace(tmp, path)
        print(f"[golden] wrote {path}")
        return 0
    want = json.loads(Path(args.check).read_text())
    want = {k: v for k, v in want.items() if k in names}
    return 0 if compare(want, got) else 1


if __name__ == "__main__":
    sys.exit(main())
