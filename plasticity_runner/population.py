"""A population: several seeds of one configuration trained in one process, each member exactly the
run its seed would have been.

``population.seeds=[0,1,2,3]`` turns the run directory into a population directory::

    <run dir>/population.json     the population's record: seeds, mode, members, status, refusals
    <run dir>/.hydra/             Hydra's record of the command (the population's config)
    <run dir>/seed=<s>/           one member: the run directory of the single run of seed s
                                  (run.json, .hydra/, metrics/, arrays/, checkpoints/, run.lock)

A member is built exactly as the single run of its seed (``trainer.build_train_state`` with ``seed=s``):
its own initialisation, environment, exploration and replay streams, replay contents, optimizer
state, interventions, training-dynamics state and probes. Everything a member does runs inside
``Member.active()``, which swaps the process-global RNG states (torch CPU and CUDA, numpy,
Python: what ``seeding.seed_everything`` seeds and a checkpoint keeps) and the run directory's
start stamp (``metrics.CURRENT_START``) in and out, so a member never draws from another's global
stream and its ``run.json`` carries its own start.

The members step in lockstep through the trainer's own loop (``trainer.DQNLoop``: the single run
and the population share one loop body). ``population.mode``:

* ``sequential``: each member runs ``learn_step`` and ``end_step`` in turn; it composes with
  everything a single run does, and every member's metrics equal its single run's bit for bit;
* ``vmap``: the members' online parameters and optimizer states are stacked into ``[N, ...]``
  tensors that each member's modules and torch optimizer alias (``population_vmap.py``), and the
  loss, backward and optimizer step of all members are one vmapped call; acting, the environment,
  the replay, the hooks and the pauses stay per member. What vmap cannot do is refused at start,
  naming the key and the reason (``vmap_refusals``), never run some other way.

Resume: the members checkpoint at the same pauses, and a pause's old checkpoints are pruned only
after every member has written its new one; a restart resumes every member from the newest step
that all of them have complete, discarding later checkpoints and metric shards. A member that
finished (``complete`` or ``diverged``) is not run again. A stop signal (preemption) checkpoints
every member at the next log point, as a single run does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import checkpoint, lifecycle, metrics, registry
from .errors import ConfigError, choice
from .metrics import atomic_write_text
from .train_state import global_rng_state, set_global_rng_state

log = logging.getLogger("plasticity_runner")

RECORD_FILE = "population.json"
MODES = ("vmap", "sequential")


def member_dir_name(seed: int) -> str:
    """The directory of the member of seed ``seed`` inside the population's directory."""
    return f"seed={int(seed)}"


def enabled(cfg: DictConfig) -> bool:
    """Whether ``cfg`` asks for a population (``population.seeds`` set)."""
    return OmegaConf.select(cfg, "population.seeds") is not None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- config checks


def check_population(cfg: DictConfig) -> None:
    """``population.*`` itself: a non-empty list of distinct integer seeds, a known mode, no
    ``objective`` (a sweeper optimises one number per job; a population has one per member), and
    the combinations its mode refuses (``vmap_refusals``). ``ConfigError`` naming the key."""
    seeds = OmegaConf.select(cfg, "population.seeds")
    if seeds is None:
        return
    values = list(seeds)
    if not values:
        raise ConfigError("population.seeds", "is an empty list; give at least one seed, or null for a single run")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError("population.seeds", f"must be a list of integers, got {v!r} in {values}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ConfigError(
            "population.seeds",
            f"lists seed {', '.join(map(str, duplicates))} more than once ({values}); each member needs its own seed",
        )
    mode = choice(cfg.population.mode)
    if mode not in MODES:
        raise ConfigError("population.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if cfg.get("objective") is not None:
        raise ConfigError(
            "objective",
            "a sweeper optimises one number per job, and a population (population.seeds) has one per member; "
            "sweep the seeds as separate jobs (seed=0,1,2) to optimise an objective",
        )
    if mode == "vmap":
        refusals = vmap_refusals(cfg)
        if refusals:
            key, reason = refusals[0]
            raise ConfigError(
                key,
                f"population.mode=vmap cannot run it: {reason}. Use population.mode=sequential, which steps "
                "each member in turn and composes with everything",
            )


def vmap_refusals(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, reason)`` of every part of ``cfg`` that the vmapped step cannot run (empty: none)."""
    from .population_vmap import refusals

    return refusals(cfg)


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of the member of seed ``seed``: the population's with ``seed`` set (the
    ``population`` group is kept, so the member's ``run.json`` names its population)."""
    member = copy.deepcopy(cfg)
    member.seed = int(seed)
    return member


# ---------------------------------------------------------------------------------- the members


@dataclass
class Member:
    """One member: its seed, config and run (``lifecycle.RunDir``), the loop once built, and its
    process-global RNG states while another member runs."""

    seed: int
    cfg: DictConfig
    run: lifecycle.RunDir
    loop: Any = None
    rng: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @contextlib.contextmanager
    def active(self, rng: bool = True) -> Iterator[Member]:
        """Everything this member does: its start stamp for ``run.json`` and, with ``rng``, its
        global RNG states swapped in (none before its build, which seeds them) and back out.

        ``rng=False`` is for the parts of a training step that draw nothing from the global RNGs
        (``quiet_step``); tests/test_population.py checks it for every env and intervention."""
        token = metrics.CURRENT_START.set(self.run.record.start)
        if rng and self.rng is not None:
            set_global_rng_state(self.rng)
        try:
            yield self
        finally:
            if rng:
                self.rng = global_rng_state()
            metrics.CURRENT_START.reset(token)


class PopulationRecord:
    """``population.json``: written atomically at the start, when a member ends and at the end."""

    def __init__(self, run_dir: Path, seeds: list[int], mode: str):
        self.path = Path(run_dir) / RECORD_FILE
        self.data: dict[str, Any] = {
            "seeds": list(seeds),
            "mode": mode,
            "members": [{"seed": s, "run_dir": member_dir_name(s), "status": None} for s in seeds],
            "status": "running",
            "started_at": _now(),
        }

    def previous(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise metrics.RunFileError(f"cannot read {self.path}: {exc}") from exc

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str))

    def member_status(self, seed: int, status: str | None, steps: int | None = None) -> None:
        for m in self.data["members"]:
            if m["seed"] == seed:
                m["status"], m["steps_done"] = status, steps
        self.update()


def check_previous(record: PopulationRecord, seeds: list[int], mode: str) -> None:
    """A population directory holds one population: another seed list or mode is refused."""
    old = record.previous()
    if old is None:
        return
    if list(old.get("seeds", [])) != list(seeds):
        raise ConfigError(
            "population.seeds",
            f"{record.path.parent} holds a population of seeds {old.get('seeds')}, not {seeds}; resume it with its "
            "own seeds or choose a new hydra.run.dir",
        )
    if old.get("mode") != mode:
        raise ConfigError(
            "population.mode",
            f"{record.path.parent} holds a population run with mode {old.get('mode')}, not {mode}; resume it with "
            "its own mode or choose a new hydra.run.dir",
        )


# ---------------------------------------------------------------------------------- the program


def train_population(
    cfg: DictConfig,
    run_dir: str | Path,
    on_start: Callable[[], None] | None = None,
    member_start: Callable[[Path, DictConfig], None] | None = None,
) -> dict[str, Any]:
    """Train the population of ``cfg`` into ``run_dir`` (module docstring); returns its summary.

    ``on_start`` is called once every member's directory has accepted its config (the CLI writes
    Hydra's record of the population there), ``member_start(member_dir, member_cfg)`` for each
    member that will start or resume (the CLI writes the member's Hydra record). Every refusal
    (a bad seed list, a combination the mode cannot run, a member directory holding another
    config) comes before anything is written."""
    from .config import validate
    from .envs.datasets import check_data

    check_population(cfg)  # population.* first: what the members' configs cannot show
    validate(cfg)
    check_data(cfg.env)
    run_dir = Path(run_dir)
    seeds = [int(s) for s in cfg.population.seeds]
    mode = choice(cfg.population.mode)
    members_cfg = [member_config(cfg, s) for s in seeds]
    record = PopulationRecord(run_dir, seeds, mode)
    check_previous(record, seeds, mode)
    for s, mcfg in zip(seeds, members_cfg):  # read-only: refuse before any member directory is opened
        lifecycle.check_same_run(run_dir / member_dir_name(s), lifecycle.run_config(mcfg))
    program = registry.get("env", cfg.env.name).spec.program
    with contextlib.ExitStack() as stack:
        members = []
        for s, mcfg in zip(seeds, members_cfg):
            mdir = run_dir / member_dir_name(s)
            start = (lambda d=mdir, c=mcfg: member_start(d, c)) if member_start is not None else None
            run = stack.enter_context(lifecycle.opened(mcfg, mdir, start))
            members.append(Member(s, mcfg, run))
        todo = [m for m in members if not m.run.finished]
        if not todo:
            for m in members:
                m.summary = m.run.finished_summary()
            return summary_of(run_dir, seeds, mode, members, already_finished=True)
        if on_start is not None:
            on_start()
        record.update()
        try:
            if program is not None:  # a case study or continual protocol: each member's program in turn
                for m in todo:
                    with m.active():
                        m.summary = program(m.cfg, m.run)
                    record.member_status(m.seed, m.summary["status"], m.summary.get("steps"))
            else:
                run_lockstep(cfg, todo, record, mode)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "crashed"
            with contextlib.suppress(Exception):
                record.update(status=status, ended_at=_now(), error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        for m in members:
            if m.run.finished:
                m.summary = m.run.finished_summary()
        record.update(status="complete", ended_at=_now())
    return summary_of(run_dir, seeds, mode, members)


def summary_of(
    run_dir: Path, seeds: list[int], mode: str, members: list[Member], already_finished: bool = False
) -> dict[str, Any]:
    statuses = [m.summary.get("status") for m in members]
    status = "complete" if all(s == "complete" for s in statuses) else ",".join(sorted(set(map(str, statuses))))
    out = {
        "run_id": f"population of seeds {seeds}",
        "run_dir": str(run_dir),
        "status": status,
        "mode": mode,
        "steps": max((m.summary.get("steps") or 0) for m in members),
        "members": {m.seed: m.summary for m in members},
    }
    if already_finished:
        out["already_finished"] = True
    return out


def common_resume_step(members: list[Member]) -> int | None:
    """The newest step at which every member has a complete, verifying checkpoint (None: start afresh)."""
    steps = [checkpoint.newest_verified(m.run_dir) for m in members]
    if any(s is None for s in steps):
        return None
    return min(steps)


def quiet_step(cfg: DictConfig) -> str | None:
    """Why a training step draws from the process-global RNGs (None: it does not).

    Between log points a step is: acting (the member's ``act`` generator), the environment (its own
    streams), the replay draw (the ``replay`` generator), the loss, backward and optimizer step, the
    interventions' after-step and target-update hooks (fresh initialisations draw in a forked RNG,
    ``Intervention.fresh_network``) and the target copy: none draws from the global RNGs, which
    ``tests/test_population.py`` checks for every registered env and intervention. The one
    exception is a network whose training forward is stochastic (``architecture.dropout``): then
    every step runs with the member's global RNG states swapped in. A log point (its evaluation and
    pause) always does."""
    dropout = OmegaConf.select(cfg, "architecture.dropout")
    return f"architecture.dropout={dropout}" if dropout else None


def run_lockstep(cfg: DictConfig, members: list[Member], record: PopulationRecord, mode: str) -> None:
    """The DQN loop of every member in lockstep (module docstring)."""
    from .preemption import PreemptionGuard
    from .trainer import DQNLoop, finish_step

    resume = common_resume_step(members) if cfg.checkpoint.enabled else None
    keep = int(cfg.checkpoint.keep)
    for i, m in enumerate(members):
        checkpoint.discard_checkpoints_after(m.run_dir, resume)
        with m.active():
            m.loop = DQNLoop(
                m.cfg,
                m.run,
                resume_step=resume,
                show_progress=i == 0,
                population={"dir": str(m.run_dir.parent.resolve())},
            )
            m.loop.keep = None  # pruned below, once every member wrote the pause's checkpoint
    resumed = {m.seed: m.loop.resumed_from for m in members}
    if len(set(resumed.values())) > 1:
        raise checkpoint.CorruptCheckpointError(
            f"the members cannot resume at one step (resumed at {resumed}): a member's checkpoint of step {resume} "
            "is missing or corrupt. Delete the members' checkpoints/ and metrics/ to run the population again from step 0"
        )
    why = quiet_step(cfg)
    draws = why is not None  # the training forward draws from the global RNG (dropout)
    record.update(
        global_rng=f"swapped every step ({why})" if draws else "swapped at builds and log points",
        pauses="together (probes.population.run_population_pause)" if mode == "vmap" else "per member (run_pause)",
    )
    stepper = None
    if mode == "vmap":
        from .population_vmap import VmapStepper, compact

        stepper = VmapStepper(members, cfg.speed, members[0].run.device)
        record.update(fast_path=stepper.fast_path)
        for m in members:
            m.loop.before_checkpoint = lambda bundle, m=m: (stepper.sync_for_checkpoint(m), compact(bundle))[1]

    def prune() -> None:
        if cfg.checkpoint.enabled:
            for m in members:
                checkpoint.prune(m.run_dir, keep)

    def interrupted(signum: int) -> None:
        for m in members:
            m.run.record.interrupted(signum)
        record.update(status="interrupted", ended_at=_now())

    def resumed_() -> None:
        for m in members:
            m.run.record.resumed()
        record.update(status="running", ended_at=None)

    together = mode == "vmap"  # the pauses of a vmapped population run together (run_population_pause)

    def pause(group: list[Member]) -> dict[int, dict[str, Any]]:
        """The pause of ``group`` (members at one pause step), every member's written as its own
        ``run_pause`` writes it, with the probe fitted for all members at once; each member's global
        RNG states are its own."""
        if not group:
            return {}
        from .probes.population import run_population_pause

        rngs = [m.rng for m in group]
        results = run_population_pause(
            [m.cfg for m in group], [m.loop.state for m in group], [m.loop.writer for m in group], rngs
        )
        for m, rng in zip(group, rngs):
            m.rng = rng
        return {m.seed: r for m, r in zip(group, results)}

    preempt = PreemptionGuard(on_hand_over=interrupted, on_resume=resumed_).install()
    try:
        if together and members[0].loop.resumed_from is None:  # a new population: the step-0 pause together
            for m in members:
                with m.active():
                    m.loop.prefill()
            probes = pause(members)
            for m in members:
                with m.active():
                    m.loop.summary["probe"] = probes[m.seed]
                    m.loop.persist()
        else:
            for m in members:
                with m.active():
                    m.loop.begin()
        prune()
        if preempt.requested:
            preempt.stop()
    except BaseException:
        preempt.uninstall()
        raise
    for m in members:
        m.loop.open_window()
    try:
        active = [m for m in members if m.loop.running]
        while active:
            if stepper is not None:
                outs = stepper.step(active)
            else:
                outs = {}
                for m in active:
                    with m.active(rng=draws):
                        epsilon = m.loop.epsilon()
                        outs[m.seed] = (*m.loop.learn_step(m.loop.state, m.loop.agent_cfg, epsilon), epsilon)
            log_point, opened = False, []
            for m in active:
                loss, reward, batch, epsilon = outs[m.seed]
                with m.active(rng=m.loop.due()[0]):  # a log point (evaluation, pause) may draw
                    if not together:
                        log_point |= m.loop.end_step(loss, reward, batch, epsilon)
                    elif m.loop.open_log_point(loss, reward, batch, epsilon):
                        opened.append(m)
                        continue  # its hooks run below, around the population's pause
                if stepper is not None:
                    stepper.after_host(m)
            if opened:  # trainer.pause_around_hooks, for the members together
                at_pause = [m for m in opened if m.loop.at_pause]
                before = opened[0].loop.probe_before_hooks
                probes = pause(at_pause) if before else {}
                for m in opened:
                    with m.active():
                        finish_step(m.loop.state, m.loop.agent_cfg)
                    if stepper is not None:
                        stepper.after_host(m)
                if not before:
                    probes = pause(at_pause)
                for m in opened:
                    with m.active():
                        log_point |= m.loop.close_log_point(probes.get(m.seed))
            if any(m.loop.at_pause for m in active):
                prune()
            ended = [m for m in active if not m.loop.running]
            for m in ended:
                with m.active():
                    m.summary = m.loop.finish()
                    m.loop.close_window()
                record.member_status(m.seed, m.summary["status"], m.summary["steps"])
            active = [m for m in active if m.loop.running]
            if ended and stepper is not None and active:
                stepper.restack(active)
            if stepper is not None and not active:
                record.update(fast_path=stepper.fast_path)  # what ran (a compiler failure fell back)
            if log_point and preempt.requested:

                def save() -> None:
                    for m in active:
                        write = m.loop.save_for_stop()
                        if write is not None:
                            with m.active():
                                write()
                    prune()

                preempt.stop(save=save)
    finally:
        preempt.uninstall()
        for m in members:
            if getattr(m.loop, "progress", None) is not None:
                m.loop.close_window()
