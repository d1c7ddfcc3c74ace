"""What ``plasticity-run`` adds around Hydra so that bad input and faults end in a clear error.

- ``RunFailed``: a run of a multirun that failed with a known cause (config error, unusable run
  directory). It fails that run alone; the sweep goes on, and the sweeper of
  ``hydra_plugins/plasticity_runner_sweeper`` exits non-zero at the end with a summary.
- ``CheckOutputDir``: a Hydra callback that checks, before Hydra creates it, that the run (or sweep)
  directory can be created and written; otherwise ``Error writing the run's outputs: ...``, exit 3.
- ``write_hydra_record``: Hydra's record of a run (``.hydra/config.yaml``, ``hydra.yaml``,
  ``overrides.yaml``), written atomically once the trainer has accepted the run directory. Hydra's
  own writer is switched off (``hydra.output_subdir: null`` in ``configs/config.yaml``) because it
  writes before the run starts, so a refused restart would rewrite the record of the run it refused.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .metrics import atomic_write_text

EXIT_CONFIG = 2  # a config error: nothing was trained, nothing written
EXIT_OUTPUTS = 3  # the run directory cannot be written or read
RECORD_DIR = ".hydra"  # where the run's Hydra record goes (Hydra's default output_subdir)


class RunFailed(Exception):
    """A run of a multirun failed with a known cause; ``exit_code`` is what a single run exits with."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(exit_code, message)  # both in args: the exception pickles (submitit)
        self.exit_code, self.message = int(exit_code), str(message)

    def __str__(self) -> str:
        return self.message


def fail(exit_code: int, message: str) -> None:
    """End this run with ``message`` on stderr: exit ``exit_code`` in a single run; in a multirun
    raise ``RunFailed`` so that only this run fails and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    print(message, file=sys.stderr)
    sys.stderr.flush()
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise RunFailed(exit_code, message)
    sys.exit(exit_code)


# ------------------------------------------------------------------------------ output directory


def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot hold a run's outputs (None: it can): create it, then write a file in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        return f"cannot create or write the run directory {path}: {reason}{where}"
    return None


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency of the package
    Callback = object  # type: ignore[assignment,misc]


class CheckOutputDir(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: refuse an unusable ``hydra.run.dir`` / ``hydra.sweep.dir`` with exit 3.

    Runs before Hydra creates the directory (which would otherwise fail with its own traceback).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        problem = output_dir_problem(str(OmegaConf.select(config, key)))
        if problem is not None:
            # SystemExit is not an Exception: it passes Hydra's callback wrapper and ends the process
            print(f"Error writing the run's outputs: {problem} (set by {key})", file=sys.stderr)
            sys.exit(EXIT_OUTPUTS)


# ------------------------------------------------------------------------------ the run's record


def write_hydra_record(run_dir: str | os.PathLike, task_cfg: DictConfig) -> None:
    """Write ``<run_dir>/.hydra/{config,hydra,overrides}.yaml`` as Hydra would, each atomically."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}, as Hydra saves it
    record = Path(run_dir) / RECORD_DIR
    files = {
        "config.yaml": OmegaConf.to_yaml(task_cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
    }
    for name, text in files.items():
        atomic_write_text(record / name, text)
