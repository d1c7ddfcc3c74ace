"""The program of every continual protocol: train on the stream, pause for the probe and the
diagnostics, record each task's own measure; resume from the newest checkpoint.

Top to bottom (``run_stream``):

1. build the stream (``streams.py``, one class per protocol), the network of ``architecture`` (its
   outputs: the class logits, or one regression value) with the interventions' network options,
   the optimizer and the ``SupervisedAgent``; the training-dynamics tracker (``theta_0``);
2. resume from the newest complete checkpoint, or pause at step 0 (``P(theta_0)``);
3. for each optimizer step ``t = 1..total_steps``: the minibatch ``stream.batch(t)``, one optimizer
   step (``SupervisedAgent.learn``: its online measure before the update is accumulated on the
   device); then the interventions' after-step hooks and, when step ``t`` closes a task (not the
   last), the task switch (``SupervisedAgent.switch_task``: the target-update hooks);
4. at every log point (``log_every_steps``, every pause and every task end) the train metrics; at
   a task end its measure (phase ``task``); every ``probe.every_steps`` and at the end the pause of
   ``probes/pause.py`` (``probe.at``: before or after the step's hooks, as in the DQN runs), on the
   input distribution of the task of step ``t`` (``TaskInputs``), then the metrics shard and the
   checkpoint.

Metrics: phase ``train`` at log points: ``loss`` (mean supervised loss over the window, penalties
left out), ``online_accuracy`` (classification) or ``online_error`` (regression: mean squared
error of the prediction made before each update, Dohare et al.'s measure), ``task``, the
interventions' counters and the dynamics' log-point metrics; phase ``task`` at the last step of
each task: ``task`` (0-based), ``task_steps``, the task's ``online_accuracy`` / ``online_error``
over all its examples, ``train_accuracy_end`` (classification: accuracy on ``env.eval_samples``
inputs of the task's training distribution after its last step, stream ``<protocol>/eval``) and
``heldout_accuracy`` (where the protocol holds images out); the pause's phases as in the DQN runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from .. import checkpoint, seeding, status_file
from .. import interventions as interventions_lib
from ..errors import choice
from ..lifecycle import RunDir
from ..nets import build_network
from ..optim import build_optimizer
from ..preemption import PreemptionGuard
from ..probes.dynamics import DynamicsTracker
from ..probes.pause import run_pause
from ..progress import Progress
from ..train_state import (
    check_device,
    global_rng_state,
    learner_state_dict,
    load_learner_state_dict,
    set_global_rng_state,
)
from .learner import SupervisedAgent, make_batch
from .streams import Stream

log = logging.getLogger("plasticity_runner")

TRAIN, TASK = "train", "task"  # the phases this loop writes besides the pause's
ACCURACY, ERROR, HELDOUT = "online_accuracy", "online_error", "heldout_accuracy"


class TaskInputs:
    """The pause's "replay": inputs of one task's distribution (``Stream.sample``), as ``Batch``es."""

    def __init__(self, stream: Stream, task: int):
        self.stream, self.task = stream, task

    def sample(self, n: int, generator: torch.Generator) -> Any:
        x, y = self.stream.sample(self.task, n, generator)
        return make_batch(x, y, self.stream.kind)

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.stream.sample(self.task, n, generator)[0]


@dataclass
class PauseState:
    """What ``probes.pause.run_pause`` reads of the training state."""

    step: int
    agent: SupervisedAgent
    replay: TaskInputs
    obs: torch.Tensor  # only its device is read
    build_fresh: Any
    dynamics: DynamicsTracker | None
    compiled_probe_fit: Any = None


@dataclass
class TaskSums:
    """The current task's running sums of the online measure (device scalars; checkpointed)."""

    measure: torch.Tensor
    examples: int = 0


@torch.no_grad()
def accuracy(agent: SupervisedAgent, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` whose largest output is at the label (eval mode; ties to the lowest index)."""
    return float((agent.predict(x).argmax(dim=1) == y).double().mean())


def task_measures(cfg: DictConfig, stream: Stream, agent: SupervisedAgent, task: int, sums: TaskSums) -> dict:
    """Phase ``task`` at the task's last step (module docstring)."""
    out = {"task": float(task), "task_steps": float(stream.ends[task] - stream.task_start(task))}
    mean = float(sums.measure) / max(sums.examples, 1)
    if stream.kind == "classification":
        out[ACCURACY] = mean
        g = seeding.generator(sums.measure.device, cfg.seed, f"{cfg.env.name}/eval", task)
        x, y = stream.sample(task, int(cfg.env.eval_samples), g)
        out["train_accuracy_end"] = accuracy(agent, x, y)
        held = stream.heldout(task)
        if held is not None:
            out[HELDOUT] = accuracy(agent, *held)
    else:
        out[ERROR] = mean
    return out


def run_stream(cfg: DictConfig, run: RunDir, stream: Stream) -> dict[str, Any]:
    """Steps 1-4 of the module's list for ``stream`` in the run directory ``run`` holds."""
    run_dir, device, record = run.run_dir, run.device, run.record
    seeding.seed_everything(int(cfg.seed))
    interventions = interventions_lib.build_interventions(cfg.intervention)
    net_options = interventions_lib.network_options(interventions)

    def build_fresh() -> torch.nn.Module:
        return build_network(
            cfg.architecture, stream.obs_shape, stream.num_outputs, returns=stream.target_range, **net_options
        ).to(device)

    online = build_fresh()
    optimizer = build_optimizer(cfg.optimizer, [p for p in online.parameters()])
    agent = SupervisedAgent(stream.kind, online, optimizer, interventions, build_fresh, int(cfg.seed))
    dyn = cfg.diagnostics.dynamics
    dynamics = DynamicsTracker(online, bool(dyn.log_point_metrics)) if dyn.enabled else None
    sums = TaskSums(torch.zeros((), device=device))
    step = 0

    def state_dict() -> dict[str, Any]:
        return {
            "step": step,
            **learner_state_dict(agent, interventions, dynamics),
            "task_sums": {"measure": sums.measure, "examples": sums.examples},
            "rng": global_rng_state(),
            "device": device.type,
        }

    def load_state_dict(bundle: dict[str, Any], where: Any) -> None:
        nonlocal step
        check_device(bundle, device, where)
        load_learner_state_dict(bundle, agent, interventions, dynamics)
        sums.measure, sums.examples = bundle["task_sums"]["measure"].to(device), int(bundle["task_sums"]["examples"])
        set_global_rng_state(bundle["rng"])
        step = int(bundle["step"])

    resumed_from = checkpoint.load_latest(run_dir, load_state_dict, device) if cfg.checkpoint.enabled else None
    checkpoint.discard_after(run_dir, resumed_from)
    writer = run.start(resumed_from, tasks=len(stream.ends))
    total, probe_every, log_every = int(cfg.total_steps), int(cfg.probe.every_steps), int(cfg.log_every_steps)
    ends = set(stream.ends)
    probe_before_hooks = choice(cfg.probe.at) == "before_interventions"
    log.info(
        "run %s on %s: %s, %d steps in %d tasks%s; outputs in %s",
        run.run_id,
        device,
        cfg.env.name,
        total,
        len(stream.ends),
        f", resumed at step {resumed_from}" if resumed_from is not None else "",
        run_dir.resolve(),
    )

    def pause() -> dict[str, float]:
        state = PauseState(step, agent, TaskInputs(stream, stream.task_of(step)), sums.measure, build_fresh, dynamics)
        return run_pause(cfg, state, writer)

    def persist() -> None:
        writer.flush(step)
        if cfg.checkpoint.enabled:
            checkpoint.save(run_dir, step, state_dict(), int(cfg.checkpoint.keep))

    summary: dict[str, Any] = {"probe": {}, "tasks": []}
    if resumed_from is None:
        summary["probe"] = pause()
        persist()

    status = "complete"
    progress = Progress(cfg.progress, total, step)
    loss_sum = torch.zeros((), device=device)
    window_measure = torch.zeros((), device=device)
    window_start, window_examples, t_window = step, 0, time.perf_counter()
    preempt = PreemptionGuard(on_hand_over=record.interrupted, on_resume=record.resumed).install()
    try:
        while step < total:
            x, y = stream.batch(step + 1)
            loss, measure = agent.learn(make_batch(x, y, stream.kind))
            if dynamics is not None:
                dynamics.after_backward(agent.online)
            step += 1
            loss_sum += loss
            window_measure += measure
            sums.measure += measure
            window_examples += x.shape[0]
            sums.examples += x.shape[0]
            at_pause, task_end = step % probe_every == 0 or step == total, step in ends

            def finish_step() -> None:
                # the current task's inputs, as the "replay" an intervention may draw from (C-CHAIN's reference batch)
                agent.networks.replay = TaskInputs(stream, stream.task_of(step))
                agent.after_step(step)
                if task_end and step < total:
                    agent.switch_task(step)

            if not (step % log_every == 0 or at_pause or task_end):
                finish_step()
                continue
            n = step - window_start
            seconds = time.perf_counter() - t_window
            name = ACCURACY if stream.kind == "classification" else ERROR
            values = {
                "loss": float(loss_sum) / n,
                name: float(window_measure) / window_examples,
                "task": float(stream.task_of(step)),
            }
            if dynamics is not None:
                values.update(dynamics.log_point(agent.online))
            writer.add_many(step, "timing", {"train_s": seconds, "steps_per_s": n / max(seconds, 1e-9)})
            if task_end:
                measures = task_measures(cfg, stream, agent, stream.task_of(step), sums)
                writer.add_many(step, TASK, measures)
                summary["tasks"].append(measures)
                sums.measure.zero_()
                sums.examples = 0
            if not math.isfinite(values["loss"]):
                writer.add(step, TRAIN, "diverged", 1.0)
                log.warning("run %s diverged at step %d (loss=%s)", run.run_id, step, values["loss"])
                if cfg.on_divergence == "stop":
                    writer.add_many(step, TRAIN, values)
                    writer.flush(step)
                    status = "diverged"
                    break
            if at_pause and probe_before_hooks:
                summary["probe"] = pause() or summary["probe"]
            finish_step()
            if at_pause and not probe_before_hooks:
                summary["probe"] = pause() or summary["probe"]
            for intervention in interventions:
                values.update(intervention.metrics())
            if dynamics is not None:
                dynamics.end_window(agent.online)
            writer.add_many(step, TRAIN, values)
            if at_pause:
                persist()
            progress.update(step, n, loss=values["loss"], **{name: values[name]})
            record.heartbeat(step)
            loss_sum.zero_(), window_measure.zero_()
            window_start, window_examples, t_window = step, 0, time.perf_counter()
            if preempt.requested:
                preempt.stop(save=None if at_pause or not cfg.checkpoint.enabled else persist)
    finally:
        preempt.uninstall()
        progress.close()
    return run.finish(status_file.end_fields(run_dir, status, step, cfg.on_divergence), **summary)
