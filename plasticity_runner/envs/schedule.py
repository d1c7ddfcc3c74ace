"""Continual chains: ``env.schedule``, a list of segments the environment switches between.

A segment is ``{game: <MinAtar game>, steps: <training steps>}`` (``env=minatar``) or
``{task: true_label|random_label|permuted, label_seed: <int or null>, steps: <training steps>}``
(``env=classification``). Segment ``k`` runs for its ``steps`` training steps; at the end of the
training step that closes it (after that step's intervention hooks and target update) the
environment switches to segment ``k + 1``. The last segment lasts to the end of the run, however
long (a run shorter than the chain never reaches the later segments: ``train/segment`` says where
it was). The switch points are the cumulative sums of ``steps`` (``switch_steps``).

What a switch does: the games in progress (or the MDP's current states) are dropped and the new
segment's start; the network, optimizer, target network and replay are left alone (the replay
keeps the old segment's transitions until they are overwritten, as in C-CHAIN and Plasticine's
continual settings). ``train/segment`` (the segment the logged steps trained on) is in every
train record. With ``env.pause_at_switch`` the run pauses (probe and diagnostics) right before
each switch (at its switch step, on the network trained on the old segment) and right after it
(one training step into the new segment).

Observation and action spaces of a chain are those of all its segments at once: MinAtar games
with fewer channels than the chain's largest are zero-padded; every MinAtar game takes the same
six actions (a game ignores the ones it has no use for, so they act as no-ops), and with
``minimal_action_set`` the chain's actions are the union of its games' minimal sets, an action a
game lacks played as the no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, choice


def segments(env_cfg: Any) -> list[dict[str, Any]]:
    """``env.schedule`` as plain dicts, checked: each has a positive int ``steps``."""
    raw = env_cfg.schedule if not isinstance(env_cfg, dict) else env_cfg.get("schedule")
    if raw is None:
        return []
    if OmegaConf.is_config(raw):
        raw = OmegaConf.to_container(raw, resolve=True)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"env.schedule: must be a non-empty list of segments {{..., steps}}, got {raw!r}")
    out = []
    for k, seg in enumerate(raw):
        if not isinstance(seg, dict):
            raise ValueError(
                f"env.schedule.{k}: a segment is a mapping like {{game: breakout, steps: 1000}}, got {seg!r}"
            )
        steps = seg.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"env.schedule.{k}.steps: must be a positive number of training steps, got {steps!r}")
        out.append(dict(seg))
    return out


def switch_steps(env_cfg: Any) -> list[int]:
    """Training steps at whose end the chain switches to the next segment (all but the last segment's end)."""
    ends, total = [], 0
    for seg in segments(env_cfg)[:-1]:
        total += int(seg["steps"])
        ends.append(total)
    return ends


CLASSIFICATION_TASKS = ("true_label", "random_label", "sparse_reward")


def classification_segments(env_cfg: Any) -> list[dict[str, Any]]:
    """Each segment's ``task``, ``label_seed`` and ``permutation_seed`` (missing keys: ``env.task``,
    ``env.label_seed``, no permutation); without a schedule, the one segment of ``env`` itself. A
    null ``label_seed`` means the run seed's own relabelling of that segment (``seeding.label_seed``
    of the env seed and the segment's index): two segments that leave it null relabel differently;
    a chain that comes back to a relabelling names its seed."""
    task = env_cfg.task
    seed = env_cfg.label_seed
    default = {"task": choice(task), "label_seed": None if seed is None else int(seed), "permutation_seed": None}
    if getattr(env_cfg, "schedule", None) is None:
        return [dict(default, steps=None)]
    out = []
    for k, seg in enumerate(segments(env_cfg)):
        unknown = set(seg) - {"task", "label_seed", "permutation_seed", "steps"}
        if unknown:
            raise ValueError(
                f"env.schedule.{k}: unknown keys {sorted(unknown)}; a classification segment is "
                "{task, label_seed, permutation_seed, steps}"
            )
        full = {**default, **seg}
        if full["task"] not in CLASSIFICATION_TASKS:
            raise ValueError(
                f"env.schedule.{k}.task: must be one of {', '.join(CLASSIFICATION_TASKS)}, got {full['task']!r}"
            )
        for key in ("label_seed", "permutation_seed"):
            v = full[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"env.schedule.{k}.{key}: must be an integer or null, got {v!r}")
        out.append(full)
    return out


def pause_steps(env_cfg: Any) -> set[int]:
    """With ``env.pause_at_switch``: the steps right before (the switch step) and right after (+1) each switch."""
    if not getattr(env_cfg, "pause_at_switch", False):
        return set()
    return {s + d for s in switch_steps(env_cfg) for d in (0, 1)}


def after_step(state: Any) -> None:
    """Switch the environment when training step ``state.step`` closes a segment (trainer's ``finish_step``)."""
    ends = getattr(state.env, "switch_steps", None)
    if ends and state.step in ends:
        state.obs = state.env.switch(ends.index(state.step) + 1)


def current_segment(state: Any) -> dict[str, float]:
    """``{"segment": k}`` for a chain (the segment the last steps trained on), ``{}`` otherwise."""
    if getattr(state.env, "switch_steps", None) is None:
        return {}
    return {"segment": float(state.env.segment)}


def check_env(env_cfg: Any, read_segments: Callable[[Any], Any] | None = None) -> None:
    """Config-time check of ``env.schedule`` (``config.validate``): ``read_segments(env_cfg)`` reads
    the env's segments (by default a classification chain's; MinAtar passes its games'), and a bad
    one is a ``ConfigError`` naming the key (``env.game``, ``env.schedule.<k>.<key>``), before
    anything runs."""
    try:
        if read_segments is not None:
            read_segments(env_cfg)
        elif getattr(env_cfg, "schedule", None) is not None:
            classification_segments(env_cfg)
    except ValueError as e:
        key, _, message = str(e).partition(": ")
        raise ConfigError(key, message) from None
