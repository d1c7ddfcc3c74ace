"""The data streams of the continual protocols: what optimizer step ``t`` trains on, and its task.

Steps count from 1: step ``t`` is the ``t``-th optimizer step. A stream splits the run into tasks
(``Stream.ends``: the step that closes each task, the last one ``total_steps``); step ``t`` belongs
to task ``task_of(t)`` (0-based; the pause after 0 steps measures task 0). A stream is a pure
function of the run seed and the step: every draw comes from a named stream of ``seeding``
(``<protocol>/<what>``, indexed by task or by block of steps), so a resumed run draws exactly what
an uninterrupted one does and nothing here is checkpointed. What a stream offers:

* ``batch(t)``: the minibatch ``(x, y)`` of step ``t`` on the stream's device;
* ``sample(task, n, generator)``: ``n`` inputs of ``task``'s distribution with their targets (the
  pause's input sets: the probe's ``X``, the diagnostics' batch);
* ``heldout(task)``: held-out inputs and targets of ``task`` (None where the protocol has none).

``y`` is a class index (int64, ``kind == "classification"``) or a real target (float32,
``kind == "regression"``).
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

from ..envs.datasets import load_dataset
from ..errors import choice
from ..seeding import stream_seed

BLOCK_STEPS = 1000  # steps whose minibatch indices are drawn at once (one seed per block)


def _generator(seed: int, *path: str | int) -> torch.Generator:
    """A CPU generator of the named stream: device-independent draws (moved to the device after)."""
    return torch.Generator().manual_seed(stream_seed(seed, *path))


class Stream:
    """What the loop needs of a protocol's stream (module docstring)."""

    kind: str = "classification"
    obs_shape: tuple[int, ...] = ()
    num_outputs: int = 10
    ends: list[int] = []  # the step that closes each task, increasing; the last is total_steps
    target_range: tuple[float, float] | None = None  # bounds of a regression target (the two-hot support's ends)

    def task_of(self, step: int) -> int:
        """The task of optimizer step ``step`` (step 0, before training: task 0)."""
        return min(bisect.bisect_left(self.ends, max(int(step), 1)), len(self.ends) - 1)

    def task_start(self, task: int) -> int:
        """The number of steps done before ``task`` starts."""
        return 0 if task == 0 else self.ends[task - 1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample(self, task: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def heldout(self, task: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None


def equal_tasks(total_steps: int, steps_per_task: int) -> list[int]:
    """Ends of tasks of ``steps_per_task`` steps up to ``total_steps`` (the last one may be shorter)."""
    ends = list(range(steps_per_task, total_steps, steps_per_task)) + [total_steps]
    return ends if total_steps > 0 else [0]


class BlockIndices:
    """Minibatch indices drawn uniformly with replacement from ``range(pool)`` per step: the indices
    of step ``t`` come from the block ``(t - 1) // BLOCK_STEPS``, drawn at once under the seed of
    stream ``<name>, key, block`` (``key``: the task), so they are a function of the step alone."""

    def __init__(self, seed: int, name: str, batch_size: int, device: torch.device):
        self.seed, self.name, self.batch_size, self.device = seed, name, batch_size, device
        self._cached: tuple[Any, torch.Tensor] | None = None

    def __call__(self, key: int, pool: int, step: int) -> torch.Tensor:
        block = (step - 1) // BLOCK_STEPS
        if self._cached is None or self._cached[0] != (key, pool, block):
            g = _generator(self.seed, self.name, key, block)
            drawn = torch.randint(pool, (BLOCK_STEPS, self.batch_size), generator=g)
            self._cached = ((key, pool, block), drawn.to(self.device))
        return self._cached[1][(step - 1) % BLOCK_STEPS]


# ------------------------------------------------------------------------ slowly-changing regression


class LTUTarget:
    """The target network of the slowly-changing regression problem (Dohare et al. 2024; their
    ``FixLTUNet``): one hidden layer of ``num_features`` linear threshold units, every weight and
    bias drawn uniformly from {-1, +1}. Unit ``i`` fires when ``w_i . x + b_i > tau_i`` with
    ``tau_i = beta * (m + 1) - S_i``, ``S_i = (m - sum_j w_ij + b_i) / 2`` (their code's formula),
    and ``y = v . features + c``."""

    def __init__(self, num_inputs: int, num_features: int, beta: float, generator: torch.Generator):
        def signs(*shape: int) -> torch.Tensor:
            return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1

        m = num_inputs
        self.w1, self.b1 = signs(num_features, m), signs(num_features)
        self.w2, self.b2 = signs(num_features), signs(1)
        s = (m - self.w1.sum(dim=1) + self.b1) / 2
        self.tau = beta * (m + 1) - s

    def to(self, device: torch.device) -> LTUTarget:
        for name in ("w1", "b1", "w2", "b2", "tau"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = (x @ self.w1.T + self.b1 > self.tau).float()
        return features @ self.w2 + self.b2


class BitFlipRegression(Stream):
    """Slowly-changing regression (Dohare et al. 2024, "bit-flipping problem"; their
    ``slowly_changing_regression`` with ``flip_one``): inputs of ``num_bits`` bits, the first
    ``num_flipping_bits`` of which stay fixed for ``flip_every_examples`` examples, after which one
    of them, chosen uniformly, flips; the other bits are drawn afresh (Bernoulli 1/2) for every
    example. The target is a fixed ``LTUTarget``. A task is one flip period (``flip_every_examples
    / batch_size`` steps): flip ``k`` happens between task ``k - 1`` and task ``k``.

    Streams (``seeding``): ``slowly_changing_regression/target`` (the target network),
    ``.../flips`` (the first flipping bits, then which bit flips at each period),
    ``.../bits, <task>`` (the random bits of the task's examples, in order).
    """

    kind, num_outputs = "regression", 1
    NAME = "slowly_changing_regression"

    def __init__(self, env_cfg: Any, total_steps: int, seed: int, device: torch.device):
        self.m, self.f = int(env_cfg.num_bits), int(env_cfg.num_flipping_bits)
        self.batch_size, self.device, self.seed = int(env_cfg.batch_size), device, seed
        self.examples_per_task = int(env_cfg.flip_every_examples)
        self.steps_per_task = self.examples_per_task // self.batch_size
        self.obs_shape = (self.m,)
        self.ends = equal_tasks(total_steps, self.steps_per_task)
        self.target = LTUTarget(
            self.m, int(env_cfg.target_features), float(env_cfg.beta), _generator(seed, self.NAME, "target")
        ).to(device)
        w2, b2 = self.target.w2, float(self.target.b2)  # y = b2 + the sum of the firing units' weights
        self.target_range = (b2 + float(w2.clamp(max=0).sum()), b2 + float(w2.clamp(min=0).sum()))
        g = _generator(seed, self.NAME, "flips")
        flipping = [torch.randint(0, 2, (self.f,), generator=g).float()]
        self.flipped_bit = [-1]  # the bit that flipped at the start of each task (none before task 0)
        for _ in range(1, len(self.ends)):
            bit = int(torch.randint(self.f, (1,), generator=g)) if self.f else -1
            bits = flipping[-1].clone()
            if bit >= 0:
                bits[bit] = 1 - bits[bit]
            flipping.append(bits)
            self.flipped_bit.append(bit)
        self.flipping = torch.stack(flipping).to(device)  # [tasks, f]
        self._task_inputs: tuple[int, torch.Tensor] | None = None

    def task_inputs(self, task: int) -> torch.Tensor:
        """The ``examples_per_task`` inputs of ``task`` in order ``[E, m]`` (cached: one task at a time)."""
        if self._task_inputs is None or self._task_inputs[0] != task:
            g = _generator(self.seed, self.NAME, "bits", task)
            random_bits = torch.randint(0, 2, (self.examples_per_task, self.m - self.f), generator=g).float()
            x = torch.cat([self.flipping[task].cpu().expand(self.examples_per_task, self.f), random_bits], dim=1)
            self._task_inputs = (task, x.to(self.device))
        return self._task_inputs[1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task_of(step)
        i = (step - 1 - self.task_start(task)) * self.batch_size
        x = self.task_inputs(task)[i : i + self.batch_size]
        return x, self.target(x)

    def sample(self, task: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        random_bits = torch.randint(0, 2, (n, self.m - self.f), generator=generator, device=self.device).float()
        x = torch.cat([self.flipping[task].expand(n, self.f), random_bits], dim=1)
        return x, self.target(x)


# ------------------------------------------------------------------------------- image protocols


def load_images(env_cfg: Any, device: torch.device, heldout_images: int) -> tuple[torch.Tensor, ...]:
    """``(train_x, train_y, heldout_x, heldout_y)``: the data set's training split, its last
    ``heldout_images`` images held out (never trained on); ``env.num_images`` (when set) keeps the
    first ones of the rest. The data set is ``env.dataset`` exactly: no other is tried."""
    dataset = choice(env_cfg.dataset)
    images, labels = load_dataset(dataset, env_cfg.data_dir, env_cfg.download)
    n = images.shape[0]
    if heldout_images >= n:
        raise ValueError(f"env.heldout_images={heldout_images} leaves no training image of {dataset} ({n} images)")
    train_x, train_y = images[: n - heldout_images], labels[: n - heldout_images]
    limit = getattr(env_cfg, "num_images", None)
    if limit is not None and int(limit) < train_x.shape[0]:
        train_x, train_y = train_x[: int(limit)], train_y[: int(limit)]
    held_x, held_y = images[n - heldout_images :], labels[n - heldout_images :]
    return train_x.to(device), train_y.to(device), held_x.to(device), held_y.to(device)


def permute_pixels(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` with its flattened pixels reordered: pixel ``j`` of the result is pixel
    ``permutation[j]`` of the input (channels and positions flattened together)."""
    return x.flatten(1)[:, permutation].view_as(x)


class PermutedImages(Stream):
    """Online permuted MNIST (Dohare et al. 2024; their ``permuted_mnist/online_expr.py``): task
    ``k`` applies a fixed random permutation of the pixels to every image and makes a single pass
    over the training images in a random order, ``batch_size`` images per step; the first task is
    permuted too, as in their code. The remainder of the images that do not fill a last minibatch
    is not trained on in that task.

    Streams: ``permuted_mnist/pixels, <task>`` (the task's pixel permutation),
    ``permuted_mnist/order, <task>`` (the task's order of the images).
    """

    NAME = "permuted_mnist"

    def __init__(self, env_cfg: Any, total_steps: int, seed: int, device: torch.device):
        self.seed, self.device, self.batch_size = seed, device, int(env_cfg.batch_size)
        self.x, self.y, self.held_x, self.held_y = load_images(env_cfg, device, int(env_cfg.heldout_images))
        self.obs_shape = tuple(self.x.shape[1:])
        self.steps_per_task = self.x.shape[0] // self.batch_size
        if self.steps_per_task == 0:
            raise ValueError(f"env.batch_size={self.batch_size} exceeds the {self.x.shape[0]} training images")
        self.ends = equal_tasks(total_steps, self.steps_per_task)
        self._task: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def permutations(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel permutation, image order)`` of ``task`` (cached: one task at a time)."""
        if self._task is None or self._task[0] != task:
            pixels = torch.randperm(self.x[0].numel(), generator=_generator(self.seed, self.NAME, "pixels", task))
            order = torch.randperm(self.x.shape[0], generator=_generator(self.seed, self.NAME, "order", task))
            self._task = (task, pixels.to(self.device), order.to(self.device))
        return self._task[1], self._task[2]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task_of(step)
        pixels, order = self.permutations(task)
        i = (step - 1 - self.task_start(task)) * self.batch_size
        idx = order[i : i + self.batch_size]
        return permute_pixels(self.x[idx], pixels), self.y[idx]

    def sample(self, task: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.x.shape[0], (n,), generator=generator, device=self.device)
        return permute_pixels(self.x[idx], self.permutations(task)[0]), self.y[idx]

    def heldout(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        return permute_pixels(self.held_x, self.permutations(task)[0]), self.held_y


class ShuffledLabels(Stream):
    """Shuffled-label sequences (figure 1's memorisation, Lyle et al. 2023 section 4.1; Kumar et al.
    2023): the first ``num_images`` training images stay fixed; task ``k`` labels them with a fresh
    random permutation of their true labels and lasts ``steps_per_task`` steps of minibatches drawn
    uniformly with replacement. No held-out set: the labels are random.

    Streams: ``shuffled_labels/labels, <task>`` (the task's permutation of the labels),
    ``shuffled_labels/batches, <task>, <block>`` (minibatch indices, ``BlockIndices``).
    """

    NAME = "shuffled_labels"

    def __init__(self, env_cfg: Any, total_steps: int, seed: int, device: torch.device):
        self.seed, self.device = seed, device
        self.x, self.true_y = _first_images(env_cfg, device)
        self.obs_shape = tuple(self.x.shape[1:])
        self.ends = equal_tasks(total_steps, int(env_cfg.steps_per_task))
        self.indices = BlockIndices(seed, f"{self.NAME}/batches", int(env_cfg.batch_size), device)
        self._labels: tuple[int, torch.Tensor] | None = None

    def labels(self, task: int) -> torch.Tensor:
        """The labels of ``task``: the true labels under the task's permutation (cached)."""
        if self._labels is None or self._labels[0] != task:
            perm = torch.randperm(self.true_y.numel(), generator=_generator(self.seed, self.NAME, "labels", task))
            self._labels = (task, self.true_y[perm.to(self.device)])
        return self._labels[1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task_of(step)
        idx = self.indices(task, self.x.shape[0], step)
        return self.x[idx], self.labels(task)[idx]

    def sample(self, task: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.x.shape[0], (n,), generator=generator, device=self.device)
        return self.x[idx], self.labels(task)[idx]


def _first_images(env_cfg: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``env.num_images`` training images and their true labels (null: all of them; more
    than the data set holds is refused before the run starts, ``datasets.check_data``)."""
    dataset = choice(env_cfg.dataset)
    images, labels = load_dataset(dataset, env_cfg.data_dir, env_cfg.download)
    n = images.shape[0] if env_cfg.num_images is None else int(env_cfg.num_images)
    return images[:n].to(device), labels[:n].to(device)


class WarmStart(Stream):
    """Warm-starting (Ash & Adams 2020): task 0 trains ``warm_steps`` steps on the first
    ``warm_fraction`` of the training images (in a random order fixed for the run), task 1
    ``full_steps`` steps on all of them; minibatches drawn uniformly with replacement. With
    ``warm_steps = 0`` there is one task: the network trained from scratch on all the data, the
    comparison run. The last ``heldout_images`` images are the test set of both tasks.

    Streams: ``warm_start/split`` (the order whose first images form the warm-up subset),
    ``warm_start/batches, <task>, <block>`` (minibatch indices, ``BlockIndices``).
    """

    NAME = "warm_start"

    def __init__(self, env_cfg: Any, total_steps: int, seed: int, device: torch.device):
        self.seed, self.device = seed, device
        self.x, self.y, self.held_x, self.held_y = load_images(env_cfg, device, int(env_cfg.heldout_images))
        self.obs_shape = tuple(self.x.shape[1:])
        n = self.x.shape[0]
        order = torch.randperm(n, generator=_generator(seed, self.NAME, "split")).to(device)
        self.warm_size = max(1, math.floor(float(env_cfg.warm_fraction) * n))
        warm, full = int(env_cfg.warm_steps), int(env_cfg.full_steps)
        self.pools = ([order[: self.warm_size]] if warm else []) + [order]  # image indices of each task
        self.ends = [warm, warm + full] if warm else [full]
        if self.ends[-1] != total_steps:
            raise ValueError(f"total_steps={total_steps} must equal env.warm_steps + env.full_steps = {self.ends[-1]}")
        self.indices = BlockIndices(seed, f"{self.NAME}/batches", int(env_cfg.batch_size), device)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task_of(step)
        pool = self.pools[task]
        idx = pool[self.indices(task, pool.numel(), step)]
        return self.x[idx], self.y[idx]

    def sample(self, task: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.pools[task]
        idx = pool[torch.randint(pool.numel(), (n,), generator=generator, device=self.device)]
        return self.x[idx], self.y[idx]

    def heldout(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.held_x, self.held_y
