"""The classification MDPs of section 3.2, vectorised on the device.

Latent states are the ten classes ``{0..9}``; the ten actions guess the class. A state emits an
image of its class, drawn uniformly from the dataset's images of that class at every visit.

* ``true_label``: reward ``1[a == s]``; next state uniform over the ten classes.
* ``random_label``: as ``true_label``, but every image is given a random label in ``{0..9}`` once
  (uniform and independent per image), drawn with the seed ``env.label_seed`` or, when it is null
  (the default), with the run seed's own stream (``seeding.label_seed`` of the env seed and the
  segment): each run seed has its own relabelling, and so has each segment of a chain; state ``i``
  emits images whose *random* label is ``i``.
* ``sparse_reward``: reward ``1[a == s == 9]``; next state ``s + 1`` if ``a == s`` else uniform.
  The paper leaves ``s = 9, a = 9`` open (there is no state 10): we wrap to state 0.

The MDPs never terminate (discount_t = 1 always). ``N`` copies step at once with tensor ops; the
dataset lives on the device and the replay stores dataset indices, never images.

Chains (``env.schedule``, ``envs/schedule.py``): segments ``{task, label_seed, permutation_seed,
steps}``; a key a segment leaves out takes ``env.task`` / ``env.label_seed`` / no permutation. A
``permutation_seed`` permutes the pixels of every image (all ``C*H*W`` entries) by the permutation
that seed draws (``torch.randperm`` on a CPU generator: one seed, one permutation, so a chain can
come back to a task). The replay then stores *virtual* indices ``variant * num_images + index``
(``variant``: which of the chain's permutations, 0 the identity) and materialises the permuted
image when it samples, so old segments' transitions keep their own inputs; the data set is held
once. A segment without a permutation and with ``env``'s task and seed is the plain MDP, draw for
draw.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import choice, positive
from ..seeding import label_seed, set_generator_state
from .base import Batch, StepResult
from .datasets import Dataset, check_num_images, load_dataset
from .schedule import check_env

NUM_CLASSES = 10


class Task(str, enum.Enum):
    true_label = "true_label"
    random_label = "random_label"
    sparse_reward = "sparse_reward"


@dataclass
class ClassificationEnvConfig:
    """Classification MDP of section 3.2."""

    name: str = "classification"
    dataset: Dataset = Dataset.digits
    task: Task = Task.true_label
    data_dir: str = "data"
    download: bool = False
    num_envs: int = 1
    num_images: int | None = None
    label_seed: int | None = None  # null: derived from the run seed (seeding.label_seed)
    schedule: list[Any] | None = (
        None  # a chain of segments {task, label_seed, permutation_seed, steps} (envs/schedule.py)
    )
    pause_at_switch: bool = False  # chains: a probe pause right before and right after each switch


class IndexReplay:
    """Uniform replay of ``(o_tm1, a_tm1, r_t, discount_t, o_t)`` with observations as dataset indices
    (``lookup(index)`` materialises them; default ``images[index]``)."""

    def __init__(self, images: torch.Tensor, capacity: int, lookup=None):
        self.images = images
        self.lookup = lookup if lookup is not None else images.__getitem__
        self.capacity = int(capacity)
        device = images.device
        self.o_tm1 = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.o_t = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.a_tm1 = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.r_t = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.discount_t = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.pos = 0  # next slot to write (host int)
        self.size = 0  # stored transitions (host int)

    def add(self, record: dict[str, torch.Tensor]) -> None:
        n = record["a_tm1"].shape[0]
        slots = (torch.arange(n, device=self.images.device) + self.pos) % self.capacity
        for name in ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t"):
            getattr(self, name)[slots] = record[name]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.size, (n,), generator=generator, device=self.images.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        i = self._indices(batch_size, generator)
        return Batch(
            o_tm1=self.lookup(self.o_tm1[i]),
            a_tm1=self.a_tm1[i],
            r_t=self.r_t[i],
            discount_t=self.discount_t[i],
            o_t=self.lookup(self.o_t[i]),
        )

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.lookup(self.o_tm1[self._indices(n, generator)])

    def state_dict(self) -> dict[str, Any]:
        names = ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t")
        return {**{k: getattr(self, k)[: self.size].clone() for k in names}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for k in ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t"):
            getattr(self, k)[: self.size] = state[k].to(self.images.device)


class ClassificationMDP:
    """``num_envs`` copies of one classification MDP (implements ``envs.base.VectorEnv``)."""

    num_actions = NUM_CLASSES
    reward_range = (0.0, 1.0)  # every task's reward is 0 or 1

    def __init__(self, cfg: Any, device: torch.device, seed: int):
        from .schedule import classification_segments, switch_steps

        dataset = choice(cfg.dataset)
        images, true_labels = load_dataset(dataset, cfg.data_dir, cfg.download)
        if cfg.num_images is not None:
            check_num_images(int(cfg.num_images), len(images), dataset)
            images, true_labels = images[: cfg.num_images], true_labels[: cfg.num_images]
        self.device = torch.device(device)
        self.num_envs = int(cfg.num_envs)
        self.obs_shape = tuple(images.shape[1:])
        self.images = images.to(self.device)
        self._true_labels = true_labels
        # a chain's segments (one segment, env's own task, without a schedule)
        has_schedule = getattr(cfg, "schedule", None) is not None
        self.segments = classification_segments(cfg)
        self.switch_steps = switch_steps(cfg) if has_schedule else None  # training steps
        seeds = sorted({s["permutation_seed"] for s in self.segments if s["permutation_seed"] is not None})
        self._variant = {None: 0, **{seed: k + 1 for k, seed in enumerate(seeds)}}
        d = images[0].numel()
        perms = [torch.arange(d)] + [torch.randperm(d, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        self.permutations = torch.stack(perms).to(self.device)  # [variants, C*H*W]
        self.generator = torch.Generator(self.device).manual_seed(int(seed))
        self._env_seed = int(seed)  # a null label_seed relabels from its stream (seeding.label_seed)
        self._set_segment(0)
        self.state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.obs_idx = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _set_segment(self, k: int) -> None:
        """Labels (and the images each state emits) of segment ``k``."""
        seg = self.segments[k]
        self.segment, self.task = int(k), seg["task"]
        labels = self._true_labels
        if self.task == "random_label":
            seed = label_seed(self._env_seed, k) if seg["label_seed"] is None else int(seg["label_seed"])
            g = torch.Generator().manual_seed(seed)
            labels = torch.randint(NUM_CLASSES, labels.shape, generator=g)
        counts = torch.bincount(labels, minlength=NUM_CLASSES)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"env.num_images: classes {missing} have no image among the first {len(labels)}")
        self.labels = labels.to(self.device)
        # images sorted by label; class c owns sorted_idx[start[c] : start[c] + count[c]]
        self.sorted_idx = torch.argsort(labels, stable=True).to(self.device)
        self.count = counts.to(self.device)
        self.start = (torch.cumsum(counts, 0) - counts).to(self.device)
        self._offset = self._variant[seg["permutation_seed"]] * len(self._true_labels)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """Images of (virtual) indices ``variant * num_images + i``: image ``i`` under permutation ``variant``."""
        if len(self.permutations) == 1:
            return self.images[index]
        n = len(self._true_labels)
        flat = self.images[index % n].flatten(1)
        return flat.gather(1, self.permutations[index // n]).view(-1, *self.obs_shape)

    def switch(self, k: int) -> torch.Tensor:
        """Move a chain to segment ``k``: its labels and inputs, new uniformly drawn states."""
        self._set_segment(k)
        return self.reset()

    def _random_states(self) -> torch.Tensor:
        return torch.randint(NUM_CLASSES, (self.num_envs,), generator=self.generator, device=self.device)

    def _emit(self, states: torch.Tensor) -> torch.Tensor:
        """Dataset index of an image drawn uniformly from each state's class."""
        u = torch.rand(states.shape, generator=self.generator, device=self.device)
        offset = (u * self.count[states]).long().clamp_max(self.count[states] - 1)
        return self.sorted_idx[self.start[states] + offset] + self._offset

    def reset(self) -> torch.Tensor:
        self.state = self._random_states()
        self.obs_idx = self._emit(self.state)
        return self.lookup(self.obs_idx)

    def step(self, actions: torch.Tensor) -> StepResult:
        s_tm1, o_tm1 = self.state, self.obs_idx
        correct = actions == s_tm1
        random_next = self._random_states()  # drawn every step so the RNG stream does not depend on actions
        if self.task == "sparse_reward":
            reward = (correct & (s_tm1 == NUM_CLASSES - 1)).float()
            s_t = torch.where(correct, (s_tm1 + 1) % NUM_CLASSES, random_next)
        else:
            reward = correct.float()
            s_t = random_next
        o_t = self._emit(s_t)
        self.state, self.obs_idx = s_t, o_t
        record = {
            "o_tm1": o_tm1,
            "a_tm1": actions,
            "r_t": reward,
            "discount_t": torch.ones_like(reward),
            "o_t": o_t,
        }
        return StepResult(obs=self.lookup(o_t), reward=reward, record=record)

    def make_replay(self, capacity: int) -> IndexReplay:
        return IndexReplay(self.images, capacity, lookup=self.lookup)

    def state_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.clone(),
            "obs_idx": self.obs_idx.clone(),
            "generator": self.generator.get_state(),
            "segment": self.segment,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_segment(int(state.get("segment", 0)))
        self.state = state["state"].to(self.device)
        self.obs_idx = state["obs_idx"].to(self.device)
        set_generator_state(self.generator, state["generator"])


def check_config(cfg: Any, key: str) -> None:
    """Range checks of ``env=classification`` at ``key``: sizes, and the segments of a chain."""
    positive(cfg, f"{key}.num_envs")
    positive(cfg, f"{key}.num_images")
    check_env(cfg[key])  # env.schedule's segments


registry.register("env", "classification", ClassificationEnvConfig, build=ClassificationMDP, check=check_config)
