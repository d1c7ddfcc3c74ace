"""The life of a run in its directory, the same for every program (the DQN trainer, the case studies).

``opened(cfg, run_dir, on_start)`` holds the directory's lock (``status_file.StatusFile``) and a
cleanup stack for the whole start (``trainer.train`` enters it around the program), and:

1. ``open_run``: torch's thread count, the device (``resolve_device``), the resolved config as
   ``run.json`` records it (``run_config``) and the same-config check against the ``run.json``
   already there (``check_same_run``: a different config is refused, naming the first key that
   differs); then ``on_start()``, unless the run is finished (``FINISHED``);
2. a finished run returns ``RunDir.finished_summary()`` and does nothing;
3. the program seeds (``seeding.seed_everything``), builds its parts, and calls ``RunDir.start``:
   ``run.json`` with status ``running``, then the metrics writer with the logging sinks (closed
   when the start ends or raises);
4. its loop (``progress.Progress`` shows it), then ``RunDir.finish(end_fields)``: the final
   ``run.json`` and the run's summary.

A program is ``program(cfg, run) -> summary``; it never touches the lock, the config check or
``run.json``'s start record itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import interventions, sinks
from .errors import ConfigError, choice
from .metrics import ARRAYS_DIR, METRICS_DIR, RUN_FILE, MetricsWriter, flatten, load_run_metadata, write_run_metadata
from .status_file import StatusFile

log = logging.getLogger("plasticity_runner")

FINISHED = ("complete", "diverged")  # statuses after which a restart does nothing

# Config keys that may change between a run and its restart in the same directory: how the run is
# shown or where its inputs are found, never what it computes (a requeued job may stage its data
# set to a per-job scratch path).
RESTART_MAY_CHANGE = {"progress", "torch_threads", "checkpoint.keep", "log_every_steps", "env.data_dir", "objective"}
RESTART_MAY_CHANGE_PREFIXES = ("logger.",)  # the sinks mirroring the metrics (a restart may add or drop one)


# copies of the parameters a DQN run holds at least: online and target networks, the gradient,
# Adam's two moments (more with the training-dynamics metrics' theta_0 and last log point)
PARAMETER_COPIES = 5


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's total, or the host's physical memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))


def check_parameter_memory(cfg: DictConfig, build: Callable[[], torch.nn.Module], device: torch.device) -> None:
    """Refuse a network whose parameters cannot fit the device, before any of it is allocated:
    ``build()`` runs on the meta device (shapes only), and ``PARAMETER_COPIES`` copies of its
    parameters are compared with the device's memory (``ConfigError`` naming the architecture's
    size keys, with the estimate)."""
    with torch.device("meta"):
        net = build()
    params = sum(p.numel() for p in net.parameters())
    need = sum(p.numel() * p.element_size() for p in net.parameters()) * PARAMETER_COPIES
    have = device_memory(device)
    if need > have:
        arch = cfg.architecture
        sizes = [f"architecture.{k}={arch[k]}" for k in ("width", "hidden", "channels", "depth") if k in arch]
        key = "architecture.width" if "width" in arch else "architecture"
        raise ConfigError(
            key,
            (
                f"the network ({', '.join(sizes) or arch.name}) has {params:,} parameters: at least {need / 2**30:,.1f} GiB "
                f"for the {PARAMETER_COPIES} copies a run holds (online, target, gradient, Adam's two moments), more than "
                f"the {have / 2**30:,.1f} GiB of {device.type}; choose a smaller network"
            ),
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    name = choice(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    return torch.device(name)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``run.json`` records it (enums as strings), with ``interventions``:
    the active interventions in their order of application, ``"none"`` when there are none."""
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["interventions"] = interventions.active_names(interventions.build_interventions(cfg.intervention))
    return config


def check_same_run(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The existing ``run.json`` of ``run_dir`` (None if new); refuses a different config
    (``ConfigError`` naming the first key that differs, outside ``RESTART_MAY_CHANGE``)."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    meta = load_run_metadata(run_dir)
    old, new = meta.get("config", {}), flatten(config)
    changed = sorted(
        k
        for k in set(old) | set(new)
        if k not in RESTART_MAY_CHANGE and not k.startswith(RESTART_MAY_CHANGE_PREFIXES) and old.get(k) != new.get(k)
    )
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            changed[0],
            f"{run_dir} holds a run started with a different config ({diff}); "
            "resume it with its own config or choose a new hydra.run.dir",
        )
    return meta


@dataclass
class RunDir:
    """One start of a run in its directory: what the lifecycle found and decided before the program ran.

    ``previous``: the ``run.json`` found there (None: a new run); ``meta``: the extra ``run.json``
    keys of this start (``device``, ``status``, ``resumed_from_step`` and the program's own), which
    ``finish`` writes again with the end fields.
    """

    cfg: DictConfig
    run_dir: Path
    record: StatusFile
    config: dict[str, Any]
    device: torch.device
    previous: dict[str, Any] | None
    cleanup: contextlib.ExitStack
    run_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """The run in this directory ended before (``complete`` or ``diverged``): nothing to do."""
        return self.previous is not None and self.previous.get("status") in FINISHED

    def finished_summary(self) -> dict[str, Any]:
        """The summary of the run that finished before (``already_finished``)."""
        previous = self.previous or {}
        log.info("run %s is already %s (%s); nothing to do", previous["run_id"], previous["status"], self.run_dir)
        return {
            "run_id": previous["run_id"],
            "run_dir": str(self.run_dir),
            "steps": previous.get("steps_done"),
            "status": previous["status"],
            "already_finished": True,
        }

    def start(self, resumed_from: int | None, **meta: Any) -> MetricsWriter:
        """Write ``run.json`` (status ``running``, ``resumed_from_step``, ``meta``) and return the
        metrics writer, its logging sinks open until this start ends (told where it resumed)."""
        self.meta = {"device": str(self.device), "status": "running", "resumed_from_step": resumed_from, **meta}
        self.run_id = write_run_metadata(self.run_dir, self.config, extra=self.meta)
        opened = sinks.open_sinks(self.cfg, self.run_dir, self.run_id, self.config, resumed_from)
        return MetricsWriter(self.run_dir, self.run_id, self.cleanup.enter_context(opened))

    def finish(self, end: Mapping[str, Any], **summary: Any) -> dict[str, Any]:
        """Write the final ``run.json`` (``end``: at least ``status`` and ``steps_done``, e.g.
        ``status_file.end_fields``) and return the run's summary with ``summary`` added."""
        write_run_metadata(self.run_dir, self.config, extra={**self.meta, **end})
        status, steps = end["status"], end["steps_done"]
        where = (self.run_dir / METRICS_DIR).resolve()
        log.info("run %s %s at step %d: metrics in %s", self.run_id, status, steps, where)
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "steps": steps, "status": status, **summary}


@contextlib.contextmanager
def opened(cfg: DictConfig, run_dir: str | Path, on_start: Callable[[], None] | None = None) -> Iterator[RunDir]:
    """The run in ``run_dir``, its lock held and its cleanup stack open until the block ends: a second
    process on the directory is refused, and a block that raises records ``crashed`` (or
    ``interrupted``) in ``run.json`` (``status_file.StatusFile``)."""
    with StatusFile(run_dir) as record, contextlib.ExitStack() as cleanup:
        yield open_run(cfg, run_dir, record, cleanup, on_start)


def open_run(
    cfg: DictConfig,
    run_dir: str | Path,
    record: StatusFile,
    cleanup: contextlib.ExitStack,
    on_start: Callable[[], None] | None = None,
) -> RunDir:
    """Step 1 of the module's list, inside the directory's lock: threads, device, config check,
    then ``on_start()`` if the run will start or resume (not refused, not finished)."""
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    config = run_config(cfg)
    run = RunDir(cfg, Path(run_dir), record, config, device, check_same_run(Path(run_dir), config), cleanup)
    if on_start is not None and not run.finished:
        on_start()
    remove_stale_temporaries(Path(run_dir))
    return run


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries an earlier start left when it was killed mid-write (``run.json.<pid>-<n>.tmp``,
    ``metrics/*.tmp``, ``arrays/*.tmp``): this start holds the directory's lock, so no writer owns them."""
    removed = []
    for pattern in (f"{RUN_FILE}.*.tmp", f"{METRICS_DIR}/*.tmp", f"{ARRAYS_DIR}/*.tmp"):
        for f in Path(run_dir).glob(pattern):
            try:
                f.unlink()
                removed.append(f)
            except OSError as exc:
                log.warning("cannot remove the stale temporary %s: %s", f, exc)
    if removed:
        log.info(
            "removed %d stale temporar%s of an earlier start: %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            ", ".join(str(f) for f in removed),
        )
    return removed
