"""Time ``load_sweep`` on a fabricated sweep: wall time and peak memory (RSS) of the reader.

    python scripts/bench_load_sweep.py --runs 2000 --shards 4 --rows 50 --dir /tmp/sweep
    python scripts/bench_load_sweep.py --dir /tmp/sweep --no-fabricate   # time again, same sweep

The sweep: ``--runs`` run directories, each a ``run.json`` with the flattened config of the default
run (112 keys: ints, floats, strings, booleans, nulls) varied over seed, width and learning rate,
and ``--shards`` metrics shards of ``--rows`` rows (metric names of a real pause). Fabrication runs
in this process; the timing (wall and CPU seconds: on a shared machine the CPU time is the
comparable one) runs in a fresh child process (``--time-only``), so the peak RSS is the
reader's own (Python, pandas and pyarrow included). Point ``PYTHONPATH`` at another checkout to time
its ``load_sweep`` on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def default_config() -> dict:
    from plasticity_runner.cli import compose_config
    from plasticity_runner.lifecycle import run_config
    from plasticity_runner.metrics import flatten

    return flatten(run_config(compose_config(["device=cpu"])))


def fabricate(root: Path, runs: int, shards: int, rows: int, config: dict | None = None, seed: int = 0) -> None:
    """``runs`` run directories under ``root`` (``<root>/<i>/``), ``shards`` shards of ``rows`` rows each."""
    from plasticity_runner import metrics

    config = dict(config if config is not None else default_config())
    rng = np.random.default_rng(seed)
    names = [f"metric_{j:03d}" for j in range(rows)]
    phases = ["probe", "statistics", "train", "timing"]
    for i in range(runs):
        run_dir = root / str(i)
        (run_dir / metrics.METRICS_DIR).mkdir(parents=True, exist_ok=True)
        cfg = {
            **config,
            "seed": i % 5,
            "architecture.width": [64, 128, 256, 512][(i // 5) % 4],
            "optimizer.lr": [1e-4, 3e-4][(i // 20) % 2],
        }
        run_id = f"run-{seed}-{i:05d}"
        (run_dir / metrics.RUN_FILE).write_text(json.dumps({"run_id": run_id, "config": cfg, "status": "complete"}))
        for k in range(shards):
            step = k * 1000
            table = pa.Table.from_arrays(
                [
                    pa.array([run_id] * rows),
                    pa.array(np.full(rows, step, np.int64)),
                    pa.array([phases[j % 4] for j in range(rows)]),
                    pa.array(names),
                    pa.array(rng.standard_normal(rows)),
                    pa.array(rng.random(rows)),
                ],
                schema=metrics.SCHEMA,
            )
            path = run_dir / metrics.METRICS_DIR / metrics.shard_name(step, "parquet")
            if hasattr(metrics, "write_shard"):
                metrics.write_shard(path, table)
            else:
                import pyarrow.parquet as pq

                pq.write_table(table, path)


def time_once(root: Path) -> dict:
    import warnings

    t0 = time.perf_counter()
    from plasticity_runner.metrics import load_sweep

    t_import = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load_sweep(root)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "load_avg_1min": os.getloadavg()[0],
        "import_s": round(t_import, 2),
        "peak_rss_mb": round(peak_mb),
        "rows": len(frame),
        "columns": frame.shape[1],
        "runs": int(frame["run_dir"].nunique()),
        "frame_mb": round(frame.memory_usage(deep=False).sum() / 2**20),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--shards", type=int, default=4, help="shards per run (default 4: 8000 for 2000 runs)")
    p.add_argument("--rows", type=int, default=50, help="rows per shard")
    p.add_argument("--dir", type=Path, required=True, help="where the sweep is (fabricated unless --no-fabricate)")
    p.add_argument("--no-fabricate", action="store_true")
    p.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.time_only:
        print(json.dumps(time_once(args.dir)))
        return
    if not args.no_fabricate:
        t0 = time.perf_counter()
        fabricate(args.dir, args.runs, args.shards, args.rows)
        print(
            f"fabricated {args.runs} runs x {args.shards} shards x {args.rows} rows in "
            f"{time.perf_counter() - t0:.0f} s under {args.dir}",
            file=sys.stderr,
        )
    out = subprocess.run(
        [sys.executable, __file__, "--dir", str(args.dir), "--time-only"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if out.returncode:
        sys.exit(out.stderr)
    print(out.stdout.strip())


if __name__ == "__main__":
    main()
