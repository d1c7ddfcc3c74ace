"""Uniform replay held on the device, for environments whose observations are small tensors
(MinAtar's bool grids, CartPole's float vectors): one preallocated tensor per field of the
transition ``(o_tm1, a_tm1, r_t, discount_t, o_t)``, written at a ring position and sampled with
the caller's generator. Observations are stored in ``obs_dtype`` and returned as float32.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Batch


class DeviceReplay:
    """Uniform replay on the device; observations stored as ``obs_dtype`` ``[capacity, *obs_shape]``."""

    NAMES = ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t")

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], device: torch.device, obs_dtype: torch.dtype = torch.float32
    ):
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.o_tm1 = torch.zeros((self.capacity, *obs_shape), dtype=obs_dtype, device=self.device)
        self.o_t = torch.zeros_like(self.o_tm1)
        self.a_tm1 = torch.zeros(self.capacity, dtype=torch.int64, device=self.device)
        self.r_t = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.discount_t = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.pos = 0  # next slot to write (host int)
        self.size = 0  # stored transitions (host int)

    def add(self, record: dict[str, torch.Tensor]) -> None:
        n = record["a_tm1"].shape[0]
        slots = (torch.arange(n, device=self.device) + self.pos) % self.capacity
        for name in self.NAMES:
            getattr(self, name)[slots] = record[name].to(self.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.size, (n,), generator=generator, device=self.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        i = self._indices(batch_size, generator)
        return Batch(
            o_tm1=self.o_tm1[i].float(),
            a_tm1=self.a_tm1[i],
            r_t=self.r_t[i],
            discount_t=self.discount_t[i],
            o_t=self.o_t[i].float(),
        )

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.o_tm1[self._indices(n, generator)].float()

    def state_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k)[: self.size].clone() for k in self.NAMES}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        for k in self.NAMES:
            getattr(self, k)[: self.size] = state[k].to(self.device)
