"""Named random streams: every seed of a run derives from the run seed and the stream's name.

``stream_seed(run_seed, "probe", step)`` is the seed of one stream. It feeds the run seed (any
Python integer: negative and very large ones included) and the stream's path (names and integers)
into ``numpy.random.SeedSequence`` and reads 63 bits of its state, so

* streams of different names, or of one name at different steps, are independent;
* seed ``s`` shares no stream with seed ``s + 1`` (offsets such as ``seed + 1`` did);
* every seed is a valid ``torch.manual_seed`` / ``torch.Generator.manual_seed`` argument.

Each named stream has its function below, the one place its name and path are spelled (the
training loop's ``act`` and ``replay`` are spelled by their callers through ``generator``):

* ``global`` (``global_seed``): torch's, numpy's and Python's global RNGs (network initialisation);
* ``env`` (``env_seed``): the environment, which derives its own streams from it; among them
  ``labels`` (``label_seed``): a classification MDP's random relabelling (per segment of a chain)
  when ``env.label_seed`` is null, so that every run seed trains on its own random labels;
* ``act``, ``replay`` (``generator``): epsilon-greedy actions, replay minibatches;
* ``eval`` (``eval_seed``): an evaluation's episodes;
* ``fresh/<intervention>`` (``fresh_init_seed``): an intervention's fresh initialisation at a step;
* the pause (``probes/``), apart from every training stream:

  - ``probe`` (``probe_seed``): the plasticity probe; its ``targets`` (``probe_target_seeds``: the
    fresh target networks ``w0_j``) and ``minibatches`` (``probe_minibatch_seed``) derive from it;
  - ``<name>/inputs`` (``inputs_generator``): a diagnostic's own replay draw (``probe/inputs``: the
    probe's input set X);
  - ``diagnostics/batch`` (``evaluation_batch_seed``): the evaluation batch the diagnostics share
    (and gradcov's k-means);
  - ``diagnostics/<name>`` (``diagnostic_seed``): a diagnostic's own randomness (curvature's
    perturbation, whose Lanczos start vectors take ``start_vectors_seed``; gradcov's perturbation;
    dynamics' dropout);
  - ``diagnostics/churn_reference`` (``churn_reference_seed``): the reference batch of the
    greedy-action change between pauses (``probes/dynamics.py``).

The case studies (``case_studies/``) name their own (``memorization/...``, ``brownian/...``;
``memorization/labels``: figure 1's sequence of relabellings when ``env.label_seed`` is null).
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

    seed_g = global_seed(seed)
    random.seed(seed_g)
    np.random.seed(seed_g % 2**32)
    torch.manual_seed(seed_g)


def set_generator_state(gen, state) -> None:
    """``gen.set_state(state)`` for a state read back from a checkpoint on any device.

    A ``torch.Generator``'s state is a CPU ``ByteTensor`` whatever the generator's device, but a
    checkpoint loaded with ``map_location=cuda`` carries it on the GPU, where ``set_state`` refuses
    it ("RNG state must be a torch.ByteTensor", seen on the first GPU run at every resume)."""
    gen.set_state(state.cpu())


# ------------------------------------------------------------------------------ named streams


def global_seed(run_seed: int) -> int:
    """The seed of the global RNGs (network initialisation): stream ``global``."""
    return stream_seed(run_seed, "global")


def env_seed(run_seed: int) -> int:
    """The seed the environment derives its own streams from: stream ``env``."""
    return stream_seed(run_seed, "env")


def label_seed(env_seed_: int, segment: int = 0) -> int:
    """The seed of the random relabelling (task ``random_label``) of segment ``segment`` of a
    classification MDP built with ``env_seed_`` (0: the MDP without a chain) when its label seed is
    null: stream ``labels`` of the env seed. The env seed derives from the run seed, so two run seeds
    relabel differently, one seed always the same way, and two segments of a chain differently."""
    return stream_seed(env_seed_, "labels", segment)


def eval_seed(run_seed: int, step: int) -> int:
    """The seed of the evaluation at training step ``step``: stream ``eval``."""
    return stream_seed(run_seed, "eval", step)


def fresh_init_seed(run_seed: int, name: str, step: int) -> int:
    """The seed of the fresh initialisation drawn by intervention ``name`` at training step ``step``:
    stream ``fresh/<name>``."""
    return stream_seed(run_seed, f"fresh/{name}", step)


# the pause (probes/): every stream is apart from every training stream, so a pause never moves training


def probe_seed(run_seed: int, step: int) -> int:
    """The seed of the plasticity probe of the pause at ``step``: stream ``probe``; its targets and
    minibatches derive from it (``probe_target_seeds``, ``probe_minibatch_seed``)."""
    return stream_seed(run_seed, "probe", step)


def probe_target_seeds(probe_seed_: int, num_targets: int) -> list[int]:
    """The seeds of the fresh initialisations ``w0_j`` of one pause's targets (stream ``targets``
    of the pause's probe seed)."""
    return [stream_seed(probe_seed_, "targets", j) for j in range(num_targets)]


def probe_minibatch_seed(probe_seed_: int) -> int:
    """The seed of the probe's minibatch indices (stream ``minibatches`` of the pause's probe seed)."""
    return stream_seed(probe_seed_, "minibatches")


def inputs_generator(device, run_seed: int, name: str, step: int):
    """The generator of diagnostic ``name``'s own replay draw at the pause of ``step`` (stream
    ``<name>/inputs``; the probe's input set X is ``probe/inputs``)."""
    return generator(device, run_seed, f"{name}/inputs", step)


def diagnostic_seed(run_seed: int, name: str, step: int) -> int:
    """The seed of diagnostic ``name``'s own randomness at the pause of ``step`` (``curvature``'s
    perturbation and start vectors, ``gradcov``'s perturbation, ``dynamics``' dropout): stream
    ``diagnostics/<name>``."""
    return stream_seed(run_seed, f"diagnostics/{name}", step)


def evaluation_batch_seed(run_seed: int, step: int) -> int:
    """The seed of the pause's evaluation batch of replay transitions, which the diagnostics share
    (stream ``diagnostics/batch``; gradcov's k-means is seeded with it too)."""
    return diagnostic_seed(run_seed, "batch", step)


def churn_reference_seed(run_seed: int) -> int:
    """The seed of the greedy-action-change reference batch, drawn once per run: stream ``diagnostics/churn_reference``."""
    return stream_seed(run_seed, "diagnostics/churn_reference")


def start_vectors_seed(eps_seed: int) -> int:
    """The seed of the Lanczos start vectors of a Hessian spectrum whose perturbation is seeded by
    ``eps_seed`` (``probes/curvature.py``): ``eps_seed + 1``, an offset kept so that recorded runs
    stay bit-identical (the two generators differ, being seeded differently)."""
    return int(eps_seed) + 1
