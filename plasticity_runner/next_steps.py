"""What to run next, printed when a run or a sweep ends: the report, the pandas line, the W&B upload,
and for an Optuna sweep where its results are.

``OptunaResults`` is a Hydra callback (``configs/config.yaml``: ``hydra.callbacks``): Hydra's
Optuna sweeper writes ``optimization_results.yaml`` into the sweep directory but does not say so.
The basic (summary) sweeper prints its own summary and these lines (``hydra_plugins/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OPTUNA_RESULTS = "optimization_results.yaml"  # written by hydra-optuna-sweeper into hydra.sweep.dir


def offline_wandb_runs(path: Path, sweep: bool) -> str | None:
    """The glob of the W&B offline runs under ``path`` (a run, or a sweep's runs), None when none."""
    pattern = "*/wandb/offline-run-*" if sweep else "wandb/offline-run-*"
    return f"{path}/{pattern}" if any(Path(path).glob(pattern)) else None


def next_commands(path: str | Path, sweep: bool = False) -> str:
    """The lines that tell a user what to do with the outputs at ``path``."""
    path = Path(path).resolve()
    lines = [
        "next:",
        f"  plasticity-report {path}          # figures, tables and an HTML page in {path / 'report'}",
        f"  python -c \"from plasticity_runner import load_sweep; df = load_sweep('{path}')\"  # every metric, one row each",
    ]
    wandb = offline_wandb_runs(path, sweep)
    if wandb:
        lines.append(f"  wandb sync {wandb}          # upload the offline W&B runs")
    return "\n".join(lines)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency of the package
    Callback = object  # type: ignore[assignment,misc]


class OptunaResults(Callback):  # type: ignore[misc,valid-type]
    """At the end of an Optuna sweep: where ``optimization_results.yaml`` is, and what to run next."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        target = str(config.hydra.sweeper.get("_target_", ""))
        if "optuna" not in target.lower():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        results = sweep_dir / OPTUNA_RESULTS
        where = str(results) if results.is_file() else f"{results} (not written: no trial completed)"
        print(f"plasticity-run: Optuna's best parameters and value: {where}")
        print(next_commands(sweep_dir, sweep=True))
