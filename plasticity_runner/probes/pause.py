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

A population (members of one config that differ in ``seed``) pauses through
``population.run_population_pause``, which writes each member's pause as ``run_pause`` writes it
(the probe of the members stacked; the pieces below, ``pause_view``, ``diagnostic_view`` and
``write_output``, shared).
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
    todo = due(cfg, int(state.step))
    if not todo:
        return {}
    progress = progress or NoProgress()
    base = pause_view(cfg, state, todo)
    outputs: dict[str, Output] = {}
    for d in todo:
        t0 = time.perf_counter()
        advance = progress.start(d.name, d.steps(cfg))
        out = d.run(diagnostic_view(base, d, state, advance))
        seconds = time.perf_counter() - t0
        write_output(writer, base.step, d, out, seconds)
        progress.done(d.name, seconds, d.detail(cfg))
        outputs[d.name] = out
    return outputs


def pause_view(cfg: Any, state: Any, todo: list[Diagnostic]) -> PauseView:
    """The ``PauseView`` of ``state`` at its step, with the pause's evaluation batch (stream
    ``diagnostics/batch``: as many transitions as the largest ``inputs(cfg)`` of ``todo``)."""
    step, run_seed = int(state.step), int(cfg.seed)
    size = max(int(d.inputs(cfg)) for d in todo)
    batch = None
    if size:
        device = state.obs.device
        generator = torch.Generator(device).manual_seed(seeding.evaluation_batch_seed(run_seed, step))
        batch = state.replay.sample(size, generator)
    return PauseView(
        cfg=cfg,
        seed=run_seed,
        step=step,
        agent=state.agent,
        replay=state.replay,
        build_fresh=state.build_fresh,
        dynamics=state.dynamics,
        compiled_probe_fit=state.compiled_probe_fit,
        batch=batch,
    )


def diagnostic_view(base: PauseView, d: Diagnostic, state: Any, advance: Any = None) -> PauseView:
    """``base`` (``pause_view(.., state, ..)``) as diagnostic ``d`` sees it: the first
    ``d.inputs(cfg)`` transitions of the evaluation batch and its own replay draw (stream
    ``<name>/inputs``)."""
    cfg = base.cfg
    n, n_own = int(d.inputs(cfg)), int(d.own_inputs(cfg))
    own = None
    if n_own:
        generator = seeding.inputs_generator(state.obs.device, base.seed, d.name, base.step)
        own = state.replay.sample_obs(n_own, generator)
    return dataclasses.replace(
        base, batch=batch_head(base.batch, n) if n else None, own_inputs=own, advance=advance or _ignore
    )


def _ignore(n: int = 1) -> None:
    return None


def write_output(writer: Any, step: int, d: Diagnostic, out: Output, seconds: float) -> None:
    """What ``d`` measured at the pause of ``step``: its scalars under its phase, its arrays, and
    ``timing/<name>_s``."""
    writer.add_many(step, d.phase, out.scalars)
    for name, array in out.arrays.items():
        writer.add_array(name, array)
    writer.add(step, "timing", f"{d.name}_s", seconds)
