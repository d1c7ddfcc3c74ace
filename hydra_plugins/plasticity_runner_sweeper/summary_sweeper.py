"""Hydra's basic sweeper, except that a failed run does not hide the others' failures.

Hydra's ``BasicSweeper`` re-raises the first failed run of a batch, so ``plasticity-run -m`` shows
one failure and exits 1. ``SummarySweeper`` (the default: the ``hydra/sweeper: basic`` option, stored below over Hydra's own)
launches every batch whatever failed, then prints one line per failed run (its job number, the
swept overrides, its error, its directory) and exits non-zero: with the exit status of the failed
runs when they all share one (2: config error, 3: outputs; ``plasticity_runner.hydra_glue``),
else 1. Every launcher works with it (basic, ``hydra/launcher=local``, ``hydra/launcher=slurm``):
a failed run comes back as a FAILED JobReturn holding its exception. A submitit job that ended
without a result (killed: SIGKILL, out of memory, ``scancel``) makes the submitit launcher raise
submitit's ``UncompletedJobError`` for the whole batch; here it becomes that job's FAILED JobReturn
(``JobKilled``: job number, overrides, run directory), and the other jobs' results are kept.
Every sweep ends with one line (jobs complete, failed, skipped because their run had finished
before, and the sweep directory) and the commands to run next (``plasticity_runner.next_steps``).

Kept free of plasticity_runner imports: Hydra imports every module under ``hydra_plugins`` at start.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict


class JobKilled(RuntimeError):
    """A submitit job that ended without a result (killed); the message is submitit's first line."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def describe_failure(ret: JobReturn, swept: set[str]) -> tuple[int, str]:
    """Exit status and one summary line of a failed run."""
    exc = ret._return_value
    code = getattr(exc, "exit_code", None)
    shown = [o for o in (ret.overrides or []) if o.split("=", 1)[0].lstrip("+~") in swept] or list(ret.overrides or [])
    try:
        num = ret.hydra_cfg.hydra.job.num
        where = ret.hydra_cfg.hydra.runtime.output_dir
    except Exception:  # noqa: BLE001 - a JobReturn without its Hydra config: say less
        num, where = "?", "?"
    if isinstance(code, int):
        what = f"exit {code}: {exc}"
    else:
        code = 1
        what = f"{type(exc).__name__}: {_first_line(exc)}" if isinstance(exc, BaseException) else repr(exc)
    return code, f"  #{num} {' '.join(shown)}  ->  {what}\n      run directory: {where}"


def summary(failed: Sequence[JobReturn], swept: set[str], total: int) -> tuple[int, str]:
    """The multirun's exit status and its summary of the failed runs (one line each)."""
    described = [describe_failure(r, swept) for r in failed]
    codes = {code for code, _ in described}
    code = codes.pop() if len(codes) == 1 else 1
    lines = [f"plasticity-run: {len(failed)} of {total} runs failed (each run's log: <run directory>/cli.log):"]
    lines += [line for _, line in described]
    return code, "\n".join(lines) + "\n"


def finished_before(ret: JobReturn, started: float) -> bool:
    """Whether a completed job's run had finished before ``started`` (epoch seconds): a restarted
    sweep finds the run done and does nothing (``lifecycle``), so the job was skipped."""
    out = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    try:  # a run's run.json, or a population's population.json (plasticity_runner/population.py)
        path = out / "run.json" if (out / "run.json").exists() else out / "population.json"
        record = json.loads(path.read_text())
        ended = datetime.fromisoformat(record["ended_at"]).timestamp()
    except Exception:  # noqa: BLE001 - no record or no end time: not a skip
        return False
    return ended < started - 1.0  # run.json keeps whole seconds


def _next_commands(sweep_dir: Path) -> str:
    from plasticity_runner.next_steps import next_commands  # at the end of a sweep: the package is loaded

    return next_commands(sweep_dir, sweep=True)


class SummarySweeper(BasicSweeper):
    """``BasicSweeper`` that runs every batch and ends with a summary of the failed runs."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params = self._parse_config() + list(arguments)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(params)
        swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
        returns: list[Sequence[JobReturn]] = []
        failed: list[JobReturn] = []
        # the batches and the sweep directory as BasicSweeper.sweep makes them
        self.overrides = self.split_arguments(parsed, self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        initial_job_idx = 0
        started = time.time()
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            with self._killed_jobs_fail_alone():
                results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            failed += [r for r in results if r.status != JobStatus.COMPLETED]
            initial_job_idx += len(batch)
            returns.append(results)
        done = [r for batch in returns for r in batch if r.status == JobStatus.COMPLETED]
        skipped = sum(finished_before(r, started) for r in done)
        self.end_line = (
            f"plasticity-run: sweep done: {len(done) - skipped} complete, {len(failed)} failed, "
            f"{skipped} skipped (finished before this sweep) of {initial_job_idx} jobs; "
            f"sweep directory: {sweep_dir.resolve()}"
        )
        if failed:
            self._exit_with_summary(failed, swept, total=initial_job_idx)
        print(self.end_line)
        print(_next_commands(sweep_dir))
        return returns

    @contextlib.contextmanager
    def _killed_jobs_fail_alone(self) -> Iterator[None]:
        """Under a submitit launcher: a job without a result gives a FAILED JobReturn (``JobKilled``)
        instead of raising ``UncompletedJobError`` out of the launch (losing every other result)."""
        if not hasattr(self.launcher, "_EXECUTOR"):  # not hydra-submitit-launcher
            yield
            return
        from submitit.core.core import Job
        from submitit.core.utils import UncompletedJobError

        real = Job.results
        sweeper = self

        def results(job: Any) -> Any:
            try:
                return real(job)
            except UncompletedJobError as exc:
                return [sweeper._killed_return(job, exc)]

        Job.results = results  # type: ignore[method-assign]
        try:
            yield
        finally:
            Job.results = real  # type: ignore[method-assign]

    def _killed_return(self, job: Any, exc: BaseException) -> JobReturn:
        """The FAILED JobReturn of a submitit job that left no result: its overrides and number from
        its submission, its run directory as Hydra would have made it."""
        assert self.config is not None and self.hydra_context is not None
        args = job.submission().args  # (overrides, job_dir_key, job number, job id, Hydra's state)
        overrides, num = list(args[0]), args[2]
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        killed = JobKilled(
            f"the job ended without a result (killed?): {_first_line(exc)}; "
            f"its logs: {getattr(job, 'paths', None) and job.paths.stderr}"
        )
        ret._return_value = killed
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra):
                cfg.hydra.job.num = num
                cfg.hydra.runtime.output_dir = str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir))
            ret.hydra_cfg = cfg
        except Exception:  # noqa: BLE001 - the summary then says "?" for the directory
            pass
        return ret

    def _exit_with_summary(self, failed: list[JobReturn], swept: set[str], total: int) -> None:
        code, text = summary(failed, swept, total)
        sys.stderr.write(text)
        sys.stderr.flush()
        print(self.end_line)
        print(_next_commands(Path(str(self.config.hydra.sweep.dir))))
        sys.stdout.flush()
        assert self.config is not None and self.hydra_context is not None
        # Hydra calls on_multirun_end only when the sweep returns; call it before exiting instead
        self.hydra_context.callbacks.on_multirun_end(config=self.config, config_name=self.config.hydra.job.config_name)
        raise SystemExit(code)  # not an Exception: Hydra passes it on, the process exits with `code`


# ``hydra/sweeper: basic``, Hydra's default option, is this sweeper (same keys as Hydra's basic one):
# a config group option, so ``hydra/sweeper=optuna`` or a preset's ``override /hydra/sweeper: optuna``
# replaces it whole (a ``hydra.sweeper._target_`` in the primary config would outlive the override).
ConfigStore.instance().store(
    group="hydra/sweeper",
    name="basic",
    provider="plasticity_runner",
    node=BasicSweeperConf(_target_=f"{SummarySweeper.__module__}.{SummarySweeper.__qualname__}"),
)
