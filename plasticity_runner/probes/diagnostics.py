"""Diagnostics of one pause: statistics (5.2), curvature (2.1, 4.2), gradient covariance (eq. 3) and
training dynamics.

``run_diagnostics`` runs every enabled diagnostic whose cadence ``every_steps`` divides the pause
step (and at the final pause, ``step == total_steps``). All of them read one evaluation batch of
replay transitions, drawn per pause with a private generator seeded from ``(seed, step)``: the
first ``num_inputs`` (or ``k``) transitions of it go to each diagnostic. Nothing here modifies the
networks or touches the training RNG streams.

Written to the pause's metrics shard: phases ``stats``, ``curvature``, ``gradcov``, ``dynamics`` and
``timing`` (``statistics_s``, ``curvature_s``, ``gradcov_s``, ``dynamics_s``: wall-clock seconds of
each); the dynamics keep state across pauses in ``state.dynamics`` (``dynamics.DynamicsTracker``,
checkpointed); and to its arrays
file: ``hessian/{density,grid,ritz_values,ritz_weights}``, ``gradcov/{matrix,order,labels}``.
``the README`` lists every name and shape.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from ..progress import NoProgress
from .curvature import hessian_spectrum
from .gradcov import gradient_covariance, perturbation_sample_losses, td_sample_losses
from ..seeding import stream_seed
from .statistics import network_statistics

DIAGNOSTICS = ("statistics", "curvature", "gradcov", "dynamics")


def batch_head(batch: Any, n: int) -> Any:
    """The first ``n`` transitions of ``batch`` (every field sliced)."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[:n] for f in dataclasses.fields(batch)})


def diagnostics_seed(seed: int, step: int, part: str = "batch") -> int:
    """The seed of one pause's evaluation batch (``part="batch"``) or of one diagnostic's own
    randomness (``"curvature"``, ``"gradcov"``): stream ``diagnostics/<part>`` of the run seed,
    apart from every training stream."""
    return stream_seed(seed, f"diagnostics/{part}", step)


def due(cfg: Any, step: int) -> list[str]:
    """The diagnostics that run at the pause of ``step``."""
    out = []
    for name in DIAGNOSTICS:
        d = cfg.diagnostics[name]
        if d.enabled and (step % int(d.every_steps) == 0 or step == int(cfg.total_steps)):
            out.append(name)
    return out


def run_diagnostics(cfg: Any, state: Any, writer: Any, progress: Any = None) -> None:
    """Run the diagnostics due at ``state.step`` on copies of the state; record scalars and arrays.

    ``progress``: a ``progress.PauseProgress`` told when each diagnostic starts and how many
    seconds it took (the value of its ``timing/<name>_s`` row); None: no progress."""
    names = due(cfg, state.step)
    if not names:
        return
    progress = progress or NoProgress()
    d, step = cfg.diagnostics, state.step
    seed = diagnostics_seed(cfg.seed, step)
    sizes = {
        "statistics": d.statistics.num_inputs, "curvature": d.curvature.num_inputs, "gradcov": d.gradcov.k,
        "dynamics": d.dynamics.num_inputs,
    }
    generator = torch.Generator(state.obs.device).manual_seed(seed)
    batch = state.replay.sample(max(int(sizes[n]) for n in names), generator)
    online = state.agent.online

    if "statistics" in names:
        t0 = time.perf_counter()
        progress.start("statistics")
        n = int(d.statistics.num_inputs)
        writer.add_many(step, "stats", network_statistics(online, batch.o_tm1[:n], d.statistics))
        seconds = time.perf_counter() - t0
        writer.add(step, "timing", "statistics_s", seconds)
        progress.done("statistics", seconds)

    if "curvature" in names:
        t0 = time.perf_counter()
        progress.start("curvature")
        n = int(d.curvature.num_inputs)
        spectrum = hessian_spectrum(online, batch.o_tm1[:n], diagnostics_seed(cfg.seed, step, "curvature"), d.curvature)
        writer.add_many(step, "curvature", spectrum.scalars())
        writer.add_array("hessian/density", spectrum.density.numpy())
        writer.add_array("hessian/grid", spectrum.grid.numpy())
        writer.add_array("hessian/ritz_values", spectrum.ritz_values.numpy())
        writer.add_array("hessian/ritz_weights", spectrum.ritz_weights.numpy())
        seconds = time.perf_counter() - t0
        writer.add(step, "timing", "curvature_s", seconds)
        progress.done("curvature", seconds)

    if "gradcov" in names:
        t0 = time.perf_counter()
        progress.start("gradcov")
        k = int(d.gradcov.k)
        head = batch_head(batch, k)
        loss_kind = str(getattr(d.gradcov.loss, "value", d.gradcov.loss))
        if loss_kind == "td":
            losses = td_sample_losses(
                state.agent.online, state.agent.target, head, gamma=state.agent.gamma, double_dqn=state.agent.double_dqn
            )
        else:
            losses = perturbation_sample_losses(
                online, head.o_tm1, diagnostics_seed(cfg.seed, step, "gradcov"), shared=loss_kind == "perturbation_shared"
            )
        cov = gradient_covariance(
            losses,
            num_clusters=int(d.gradcov.num_clusters),
            chunk_size=int(d.gradcov.chunk_size),
            max_memory_mb=float(d.gradcov.max_memory_mb),
            seed=seed,
        )
        writer.add_many(step, "gradcov", cov.scalars())
        writer.add_array("gradcov/matrix", cov.ordered().numpy().astype(np.float32))
        writer.add_array("gradcov/order", cov.order.numpy())
        writer.add_array("gradcov/labels", cov.labels[cov.order].numpy())
        seconds = time.perf_counter() - t0
        writer.add(step, "timing", "gradcov_s", seconds)
        progress.done("gradcov", seconds)

    if "dynamics" in names and state.dynamics is not None:
        t0 = time.perf_counter()
        progress.start("dynamics")
        head = batch_head(batch, int(d.dynamics.num_inputs))
        scalars = state.dynamics.pause(state.agent, state.replay, head, d.dynamics, cfg.seed, step)
        writer.add_many(step, "dynamics", scalars)
        seconds = time.perf_counter() - t0
        writer.add(step, "timing", "dynamics_s", seconds)
        progress.done("dynamics", seconds)
