"""Optimizer instability under label re-randomisation: section 4.1 and appendix A.1 (figure 1).

The loop, top to bottom:

1. take the first ``env.num_images`` training images of ``env.dataset`` (null: all); they stay fixed for the run;
   their labels are a random permutation of their true labels (``RelabelledImages``);
2. build the network (``architecture``; its ten outputs are read as class logits) and the
   optimizer (``optimizer``: Adam of eq. 6 with the default or the tuned hyperparameters of A.1);
3. for each of ``env.num_iterations`` iterations:
   a. ``env.iteration_steps`` optimizer steps on the cross-entropy of minibatches of
      ``env.batch_size`` images drawn uniformly with replacement, against the current labels;
   b. evaluate on ``env.eval_samples`` images drawn with replacement (``evaluate``): accuracy
      against the current labels and the fraction of dead ReLU units;
   c. re-draw the labels (a fresh permutation); parameters and optimizer state carry over.

Metrics written at the end of each iteration, at step = optimizer steps done so far (one shard per
iteration): phase ``eval``: ``accuracy``, ``dead_frac`` (and ``dead_frac/<layer>``),
``adam_update_norm`` (the mean over the iteration's steps of ``|theta_{t+1} - theta_t|_2``, the
norm of the parameter change one optimizer step makes; named for Adam, measured for any optimizer),
``adam_update_norm_max`` (its largest step), ``iteration`` (1-based); phase ``train``: ``loss``
(mean minibatch cross-entropy over the iteration); phase ``timing``: ``iteration_s``.

Choices A.1 leaves open (also in docs/case-studies.md): the loss (cross-entropy), the minibatch
size and steps per iteration, sampling with replacement, "randomly permuted labels" read as a
permutation of the subset's true labels, and evaluation on the memorised images before relabelling.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from .. import seeding
from ..envs.datasets import check_num_images, load_dataset
from ..errors import choice
from ..lifecycle import RunDir
from ..nets import build_network
from ..optim import build_optimizer
from ..probes.statistics import DEAD_FRAC, layer_activities
from ..progress import Progress
from ..seeding import stream_seed
from .common import begin_run, distance, end_run, snapshot

log = logging.getLogger("plasticity_runner")

NUM_CLASSES = 10
EVAL_CHUNK = 1024  # images per forward pass of the evaluation

# the names of each iteration's evaluation (phase ``eval``); the report keys on them (``report/names.py``)
PHASE = "eval"
ACCURACY, UPDATE_NORM = "accuracy", "adam_update_norm"
SCALARS = (ACCURACY, DEAD_FRAC, f"{DEAD_FRAC}/*", UPDATE_NORM, "adam_update_norm_max", "iteration")


class RelabelledImages:
    """A fixed image set whose labels are a fresh random permutation of its true labels per iteration.

    ``images`` never changes; ``relabel()`` replaces ``labels`` (seeded by ``label_seed``, so the
    sequence of labellings is a function of that seed alone; ``labels_seed`` gives it).
    """

    def __init__(self, images: torch.Tensor, true_labels: torch.Tensor, label_seed: int):
        self.images = images
        self.true_labels = true_labels
        self.generator = torch.Generator().manual_seed(int(label_seed))  # on the CPU: device-independent labels
        self.labels = self.relabel()

    def relabel(self) -> torch.Tensor:
        """Draw the next labelling: the true labels under a fresh random permutation."""
        perm = torch.randperm(self.true_labels.numel(), generator=self.generator)
        self.labels = self.true_labels.cpu()[perm].to(self.images.device)
        return self.labels

    def __len__(self) -> int:
        return self.images.shape[0]


def labels_seed(env_cfg: Any, run_seed: int) -> int:
    """The seed of the run's sequence of relabellings: ``env.label_seed`` when set, else the run
    seed's stream ``memorization/labels`` (each run seed memorises its own random labels)."""
    pinned = env_cfg.label_seed
    return stream_seed(run_seed, "memorization/labels") if pinned is None else int(pinned)


def load_images(env_cfg: Any, device: torch.device, run_seed: int) -> RelabelledImages:
    """The first ``num_images`` training images of the dataset (null: all of them), labelled by the
    sequence of ``labels_seed``; more than the dataset holds is a ``ConfigError`` naming
    ``env.num_images``."""
    dataset = choice(env_cfg.dataset)
    images, labels = load_dataset(dataset, env_cfg.data_dir, env_cfg.download)
    n = images.shape[0] if env_cfg.num_images is None else int(env_cfg.num_images)
    check_num_images(n, images.shape[0], dataset)
    return RelabelledImages(images[:n].to(device), labels[:n].to(device), labels_seed(env_cfg, run_seed))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is at the label (ties go to the lowest index)."""
    return float((logits.argmax(dim=1) == labels).double().mean())


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``accuracy`` against ``labels`` and ``dead_frac``: the fraction of hidden units (all layers)
    whose activation is ``<= 0`` on every one of ``images`` (``probes.statistics`` definition),
    with ``dead_frac/<layer>`` per activation module. ``net`` is evaluated in eval mode and left
    in the mode it was in."""
    was_training = net.training
    net.eval()
    try:
        logits = torch.cat([net(images[i : i + EVAL_CHUNK]) for i in range(0, images.shape[0], EVAL_CHUNK)])
    finally:
        net.train(was_training)
    out = {ACCURACY: accuracy(logits, labels)}
    activity, _ = layer_activities(net, images, chunk_size=EVAL_CHUNK)
    dead, units = 0, 0
    for name, act in activity.items():
        n_dead = int((~act.ever_positive).sum())
        out[f"{DEAD_FRAC}/{name}"] = n_dead / act.ever_positive.numel()
        dead, units = dead + n_dead, units + act.ever_positive.numel()
    out[DEAD_FRAC] = dead / units if units else math.nan
    return out


def eval_seed(seed: int, iteration: int) -> int:
    """Seed of the evaluation sample of one iteration (stream ``memorization/eval``), apart from the
    training streams."""
    return stream_seed(seed, "memorization/eval", iteration)


def run_memorization(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """The figure-1 memorisation study, the program of ``env=memorization`` (``envs/memorization.py``),
    in the run directory ``run`` holds (``lifecycle``); returns the run's summary.

    ``cfg`` is the composed config with ``env=memorization`` (already validated by ``trainer.train``).
    The summary holds ``accuracy`` and ``dead_frac`` per iteration (lists).
    """
    writer = begin_run(cfg, run)
    env_cfg, device = cfg.env, run.device

    # 1-2. the fixed images with their first labelling, the network and the optimizer
    data = load_images(env_cfg, device, int(cfg.seed))
    net = build_network(cfg.architecture, tuple(data.images.shape[1:]), NUM_CLASSES).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params)
    batch_generator = seeding.generator(device, cfg.seed, "memorization/batches")
    run.meta["num_images_used"] = len(data)

    steps_per_iteration, num_iterations = int(env_cfg.iteration_steps), int(env_cfg.num_iterations)
    total = steps_per_iteration * num_iterations
    log.info(
        "run %s on %s: memorising %d %s images, %d iterations of %d steps; outputs in %s",
        run.run_id,
        device,
        len(data),
        choice(env_cfg.dataset),
        num_iterations,
        steps_per_iteration,
        run.run_dir.resolve(),
    )
    progress = Progress(cfg.progress, total, 0)
    history: dict[str, list[float]] = {"accuracy": [], "dead_frac": []}
    status, step = "complete", 0
    try:
        for iteration in range(1, num_iterations + 1):
            # 3a. train on the current labels (device accumulators: no host sync in the loop)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            update_sum = torch.zeros((), device=device)
            update_max = torch.zeros((), device=device)
            net.train()
            for _ in range(steps_per_iteration):
                idx = torch.randint(len(data), (int(env_cfg.batch_size),), generator=batch_generator, device=device)
                loss = F.cross_entropy(net(data.images[idx]), data.labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                before = snapshot(params)
                optimizer.step()
                update = distance(params, before)
                loss_sum += loss.detach()
                update_sum += update
                torch.maximum(update_max, update, out=update_max)
                step += 1

            # 3b. evaluate on the labels just trained on
            g = torch.Generator(device).manual_seed(eval_seed(cfg.seed, iteration))
            idx = torch.randint(len(data), (int(env_cfg.eval_samples),), generator=g, device=device)
            scalars = evaluate(net, data.images[idx], data.labels[idx])
            scalars.update(
                {
                    UPDATE_NORM: float(update_sum) / steps_per_iteration,
                    "adam_update_norm_max": float(update_max),
                    "iteration": iteration,
                }
            )
            train_loss = float(loss_sum) / steps_per_iteration
            writer.add_many(step, PHASE, scalars)
            writer.add(step, "train", "loss", train_loss)
            writer.add(step, "timing", "iteration_s", time.perf_counter() - t0)
            history["accuracy"].append(scalars["accuracy"])
            history["dead_frac"].append(scalars["dead_frac"])
            progress.update(step, steps_per_iteration, accuracy=scalars["accuracy"], dead_frac=scalars["dead_frac"])
            if not math.isfinite(train_loss):
                writer.add(step, "train", "diverged", 1.0)
                log.warning("run %s diverged in iteration %d (loss=%s)", run.run_id, iteration, train_loss)
                if cfg.on_divergence == "stop":
                    writer.flush(step)
                    status = "diverged"
                    break
            writer.flush(step)

            # 3c. new labels for the same images
            data.relabel()
    finally:
        progress.close()
    return end_run(run, status, step, **history)
