"""Checkpoints: resume is a property of the run directory.

At every pause the trainer writes ``checkpoints/step_<step>/state.pt`` and then an empty
``COMPLETE`` marker (Dopamine's pattern): a checkpoint without its marker was cut off while being
written and is never loaded. Only the newest ``checkpoint.keep`` complete checkpoints are kept.

A checkpoint holds everything the loop mutates: online and target networks, optimizer state,
replay contents, environment state, the step counter, the current observation, every generator
(action, replay) and the global RNG states (torch CPU and CUDA, numpy, Python), and the state of
the interventions. Restarted with the same command in the same directory, a run loads its newest
complete checkpoint, deletes the metric shards written after it, and continues; on a CPU the
final metrics equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .metrics import ARRAYS_DIR, METRICS_DIR, MetricsWriteError

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import RunState

CHECKPOINT_DIR = "checkpoints"
MARKER = "COMPLETE"


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def state_dict(state: "RunState") -> dict[str, Any]:
    agent = state.agent
    return {
        "step": state.step,
        "online": agent.online.state_dict(),
        "target": agent.target.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "replay": state.replay.state_dict(),
        "env": state.env.state_dict(),
        "obs": state.obs,
        "act_generator": state.act_generator.get_state(),
        "replay_generator": state.replay_generator.get_state(),
        "interventions": {i.name: i.state_dict() for i in state.interventions},
        "rng": _rng_state(),
    }


def load_state_dict(state: "RunState", ckpt: dict[str, Any]) -> None:
    agent = state.agent
    for i in state.interventions:  # first: an intervention may rebuild parts of the network
        i.load_state_dict(ckpt["interventions"].get(i.name, {}), agent)
    agent.online.load_state_dict(ckpt["online"])
    agent.target.load_state_dict(ckpt["target"])
    agent.optimizer.load_state_dict(ckpt["optimizer"])
    state.replay.load_state_dict(ckpt["replay"])
    state.env.load_state_dict(ckpt["env"])
    state.obs = ckpt["obs"].to(state.obs.device)
    state.act_generator.set_state(ckpt["act_generator"])
    state.replay_generator.set_state(ckpt["replay_generator"])
    state.step = int(ckpt["step"])
    _set_rng_state(ckpt["rng"])


def _step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{int(step):010d}"


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every checkpoint with its completion marker, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    found = []
    for d in root.glob("step_*") if root.exists() else []:
        if (d / MARKER).exists():
            found.append((int(d.name.split("_")[1]), d))
    return sorted(found)


def save(run_dir: Path, state: "RunState", keep: int) -> Path:
    """Write the checkpoint of ``state.step`` (state file, then marker); prune old ones."""
    d = _step_dir(run_dir, state.step)
    try:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        tmp = d / "state.pt.tmp"
        with open(tmp, "wb") as f:
            torch.save(state_dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / "state.pt")
        (d / MARKER).touch()
    except OSError as exc:
        shutil.rmtree(d, ignore_errors=True)
        raise MetricsWriteError(f"cannot write checkpoint {d}: {exc}") from exc
    for _, old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    # checkpoints that never got their marker (a crash mid-write) are garbage now
    for partial in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*"):
        if not (partial / MARKER).exists() and partial != d:
            shutil.rmtree(partial, ignore_errors=True)
    return d


def load_latest(run_dir: Path, state: "RunState") -> int | None:
    """Restore the newest complete checkpoint into ``state``; returns its step (None if none)."""
    found = complete_checkpoints(run_dir)
    if not found:
        return None
    step, d = found[-1]
    ckpt = torch.load(d / "state.pt", map_location=state.obs.device, weights_only=False)
    load_state_dict(state, ckpt)
    return step


def discard_after(run_dir: Path, step: int | None) -> list[Path]:
    """Delete metric shards and array files of steps after ``step`` (all of them when None)."""
    removed = []
    for sub in (METRICS_DIR, ARRAYS_DIR):
        for f in (Path(run_dir) / sub).glob("step_*"):
            f_step = int(f.name.split(".")[0].split("_")[1])
            if step is None or f_step > step or f.name.endswith(".tmp"):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed
