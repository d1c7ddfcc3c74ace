"""``plasticity-run``: compose the Hydra config, validate it, hand it to the program its env picks.

The same app runs as ``python -m plasticity_runner``. Configs are found next to the installed
package (``plasticity_runner/configs``, shipped from the repository's top-level ``configs/``) or,
in an editable install, at the repository's ``configs/``; the working directory does not matter.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .completion import completing, register_snapshot
from .hydra_glue import EXIT_CONFIG, EXIT_OUTPUTS, fail, write_hydra_record
from .metrics import MetricsWriteError, RunFileError

log = logging.getLogger("plasticity_runner")


def config_dir() -> str:
    """Absolute path of the primary config directory."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"plasticity-runner configs not found next to {here} (looked for configs/config.yaml)")


if completing(sys.argv[1:]):
    register_snapshot()  # a TAB: the schema's snapshot, no torch (completion.py)
else:
    from .config import register_configs

    register_configs()


def register_sweeper() -> None:
    """Register the summary sweeper (``hydra_plugins/plasticity_runner_sweeper``) with Hydra by hand:
    Hydra finds plugins by scanning the ``hydra_plugins`` namespace package, and an editable install
    (``pip install -e .``) maps that package through an import hook the scan cannot see."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: its scan re-imports Hydra's core plugins (BasicSweeper among them)
    from hydra_plugins.plasticity_runner_sweeper.summary_sweeper import SummarySweeper

    plugins.register(SummarySweeper)
    # importing it also made it the default ``hydra/sweeper: basic`` (summary_sweeper.py)


register_sweeper()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``plasticity-run <overrides>`` would run with, for scripts and tests."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    """One run; returns its ``objective`` (None when unset) for a sweeper such as Optuna's."""
    from .checkpoint import CorruptCheckpointError
    from .config import ConfigError
    from .objective import ObjectiveError, for_sweeper, objective_value
    from .population import enabled, train_population
    from .train_state import DeviceMismatchError
    from .trainer import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    direction = HydraConfig.get().sweeper.get("direction")  # set by an optimising sweeper (Optuna)
    if direction is not None and cfg.get("objective") is None:
        fail(
            EXIT_CONFIG,
            "Error in config: config key 'objective': the sweeper optimises each run's objective "
            "(direction " + str(direction) + "); set objective=<phase>/<metric>@<reduction>, e.g. "
            "objective=probe/plasticity@change",
        )
    try:
        # Hydra's record (.hydra/) is written only once the run directory has accepted the config
        on_start = lambda: write_hydra_record(run_dir, cfg)  # noqa: E731
        if enabled(cfg):  # population.seeds: the members in one process (population.py)
            summary = train_population(cfg, run_dir, on_start, member_start=write_hydra_record)
        else:
            summary = train(cfg, run_dir, on_start=on_start)
    except ConfigError as exc:
        # Hydra reports typos and wrong types itself; range errors end here, before any metric.
        fail(EXIT_CONFIG, f"Error in config: {exc}")
    except MetricsWriteError as exc:
        fail(EXIT_OUTPUTS, f"Error writing the run's outputs: {exc}")
    except (RunFileError, CorruptCheckpointError, DeviceMismatchError) as exc:
        fail(EXIT_OUTPUTS, f"Error reading the run's outputs: {exc}")
    print(f"plasticity-run: run {summary['run_id']} {summary['status']}; outputs in {run_dir.resolve()}")
    if HydraConfig.get().mode == RunMode.RUN:  # a sweep says it once, at its end (hydra_plugins/)
        from .next_steps import next_commands

        print(next_commands(run_dir))
    if cfg.get("objective") is None:
        return None
    try:
        value = objective_value(run_dir, cfg.objective)
        print(f"plasticity-run: objective {cfg.objective} = {value}")
        value = for_sweeper(value, direction)  # NaN (diverged): the worst value of the direction
    except ObjectiveError as exc:
        fail(EXIT_CONFIG, f"Error in config: config key 'objective': {exc}")
    return value


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
    options = [
        o
        for o in overrides
        if o.key_or_group.lstrip("+~").split(".")[0] == "intervention"
        and o.key_or_group.count(".") >= 2
        and not o.is_delete()
    ]
    if not options:
        return None
    rest = _composable([o for o in overrides if o not in options])
    if rest is None:
        return None
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


def main() -> None:
    from .override_check import unknown_override_error

    problem = unknown_override_error(sys.argv[1:], config_dir()) or inactive_intervention_error(sys.argv[1:])
    if problem is not None:
        print(f"Error in config: {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    _app()


if __name__ == "__main__":
    main()
