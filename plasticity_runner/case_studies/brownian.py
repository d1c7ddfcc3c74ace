"""Gradient descent vs Brownian motion: section 4.2 and appendix A.1 (figure 2).

The loop, top to bottom:

1. the classification MDP of section 3.2 (``env.dataset``, ``env.task``; the paper's "easy" MDP is
   ``true_label``), run as ``env.batch_size`` parallel copies under a uniformly random policy, so
   every step yields a fresh batch of ``env.batch_size`` transitions;
2. one initialisation ``theta_0`` shared by two trajectories (``CoupledTrajectories``):
   ``theta^GD`` with a target network and the optimizer (SGD, lr 1e-3 in A.1), and ``theta^B``;
3. at each step t:
   * gradient descent: one optimizer step on the Q-learning loss (eq. 1) of the batch, against the
     target network (``agent.gamma``, ``agent.double_dqn``); ``Delta_t = theta^GD_{t+1} - theta^GD_t``;
   * Brownian motion: ``theta^B_{t+1} = theta^B_t + |Delta_t|_2 xi_t / |xi_t|_2``,
     ``xi_t ~ N(0, I_d)`` over all parameters: a step of the same norm in a random direction;
   * the target network is copied from ``theta^GD`` every ``env.target_update_steps``;
4. at step 0, every ``env.measure_every_steps`` and at the end, on both trajectories (``measure``):
   the Hessian eigenvalue density of the probe loss ``l(theta) = mean [f_theta(X) - sg(f_theta(X) + eps)]^2``
   (``probes.curvature.hessian_spectrum``, sizes from ``diagnostics.curvature``, ``eps`` drawn per
   input) and the gradient covariance ``C_k`` of the same loss per input (``probes.gradcov``,
   ``k = diagnostics.gradcov.k``), with ``eps`` shared by all inputs when
   ``diagnostics.gradcov.loss=perturbation_shared`` (the preset's choice: per-input ``eps`` makes the
   sign of each entry a coin flip, see ``probes.gradcov``) or per input (``perturbation``).
   ``X`` (images drawn uniformly from the MDP's images) and the seed of ``eps`` are drawn once per
   run and shared by both trajectories and all measurements, so the two differ only in parameters.

Metrics: phases ``gd`` and ``brownian`` at each measurement: ``hessian_top_eig``,
``hessian_min_eig``, ``hessian_trace_est``, ``gradcov_offdiag_mean``, ``gradcov_neg_frac``,
``gradcov_offdiag_abs_mean`` (mean |C_ij| over i != j), ``gradcov_grad_norm_mean``, ``param_norm``,
``dist_from_init`` (``|theta - theta_0|_2``); phase ``train`` every
``log_every_steps``: ``td_loss`` and ``update_norm`` (means over the window); phase ``timing``.
Arrays ``<gd|brownian>/hessian/{density,grid,ritz_values,ritz_weights}`` and
``<gd|brownian>/gradcov/{matrix,order,labels}`` (matrix k-means ordered, as ``probes.diagnostics``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from .. import seeding
from ..agents.dqn import DQNAgent
from ..envs.base import Batch
from ..envs.classification import ClassificationMDP
from ..errors import choice
from ..lifecycle import RunDir
from ..nets import build_network
from ..optim import build_optimizer
from ..probes.curvature import Curvature, hessian_spectrum
from ..probes.gradcov import GradCov, gradient_covariance, perturbation_sample_losses
from ..progress import Progress
from ..seeding import stream_seed
from .common import begin_run, distance, end_run, snapshot

log = logging.getLogger("plasticity_runner")

PROCESSES = ("gd", "brownian")  # metric phases and array prefixes of the two trajectories
# what each process writes under its phase (arrays: under ``<process>/``); the report keys on them
SCALARS = (*Curvature.scalars, *GradCov.scalars, "gradcov_offdiag_abs_mean", "param_norm", "dist_from_init")
ARRAYS = (*Curvature.arrays, *GradCov.arrays)


def make_mdp(env_cfg: Any, device: torch.device, seed: int) -> ClassificationMDP:
    """The classification MDP with one copy per transition of a batch (``env.batch_size`` copies)."""
    mdp_cfg = SimpleNamespace(
        dataset=env_cfg.dataset,
        task=env_cfg.task,
        data_dir=env_cfg.data_dir,
        download=env_cfg.download,
        num_images=env_cfg.num_images,
        label_seed=env_cfg.label_seed,
        num_envs=int(env_cfg.batch_size),
    )
    return ClassificationMDP(mdp_cfg, device, seed)


def next_batch(env: ClassificationMDP, generator: torch.Generator) -> Batch:
    """One step of every copy under uniformly random actions, as a batch of transitions."""
    actions = torch.randint(env.num_actions, (env.num_envs,), generator=generator, device=env.device)
    record = env.step(actions).record
    return Batch(
        o_tm1=env.images[record["o_tm1"]],
        a_tm1=record["a_tm1"],
        r_t=record["r_t"],
        discount_t=record["discount_t"],
        o_t=env.images[record["o_t"]],
    )


@torch.no_grad()
def brownian_step(params: list[torch.Tensor], norm: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """``theta += norm * xi / |xi|_2`` with ``xi ~ N(0, I)`` over all of ``params``; returns the step taken."""
    xi = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    scale = norm / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(xi)))
    torch._foreach_mul_(xi, scale)
    torch._foreach_add_(params, xi)
    return xi


class CoupledTrajectories:
    """Gradient descent and its Brownian twin from one initialisation, stepping in lockstep."""

    def __init__(self, cfg: DictConfig, obs_shape: tuple[int, ...], num_actions: int, device: torch.device):
        online = build_network(cfg.architecture, obs_shape, num_actions).to(device)
        self.brownian = copy.deepcopy(online)  # theta^B_0 = theta^GD_0
        optimizer = build_optimizer(cfg.optimizer, online.parameters())
        self.agent = DQNAgent(cfg.agent, online, copy.deepcopy(online), optimizer, [], num_actions, seed=int(cfg.seed))
        self.gd_params = list(online.parameters())
        self.b_params = list(self.brownian.parameters())
        self.init = snapshot(self.gd_params)
        self.noise_generator = seeding.generator(device, cfg.seed, "brownian/noise")

    @property
    def gd(self) -> nn.Module:
        return self.agent.online

    def networks(self) -> dict[str, nn.Module]:
        return {"gd": self.gd, "brownian": self.brownian}

    def step(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of both; returns the TD loss and the norm of the step (device scalars)."""
        before = snapshot(self.gd_params)
        loss = self.agent.learn(batch, step)[0]  # td_loss (no interventions: the total is the same)
        norm = distance(self.gd_params, before)
        brownian_step(self.b_params, norm, self.noise_generator)
        return loss, norm


def measure(
    cfg: DictConfig, net: nn.Module, inputs: torch.Tensor, seed: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Hessian spectrum and C_k of the probe loss of section 4.2 at ``net``; (scalars, arrays).

    ``inputs`` holds at least ``max(curvature.num_inputs, gradcov.k)`` images; the first of them go
    to each measurement. ``seed`` fixes ``eps`` (and the Lanczos start vectors, k-means); C_k's
    ``eps`` is shared by the inputs or drawn per input as ``diagnostics.gradcov.loss`` says.
    """
    d = cfg.diagnostics
    scalars: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    if d.curvature.enabled:
        spectrum = hessian_spectrum(net, inputs[: int(d.curvature.num_inputs)], seed, d.curvature)
        scalars.update(spectrum.scalars())
        arrays.update(
            {
                "hessian/density": spectrum.density.numpy(),
                "hessian/grid": spectrum.grid.numpy(),
                "hessian/ritz_values": spectrum.ritz_values.numpy(),
                "hessian/ritz_weights": spectrum.ritz_weights.numpy(),
            }
        )
    if d.gradcov.enabled:
        shared = choice(d.gradcov.loss) == "perturbation_shared"
        losses = perturbation_sample_losses(
            net, inputs[: int(d.gradcov.k)], stream_seed(seed, "gradcov"), shared=shared
        )
        cov = gradient_covariance(
            losses,
            num_clusters=int(d.gradcov.num_clusters),
            chunk_size=int(d.gradcov.chunk_size),
            max_memory_mb=float(d.gradcov.max_memory_mb),
            seed=seed,
        )
        scalars.update(cov.scalars())
        off = ~torch.eye(cov.matrix.shape[0], dtype=torch.bool)
        scalars["gradcov_offdiag_abs_mean"] = float(cov.matrix[off].abs().mean())  # alignment, either sign
        arrays.update(
            {
                "gradcov/matrix": cov.ordered().numpy().astype(np.float32),
                "gradcov/order": cov.order.numpy(),
                "gradcov/labels": cov.labels[cov.order].numpy(),
            }
        )
    return scalars, arrays


def run_brownian(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """The figure-2 study for ``total_steps`` steps, the program of ``env=brownian``
    (``envs/brownian.py``), in the run directory ``run`` holds (``lifecycle``); returns the run's summary.

    ``cfg`` is the composed config with ``env=brownian`` (already validated by ``trainer.train``).
    The summary holds, per process, the measured ``hessian_top_eig`` and ``gradcov_neg_frac`` (lists).
    """
    writer = begin_run(cfg, run)
    env_cfg, device = cfg.env, run.device
    if str(cfg.optimizer.kind) != "sgd":
        log.warning("env=brownian with optimizer=%s: the paper's trajectory is SGD (optimizer=sgd)", cfg.optimizer.name)

    # 1-2. the MDP, the coupled trajectories, and the measurement inputs X (fixed for the run)
    env = make_mdp(env_cfg, device, seeding.env_seed(cfg.seed))
    env.reset()
    coupled = CoupledTrajectories(cfg, env.obs_shape, env.num_actions, device)
    act_generator = seeding.generator(device, cfg.seed, "act")
    seed = seeding.evaluation_batch_seed(cfg.seed, 0)
    num_inputs = max(int(cfg.diagnostics.curvature.num_inputs), int(cfg.diagnostics.gradcov.k))
    x_generator = torch.Generator(device).manual_seed(seed)
    inputs = env.images[torch.randint(env.images.shape[0], (num_inputs,), generator=x_generator, device=device)]

    history: dict[str, list[float]] = {
        f"{p}/{m}": [] for p in PROCESSES for m in ("hessian_top_eig", "gradcov_neg_frac")
    }

    def measure_both(step: int) -> None:
        for name, net in coupled.networks().items():
            t0 = time.perf_counter()
            scalars, arrays = measure(cfg, net, inputs, seed)
            params = [p.detach() for p in net.parameters()]
            scalars["param_norm"] = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(params))))
            scalars["dist_from_init"] = float(distance(params, coupled.init))
            writer.add_many(step, name, scalars)
            for key, array in arrays.items():
                writer.add_array(f"{name}/{key}", array)
            writer.add(step, "timing", f"measure_{name}_s", time.perf_counter() - t0)
            for m in ("hessian_top_eig", "gradcov_neg_frac"):
                if m in scalars:
                    history[f"{name}/{m}"].append(scalars[m])
        writer.flush(step)

    total, every = int(cfg.total_steps), int(env_cfg.measure_every_steps)
    log.info(
        "run %s on %s: %d steps of gradient descent and Brownian motion, measured every %d; outputs in %s",
        run.run_id,
        device,
        total,
        every,
        run.run_dir.resolve(),
    )
    measure_both(0)

    # 3-4. lockstep updates; measurements at the cadence
    progress = Progress(cfg.progress, total, 0)
    loss_sum = torch.zeros((), device=device)
    norm_sum = torch.zeros((), device=device)
    window_start, t_window, status, step = 0, time.perf_counter(), "complete", 0
    try:
        while step < total:
            batch = next_batch(env, act_generator)
            step += 1
            loss, norm = coupled.step(batch, step)
            loss_sum += loss
            norm_sum += norm
            if step % int(env_cfg.target_update_steps) == 0:
                coupled.agent.update_target(step)

            at_measure = step % every == 0 or step == total
            if step % int(cfg.log_every_steps) == 0 or at_measure:  # a log point: read device values
                n, seconds = step - window_start, time.perf_counter() - t_window
                values = {"td_loss": float(loss_sum) / n, "update_norm": float(norm_sum) / n}
                writer.add_many(step, "train", values)
                writer.add_many(step, "timing", {"train_s": seconds, "steps_per_s": n / max(seconds, 1e-9)})
                progress.update(step, n, **values)
                if not all(math.isfinite(v) for v in values.values()):
                    writer.add(step, "train", "diverged", 1.0)
                    log.warning("run %s diverged at step %d (td_loss=%s)", run.run_id, step, values["td_loss"])
                    if cfg.on_divergence == "stop":
                        writer.flush(step)
                        status = "diverged"
                        break
                if at_measure:
                    measure_both(step)
                loss_sum.zero_(), norm_sum.zero_()
                window_start, t_window = step, time.perf_counter()
    finally:
        progress.close()
    writer.flush(step)
    return end_run(run, status, step, **history)
