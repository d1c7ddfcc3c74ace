"""The fast path: TF32 matmuls, ``torch.compile`` and CUDA-graph capture of the training step's
loss and of the probe's vectorised minibatch loss.

Every option falls back cleanly, with a logged reason, where it cannot run (no GPU, no compiler,
a graph break torch cannot handle): the run continues on the eager path and records what it
used in ``run.json`` (``fast_path``). CPU tests exercise the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("plasticity_runner")


class CompiledOrEager:
    """Calls the compiled function; on its first failure logs why and stays eager for good."""

    def __init__(self, eager: Callable, compiled: Callable, what: str, notes: dict[str, str]):
        self.eager, self.compiled, self.what, self.notes = eager, compiled, what, notes

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: fall back
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("%s: torch.compile failed, falling back to eager (%s)", self.what, reason)
                self.notes[self.what] = f"eager (compile failed: {reason})"
                self.compiled = None
        return self.eager(*args, **kwargs)


def configure(speed_cfg: Any, agent: Any, device: torch.device) -> dict[str, str]:
    """Apply ``speed.*``: TF32, and the agent's training loss wrapped in ``compiled_loss``
    (``agent.wrap_loss``: its ``loss_terms``, the TD term, penalties and total in one vector, so
    the compiled and CUDA-graph paths log the same split as the eager one; the agent's method
    itself is left as it is). Returns what was used, for ``run.json``."""
    notes: dict[str, str] = {}
    if speed_cfg.tf32:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            notes["tf32"] = "on"
        else:
            notes["tf32"] = "not applicable (no CUDA device)"
    if speed_cfg.cuda_graphs and device.type != "cuda":
        reason = "CUDA graphs need a CUDA device"
        log.info("speed.cuda_graphs: %s; %s", reason, "compiling without graphs" if speed_cfg.compile else "eager")
        notes["cuda_graphs"] = f"off ({reason})"
    mode = compile_mode(speed_cfg, device)
    if mode is not None:
        agent.wrap_loss(lambda loss: compiled_loss(loss, mode, notes))
    return notes


def compiled_loss(loss: Callable, mode: str, notes: dict[str, str]) -> CompiledOrEager:
    """``loss`` compiled with ``torch.compile(mode=mode)``, falling back to ``loss`` itself on the
    first compiler failure; noted in ``notes["loss"]``."""
    notes["loss"] = f"torch.compile(mode={mode})"
    return CompiledOrEager(loss, torch.compile(loss, mode=mode, dynamic=False), "loss", notes)


def compile_mode(speed_cfg: Any, device: torch.device) -> str | None:
    """``torch.compile``'s mode for ``speed.*`` on ``device``: None (eager), "default" or
    "reduce-overhead" (CUDA graph trees, CUDA devices only)."""
    if speed_cfg.cuda_graphs and device.type == "cuda":
        return "reduce-overhead"
    return "default" if speed_cfg.compile else None


def compiled_probe_fit(speed_cfg: Any, probe_cfg: Any, device: torch.device, notes: dict[str, str]) -> Any:
    """The probe's compiled minibatch loss for ``speed.*`` (None: eager), noted in ``notes["probe"]``.

    It compiles the vectorised fit's forward and loss (and, through AOTAutograd, their backward)
    once per run: dynamo guards on the network's structure, not its identity, so later pauses reuse
    the first pause's graph (tested). The one-by-one fit (``probe.vectorised=false``) stays eager."""
    mode = compile_mode(speed_cfg, device)
    if mode is None or not probe_cfg.enabled:
        return None
    if not probe_cfg.vectorised:
        notes["probe"] = "eager (probe.vectorised=false: only the vectorised fit is compiled)"
        return None
    from .probes.plasticity_fit import per_target_loss

    notes["probe"] = f"torch.compile(mode={mode})"
    return CompiledOrEager(per_target_loss, torch.compile(per_target_loss, mode=mode, dynamic=False), "probe", notes)


_COMPILED: dict[str, Any] = {}
COMPILE_NOTES: dict[str, str] = {}  # what the compiled population loss ran as (a compiler failure's reason)


def compiled_population_loss(mode: str) -> Callable[..., torch.Tensor]:
    """``probes.plasticity_fit.population_loss`` under ``torch.compile(mode=mode)`` (one per mode and process, reused by
    every pause), falling back to eager on a compiler failure with a logged warning
    (``CompiledOrEager``; the reason in ``COMPILE_NOTES["population_probe"]``)."""
    if mode not in _COMPILED:
        from .probes.plasticity_fit import population_loss

        compiled = torch.compile(population_loss, mode=mode, dynamic=False)
        COMPILE_NOTES["population_probe"] = f"torch.compile(mode={mode})"
        _COMPILED[mode] = CompiledOrEager(population_loss, compiled, "population_probe", COMPILE_NOTES)
    return _COMPILED[mode]
