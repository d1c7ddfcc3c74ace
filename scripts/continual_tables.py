"""Tables of a continual-protocol sweep (docs/reproduction.md): each task's own measure and the
plasticity probe, per intervention, mean and range over seeds.

    python scripts/continual_tables.py <sweep dir> [<sweep dir> ...]

Prints, per intervention set: the protocol's measure (``online_accuracy`` or ``online_error``,
phase ``task``) of the first task, the middle one and the last one; ``heldout_accuracy`` of the
first and last task where written; ``plasticity`` (P = baseline - probe loss) at step 0 and at
the last pause, and ``P(T) - P(0)``; and, over all runs, the Pearson correlation between
``P(T) - P(0)`` and the change of the measure from the first task to the last.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from plasticity_runner.metrics import load_sweep


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, run in df.groupby("run_id"):
        tasks = run[run.phase == "task"].pivot(index="step", columns="metric", values="value").sort_index()
        measure = "online_accuracy" if "online_accuracy" in tasks else "online_error"
        probe = run[(run.phase == "probe") & (run.metric == "plasticity")].sort_values("step")
        row = {
            "interventions": run["interventions"].iloc[0],
            "seed": int(run["seed"].iloc[0]),
            "measure": measure,
            "first": tasks[measure].iloc[0],
            "middle": tasks[measure].iloc[len(tasks) // 2],
            "last": tasks[measure].iloc[-1],
            "tasks": len(tasks),
            "P0": probe.value.iloc[0],
            "PT": probe.value.iloc[-1],
        }
        if "heldout_accuracy" in tasks:
            row["heldout_first"], row["heldout_last"] = tasks.heldout_accuracy.iloc[0], tasks.heldout_accuracy.iloc[-1]
        rows.append(row)
    out = pd.DataFrame(rows)
    out["dP"] = out.PT - out.P0
    out["d_measure"] = out["last"] - out["first"]
    return out


def fmt(values: pd.Series) -> str:
    return f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]"


def main(paths: list[str]) -> None:
    runs = pd.concat([per_run(load_sweep(p)) for p in paths], ignore_index=True)
    measure = runs.measure.iloc[0]
    cols = (
        ["first", "middle", "last"] + [c for c in ("heldout_first", "heldout_last") if c in runs] + ["P0", "PT", "dP"]
    )
    print(f"measure: {measure}; {runs.tasks.iloc[0]} tasks; mean [min, max] over seeds")
    print("| interventions | n | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, group in runs.groupby("interventions", sort=False):
        print(f"| {name} | {len(group)} | " + " | ".join(fmt(group[c]) for c in cols) + " |")
    r = np.corrcoef(runs.dP, runs.d_measure)[0, 1]
    print(
        f"\nPearson r between P(T) - P(0) and {measure}(last task) - {measure}(first task) over {len(runs)} runs: {r:.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
