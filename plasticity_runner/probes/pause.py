"""One pause: every diagnostic due at the step, in order, on a view of the training state.

The diagnostics are the registered parts of group ``diagnostic`` (``registry``; one module each in
``probes/``): the plasticity probe of eq. (5) (``plasticity``), then the statistics of section 5.2
(``statistics``), the Hessian spectrum (``curvature``), the gradient covariance of eq. (3)
(``gradcov``) and the training dynamics (``dynamics``), and any other registered, in their
``order``. ``run_diagnostics`` is the one loop that runs them: for each one due (its
``Diagnostic.due``: the probe at every pause, the others every ``every_steps`` and at the final
pause) it draws what the diagnostic asked for, runs it on a ``PauseView`` and writes what it
returns: its scalars under its phase, its arrays under their names, and its wall-clock seconds as
``timing/<name>_s`` (``probe_s``, ``statistics_s``, ...); it tells ``progress`` when each starts
and how long it took.

Replay draws of a pause (``seeding``): one evaluation batch of transitions shared by the
diagnostics (stream ``diagnostics/batch``, as many as the largest ``inputs(cfg)`` of those due;
each sees its first ``inputs(cfg)``), and a diagnostic's own observations (stream
``<name>/inputs``: the probe's input set X). Nothing here modifies the networks or touches a
training RNG stream.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .. import registry, seeding
from ..progress import NoProgress, PauseProgress
from .base import Diagnostic, Output, PauseView, batch_head


def diagnostics() -> list[Diagnostic]:
    """One instance of every registered diagnostic, in their order."""
    return [part.build() for part in registry.parts("diagnostic").values()]


def due(cfg: Any, step: int) -> list[Diagnostic]:
    """The diagnostics that run at the pause of ``step``, in order."""
    return [d for d in diagnostics() if d.due(cfg, step)]


def parameters_finite(net: torch.nn.Module) -> bool:
    """Whether every parameter of ``net`` is finite (one host read)."""
    with torch.no_grad():
        return bool(torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all())


def run_pause(cfg: Any, state: Any, writer: Any) -> dict[str, float]:
    """The diagnostics of one pause on copies of the training state ``state`` (``train_state.TrainState``);
    returns the probe's scalars (empty when the probe did not run).

    A network with non-finite parameters (a diverged run that continues) is not measured: the
    pause records ``train/nonfinite_params = 1`` instead.
    """
    if not parameters_finite(state.agent.online):
        writer.add(state.step, "train", "nonfinite_params", 1.0)
        return {}
    progress = PauseProgress(cfg.progress, state.step)  # nested bars on a terminal, log lines elsewhere
    outputs = run_diagnostics(cfg, state, writer, progress)
    return dict(outputs["probe"].scalars) if "probe" in outputs else {}


def run_diagnostics(cfg: Any, state: Any, writer: Any, progress: Any = None) -> dict[str, Output]:
    """Run the diagnostics due at ``state.step`` in order and write what each returns (module
    docstring); returns name -> ``Output`` of those that ran.

    ``writer``: a ``metrics.MetricsWriter`` (``add``, ``add_many``, ``add_array``); ``progress``: a
    ``progress.PauseProgress`` (None: no progress)."""
    step, run_seed = int(state.step), int(cfg.seed)
    todo = due(cfg, step)
    if not todo:
        return {}
    progress = progress or NoProgress()
    device = state.obs.device
    size = max(int(d.inputs(cfg)) for d in todo)
    batch = None
    if size:
        generator = torch.Generator(device).manual_seed(seeding.evaluation_batch_seed(run_seed, step))
        batch = state.replay.sample(size, generator)
    base = PauseView(
        cfg=cfg,
        seed=run_seed,
        step=step,
        agent=state.agent,
        replay=state.replay,
        build_fresh=state.build_fresh,
        dynamics=state.dynamics,
        compiled_probe_fit=state.compiled_probe_fit,
    )
    outputs: dict[str, Output] = {}
    for d in todo:
        t0 = time.perf_counter()
        advance = progress.start(d.name, d.steps(cfg))
        n, n_own = int(d.inputs(cfg)), int(d.own_inputs(cfg))
        own = (
            state.replay.sample_obs(n_own, seeding.inputs_generator(device, run_seed, d.name, step)) if n_own else None
        )
        view = dataclasses.replace(base, batch=batch_head(batch, n) if n else None, own_inputs=own, advance=advance)
        out = d.run(view)
        writer.add_many(step, d.phase, out.scalars)
        for name, array in out.arrays.items():
            writer.add_array(name, array)
        seconds = time.perf_counter() - t0
        writer.add(step, "timing", f"{d.name}_s", seconds)
        progress.done(d.name, seconds, d.detail(cfg))
        outputs[d.name] = out
    return outputs
