"""The classification MDPs of section 3.2, vectorised on the device.

Latent states are the ten classes ``{0..9}``; the ten actions guess the class. A state emits an
image of its class, drawn uniformly from the dataset's images of that class at every visit.

* ``true_label``: reward ``1[a == s]``; next state uniform over the ten classes.
* ``random_label``: as ``true_label``, but every image is given a random label in ``{0..9}`` once
  (seeded by ``env.label_seed``); state ``i`` emits images whose *random* label is ``i``.
* ``sparse_reward``: reward ``1[a == s == 9]``; next state ``s + 1`` if ``a == s`` else uniform.
  The paper leaves ``s = 9, a = 9`` open (there is no state 10): we wrap to state 0.

The MDPs never terminate (discount_t = 1 always). ``N`` copies step at once with tensor ops; the
dataset lives on the device and the replay stores dataset indices, never images.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Batch, StepResult
from .datasets import load_dataset

NUM_CLASSES = 10


class IndexReplay:
    """Uniform replay of ``(o_tm1, a_tm1, r_t, discount_t, o_t)`` with observations as dataset indices."""

    def __init__(self, images: torch.Tensor, capacity: int):
        self.images = images
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
            o_tm1=self.images[self.o_tm1[i]],
            a_tm1=self.a_tm1[i],
            r_t=self.r_t[i],
            discount_t=self.discount_t[i],
            o_t=self.images[self.o_t[i]],
        )

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[self.o_tm1[self._indices(n, generator)]]

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

    def __init__(self, cfg: Any, device: torch.device, seed: int):
        self.task = str(getattr(cfg.task, "value", cfg.task))
        dataset = str(getattr(cfg.dataset, "value", cfg.dataset))
        images, labels = load_dataset(dataset, cfg.data_dir, cfg.download)
        if cfg.num_images is not None:
            images, labels = images[: cfg.num_images], labels[: cfg.num_images]
        if self.task == "random_label":
            g = torch.Generator().manual_seed(int(cfg.label_seed))
            labels = torch.randint(NUM_CLASSES, labels.shape, generator=g)
        counts = torch.bincount(labels, minlength=NUM_CLASSES)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"env.num_images: classes {missing} have no image among the first {len(labels)}")
        self.device = torch.device(device)
        self.num_envs = int(cfg.num_envs)
        self.obs_shape = tuple(images.shape[1:])
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        # images sorted by label; class c owns sorted_idx[start[c] : start[c] + count[c]]
        self.sorted_idx = torch.argsort(labels, stable=True).to(self.device)
        self.count = counts.to(self.device)
        self.start = (torch.cumsum(counts, 0) - counts).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(int(seed))
        self.state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.obs_idx = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _random_states(self) -> torch.Tensor:
        return torch.randint(NUM_CLASSES, (self.num_envs,), generator=self.generator, device=self.device)

    def _emit(self, states: torch.Tensor) -> torch.Tensor:
        """Dataset index of an image drawn uniformly from each state's class."""
        u = torch.rand(states.shape, generator=self.generator, device=self.device)
        offset = (u * self.count[states]).long().clamp_max(self.count[states] - 1)
        return self.sorted_idx[self.start[states] + offset]

    def reset(self) -> torch.Tensor:
        self.state = self._random_states()
        self.obs_idx = self._emit(self.state)
        return self.images[self.obs_idx]

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
        return StepResult(obs=self.images[o_t], reward=reward, record=record)

    def make_replay(self, capacity: int) -> IndexReplay:
        return IndexReplay(self.images, capacity)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state.clone(), "obs_idx": self.obs_idx.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state["state"].to(self.device)
        self.obs_idx = state["obs_idx"].to(self.device)
        self.generator.set_state(state["generator"])
