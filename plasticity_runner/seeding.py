"""Named random streams: every seed of a run derives from the run seed and the stream's name.

``stream_seed(run_seed, "probe", step)`` is the seed of one stream. It feeds the run seed (any
Python integer: negative and very large ones included) and the stream's path (names and integers)
into ``numpy.random.SeedSequence`` and reads 63 bits of its state, so

* streams of different names, or of one name at different steps, are independent;
* seed ``s`` shares no stream with seed ``s + 1`` (offsets such as ``seed + 1`` did);
* every seed is a valid ``torch.manual_seed`` / ``torch.Generator.manual_seed`` argument.

The names in use (the README lists them): ``global`` (torch/numpy/Python global RNGs: network
initialisation), ``env``, ``act``, ``replay``, ``probe/targets``, ``probe/inputs``,
``probe/minibatches``, ``diagnostics``, ``eval``, ``fresh/<intervention>`` and the case studies'
own (``memorization/...``, ``brownian/...``).
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_BITS = 63


def _word(part: str | int) -> int:
    """A non-negative integer for one element of a stream path (str by hash, int by zig-zag)."""
    if isinstance(part, str):
        return int.from_bytes(hashlib.sha256(part.encode()).digest()[:8], "little")
    value = int(part)
    return 2 * value if value >= 0 else -2 * value - 1  # zig-zag: every integer, negatives included


def stream_seed(run_seed: int, *path: str | int) -> int:
    """The seed in ``[0, 2**63)`` of the stream named by ``path`` (e.g. ``"probe/targets", step, j``)."""
    if isinstance(run_seed, bool) or not isinstance(run_seed, (int, np.integer)):
        raise TypeError(f"run seed must be an integer, got {run_seed!r}")
    sequence = np.random.SeedSequence(entropy=_word(int(run_seed)), spawn_key=tuple(_word(p) for p in path))
    return int(sequence.generate_state(1, dtype=np.uint64)[0]) >> (64 - SEED_BITS)


def generator(device, run_seed: int, *path: str | int):
    """A ``torch.Generator`` on ``device`` seeded with ``stream_seed(run_seed, *path)``."""
    import torch

    return torch.Generator(device).manual_seed(stream_seed(run_seed, *path))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (network initialisation) from the run's
    ``global`` stream: any integer seed works, and the global stream is apart from every generator
    the run keeps (environment, actions, replay, probes)."""
    import random

    import torch

    global_seed = stream_seed(seed, "global")
    random.seed(global_seed)
    np.random.seed(global_seed % 2**32)
    torch.manual_seed(global_seed)


def set_generator_state(gen, state) -> None:
    """``gen.set_state(state)`` for a state read back from a checkpoint on any device.

    A ``torch.Generator``'s state is a CPU ``ByteTensor`` whatever the generator's device, but a
    checkpoint loaded with ``map_location=cuda`` carries it on the GPU, where ``set_state`` refuses
    it ("RNG state must be a torch.ByteTensor", seen on the first GPU run at every resume)."""
    gen.set_state(state.cpu())
