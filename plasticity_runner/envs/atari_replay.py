"""Uniform replay for Atari that stores every frame once, as uint8 on the device.

An Atari observation is a stack of the last ``stack`` (4) preprocessed frames. Storing each
transition's ``o_tm1`` and ``o_t`` stacks would keep every frame 8 times; this replay keeps one
frame per environment per step in a ring and rebuilds stacks by indexing at sample time.

Layout (``N`` = ``num_envs``, ``T = ceil(capacity / N)`` transition slots per environment,
``F = T + stack`` ring slots):

* ``frames[F, N, H, W]`` uint8: slot ``x % F`` holds the newest frame of the observation written
  at ring position ``x`` (positions count up forever; ``x % F`` is the slot). It is a view of a
  flat ``[F * N + 1, H * W]`` store whose extra last row is all zeros (see below).
* ``meta[4, F, N]`` float32: rows ``r_t``, ``discount_t``, ``valid`` (the sampling weight, 0/1) and
  ``ep_step`` (how many earlier frames of the same episode the stack at this slot holds, capped at
  ``stack - 1``). One array so that a step's host-born scalars travel to the device in one copy.
* ``actions[F, N]`` uint8: ``a_tm1`` (Atari has at most 18 actions).

A transition written at position ``x`` has ``o_t`` = frames ``x-stack+1 .. x`` and ``o_tm1`` =
frames ``x-stack .. x-1``. Frames that precede the episode start (``age > ep_step``) are zeros:
that is what ale-py's native vector env puts in a fresh stack (``[0, 0, 0, first frame]``), and
``AtariVectorEnv`` checks it on every reset, so the rebuilt stacks equal the observations the
environment returned bit for bit. Such frames are read from the zero row, so rebuilding a batch
of ``o_tm1`` and ``o_t`` stacks is one ``index_select`` of ``2 * stack * B`` rows (no masking).

Ring wrap: writing position ``x`` overwrites the frame at ``x - F`` = ``x - T - stack``, which the
transition at ``x - T`` needs as the oldest frame of its ``o_tm1``; that transition is invalidated
by the same write. So at most the last ``T`` positions hold sampleable transitions, and every
frame they index is still in the ring.

Continuity: consecutive records of one environment share a frame (``o_t`` of one step is
``o_tm1`` of the next), so normally a step writes one frame. Each record carries two host ticks
(``tick_tm1``: the event that produced ``o_tm1``; ``tick_t``: this step), unique in the process
and, with a random 62-bit start, across processes. When ``tick_tm1`` is not the tick of the last
record added (the first add, an explicit ``env.reset()``, a record from another environment, a
skipped step, a replay loaded without its environment), the replay first writes the whole
``o_tm1`` stack as ``stack`` context positions (never sampled) and then the transition, so stacks
never mix frames from unrelated streams.

Invalid transitions: the step that auto-resets an environment (ale-py's ``NEXT_STEP`` mode: the
action after a game over is ignored and the reset observation returned) comes with
``valid = False``; its ``meta`` weight is 0, so it is never sampled. Sampling is exact-uniform
over the valid transitions with ``torch.multinomial`` on the weights (no host sync, no rejection
loop; about 0.2 ms on one CPU core at 100k transitions).

Memory: ``(F * N + 1) * H * W + F * N * (4 * 4 + 1)`` bytes on the device (``memory_bytes``);
for a capacity of 100,000 with 84x84 frames that is about 0.71 GB (any ``num_envs``), plus host
mirrors of 9 bytes per slot and environment.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from .base import Batch

R, DISCOUNT, VALID, EP_STEP = range(4)  # rows of ``meta``


class _Clock:
    """Process-wide tick source for the continuity check. It starts at a random 62-bit offset, so
    ticks restored from a checkpoint of another process never collide with fresh ones."""

    def __init__(self) -> None:
        self._next = int.from_bytes(os.urandom(8), "little") >> 2

    def __call__(self) -> int:
        self._next += 1
        return self._next


next_tick = _Clock()


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; the one conversion used by the env and the replay."""
    return frames.to(torch.float32).div_(255.0)


class AtariReplay:
    """Frame-deduplicating uniform replay (implements ``envs.base.Replay``).

    ``capacity`` is rounded up to a multiple of ``num_envs`` (``self.capacity`` is the rounded
    value). ``size`` is the number of sampleable transitions, a host int.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        device: torch.device | str = "cpu",
    ):
        if capacity <= 0 or num_envs <= 0 or stack <= 0:
            raise ValueError(f"capacity, num_envs and stack must be positive, got {capacity}, {num_envs}, {stack}")
        self.device = torch.device(device)
        self.num_envs = int(num_envs)
        self.stack = int(stack)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self._frame_numel = math.prod(self.frame_shape)
        self.slots_per_env = math.ceil(capacity / self.num_envs)  # T
        self.ring = self.slots_per_env + self.stack  # F
        self.capacity = self.slots_per_env * self.num_envs
        F, N = self.ring, self.num_envs
        # flat frame store with one extra all-zero row at the end: frames before an episode start
        # are read from that row, so rebuilding a stack is a single index_select (no masking)
        self._frame_rows = torch.zeros((F * N + 1, self._frame_numel), dtype=torch.uint8, device=self.device)
        self._zero_row = F * N
        self.frames = self._frame_rows[: F * N].view(F, N, *self.frame_shape)  # [F, N, H, W] view
        self.meta = torch.zeros((4, F, N), dtype=torch.float32, device=self.device)
        self.actions = torch.zeros((F, N), dtype=torch.uint8, device=self.device)
        # host mirrors (no device sync needed to keep `size` or to debug a slot)
        self._valid_host = np.zeros((F, N), dtype=bool)
        self.slot_tick = np.full(F, -1, dtype=np.int64)  # tick_t of the transition in a slot, -1: none/context
        self.cursor = -1  # last position written (positions count up forever)
        self.size = 0
        self._last_tick: int | None = None

    # ------------------------------------------------------------------------------ sizing

    @staticmethod
    def memory_bytes(capacity: int, num_envs: int = 1, frame_shape: tuple[int, int] = (84, 84), stack: int = 4) -> int:
        """Device bytes the replay allocates (frames + zero row + meta + actions), computed analytically."""
        slots = math.ceil(capacity / num_envs) + stack
        frame = frame_shape[0] * frame_shape[1]
        return (slots * num_envs + 1) * frame + slots * num_envs * (4 * 4 + 1)

    def nbytes(self) -> int:
        """Device bytes actually allocated (equals ``memory_bytes`` for the same arguments)."""
        return sum(t.numel() * t.element_size() for t in (self._frame_rows, self.meta, self.actions))

    # ------------------------------------------------------------------------------ writing

    def _age_out(self, positions: np.ndarray) -> None:
        """Invalidate the transitions whose oldest frame the writes at ``positions`` overwrite."""
        old = positions - self.slots_per_env
        old = old[old >= 0] % self.ring
        if old.size == 0:
            return
        self.size -= int(self._valid_host[old].sum())
        self._valid_host[old] = False
        self.slot_tick[old] = -1
        self.meta[VALID, torch.as_tensor(old, device=self.device)] = 0.0

    def add(self, record: dict[str, torch.Tensor]) -> None:
        """Store one step of all ``N`` environments (the ``record`` of ``AtariVectorEnv.step``)."""
        tick_tm1, tick_t = int(record["tick_tm1"]), int(record["tick_t"])
        x = self.cursor + 1
        if self._last_tick is None or tick_tm1 != self._last_tick:
            # context: the whole o_tm1 stack at positions x .. x+stack-1 (not transitions)
            ctx = np.arange(x, x + self.stack)
            self._age_out(ctx)
            slots = ctx % self.ring
            slots_d = torch.as_tensor(slots, device=self.device)
            obs_tm1 = record["obs_tm1"].to(self.device)  # [N, stack, H, W]
            self.frames[slots_d] = obs_tm1.transpose(0, 1)
            self.meta[:, slots_d] = 0.0
            self.meta[EP_STEP, slots_d[-1]] = float(self.stack - 1)  # the stack is stored literally
            self._valid_host[slots] = False
            self.slot_tick[slots] = -1
            x += self.stack
        self._age_out(np.array([x]))
        slot = x % self.ring
        valid = record["valid"].cpu().numpy().astype(bool)
        host = torch.stack(
            [
                record["r_t"].cpu().float(),
                record["discount_t"].cpu().float(),
                torch.from_numpy(valid).float(),
                record["ep_step_t"].cpu().float().clamp_max(self.stack - 1),
            ]
        )
        self.meta[:, slot] = host.to(self.device)
        self.frames[slot] = record["frame_t"].to(self.device)
        self.actions[slot] = record["a_tm1"].to(self.device, torch.uint8)
        self._valid_host[slot] = valid
        self.slot_tick[slot] = tick_t
        self.size += int(valid.sum())
        self.cursor = x
        self._last_tick = tick_t

    # ------------------------------------------------------------------------------ reading

    def sample_indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` flat indices ``slot * N + env`` drawn uniformly (with replacement) among valid transitions."""
        if self.size == 0:
            raise RuntimeError("AtariReplay.sample: the replay holds no valid transition yet")
        return torch.multinomial(self.meta[VALID].view(-1), n, replacement=True, generator=generator)

    def _rows(self, slot: torch.Tensor, env: torch.Tensor, ep_step: torch.Tensor, newest: int) -> torch.Tensor:
        """Frame-row indices ``[B, stack]`` (oldest first) of the stacks whose newest frame sits at
        ``slot + newest``; frames older than the episode start point at the zero row."""
        age = torch.arange(self.stack - 1, -1, -1, device=self.device)  # oldest frame first, as the env stacks
        slots = (slot[:, None] + newest - age[None, :]) % self.ring
        rows = slots * self.num_envs + env[:, None]
        return torch.where(age[None, :] <= ep_step[:, None], rows, self._zero_row)

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 frames for row indices ``[...]`` -> ``[..., H, W]`` (index_select on the flat store)."""
        return self._frame_rows.index_select(0, rows.reshape(-1)).view(*rows.shape, *self.frame_shape)

    def _transition_rows(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot, env = flat // self.num_envs, flat % self.num_envs
        ep_t = self.meta[EP_STEP, slot, env].long()
        ep_tm1 = self.meta[EP_STEP, (slot - 1) % self.ring, env].long()
        rows = torch.stack([self._rows(slot, env, ep_tm1, -1), self._rows(slot, env, ep_t, 0)], dim=1)
        return slot, env, rows  # rows: [B, 2 (o_tm1, o_t), stack]

    def transitions_u8(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The transitions at flat indices ``slot * N + env``, observations as uint8 stacks."""
        slot, env, rows = self._transition_rows(flat)
        obs = self._gather(rows)
        return {
            "o_tm1": obs[:, 0],
            "a_tm1": self.actions[slot, env].long(),
            "r_t": self.meta[R, slot, env],
            "discount_t": self.meta[DISCOUNT, slot, env],
            "o_t": obs[:, 1],
        }

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        slot, env, rows = self._transition_rows(self.sample_indices(batch_size, generator))
        obs = frames_to_float(self._gather(rows))  # one gather and one conversion for o_tm1 and o_t
        return Batch(
            o_tm1=obs[:, 0],
            a_tm1=self.actions[slot, env].long(),
            r_t=self.meta[R, slot, env],
            discount_t=self.meta[DISCOUNT, slot, env],
            o_t=obs[:, 1],
        )

    def sample_obs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        flat = self.sample_indices(n, generator)
        slot, env = flat // self.num_envs, flat % self.num_envs
        ep_tm1 = self.meta[EP_STEP, (slot - 1) % self.ring, env].long()
        return frames_to_float(self._gather(self._rows(slot, env, ep_tm1, -1)))

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to sample as before; only the ring slots written so far are copied.

        The continuity tick is saved too: a replay and an ``AtariVectorEnv`` restored from the same
        checkpoint continue exactly as if never interrupted (no context stack is written).
        """
        used = min(self.cursor + 1, self.ring)
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "stack": self.stack,
            "frame_shape": self.frame_shape,
            "cursor": self.cursor,
            "size": self.size,
            "frames": self.frames[:used].clone(),
            "meta": self.meta[:, :used].clone(),
            "actions": self.actions[:used].clone(),
            "valid_host": self._valid_host[:used].copy(),
            "slot_tick": self.slot_tick[:used].copy(),
            "last_tick": self._last_tick,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("capacity", "num_envs", "stack"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"AtariReplay.load_state_dict: {key} is {state[key]} in the state, {getattr(self, key)} here"
                )
        if tuple(state["frame_shape"]) != self.frame_shape:
            shape = tuple(state["frame_shape"])
            raise ValueError(f"AtariReplay.load_state_dict: frame_shape {shape} in the state, {self.frame_shape} here")
        used = state["frames"].shape[0]
        self._frame_rows.zero_()
        self.meta.zero_()
        self.actions.zero_()
        self._valid_host[:] = False
        self.slot_tick[:] = -1
        self.frames[:used] = state["frames"].to(self.device)
        self.meta[:, :used] = state["meta"].to(self.device)
        self.actions[:used] = state["actions"].to(self.device)
        self._valid_host[:used] = np.asarray(state["valid_host"])
        self.slot_tick[:used] = np.asarray(state["slot_tick"])
        self.cursor = int(state["cursor"])
        self.size = int(state["size"])
        self._last_tick = state.get("last_tick")
