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
- ``inactive_intervention_error``: options of an intervention that is not active
  (``intervention.redo.tau=0.2`` without ``redo``) make Hydra fail with a bare AssertionError; this
  check names the key and says how to activate the intervention.
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


# ------------------------------------------------------------------------------ interventions


def _composable(overrides: list[Any]) -> list[str] | None:
    """The overrides as compose() takes them: sweeps cut to their first value, hydra.* dropped."""
    out = []
    for o in overrides:
        key = o.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                return None
            first = next(iter(o.sweep_string_iterator()), None)
            if first is None:
                return None
            out.append(f"{key}={first}")
        else:
            out.append(o.input_line)
    return out


def inactive_intervention_error(argv: list[str]) -> str | None:
    """The error for an option override of an intervention that is not active, or None.

    Only looks when an override sets ``intervention.<name>.<option>``; then composes the config
    without those overrides (a sweep at its first value) to see which interventions are active.
    Anything it cannot decide is left to Hydra.
    """
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
        if args.config_name or args.config_path or args.config_dir:
            return None
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (SystemExit, Exception):
        return None
    options = [o for o in overrides if o.key_or_group.lstrip("+~").split(".")[0] == "intervention"
               and o.key_or_group.count(".") >= 2 and not o.is_delete()]
    if not options:
        return None
    rest = _composable([o for o in overrides if o not in options])
    if rest is None:
        return None
    from .cli import compose_config

    try:
        cfg = compose_config(rest)
    except Exception:
        return None
    active = [k for k, v in cfg.intervention.items() if v is not None]
    for o in options:
        key = o.key_or_group.lstrip("+~")
        name = key.split(".")[1]
        if name not in cfg.intervention or name in active:
            continue  # unknown (Hydra names it) or active (fine)
        listed = ",".join([*active, name])
        now = ", ".join(active) or "none"
        return (
            f"config key '{key}': the intervention '{name}' is not active (active: {now}), "
            f"so it has no options to set; activate it with intervention=[{listed}] "
            f"or add it to the active ones with +intervention={name}"
        )
    return None
