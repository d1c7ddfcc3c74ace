"""What a diagnostic is: the ``Diagnostic`` interface, the read-only ``PauseView`` it measures and
the ``Output`` it returns.

A diagnostic is one module of ``probes/``, which ends with

    registry.register("diagnostic", NAME, <Schema>, build=<Diagnostic subclass>, check=<range checks>, order=<float>)

``pause.run_pause`` runs the diagnostics due at a pause in ``order``, each on a ``PauseView`` of the
training state, and writes what they return: their scalars under their ``phase``, their arrays
under their names, a ``timing/<name>_s`` row each. A diagnostic never receives the metrics writer
and never writes to the training state (the networks, the replay, the RNG streams); whatever it
needs at random comes from its own streams (``seeding``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from ..errors import ConfigError


@dataclass(frozen=True)
class Output:
    """What one diagnostic measured at one pause: scalars (metric name -> value, written under the
    diagnostic's ``phase``) and arrays (array name -> numpy array, written to the pause's arrays file)."""

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def copied_networks(networks: Any) -> Any:
    """``networks`` (``interventions.base.Networks``) with eval-mode deep copies of its online and
    target networks: what a diagnostic computes with it (losses, gradients) never touches training's."""
    import copy

    return dataclasses.replace(
        networks, online=copy.deepcopy(networks.online).eval(), target=copy.deepcopy(networks.target).eval()
    )


@dataclass(frozen=True)
class PauseView:
    """The training state as one diagnostic sees it at the pause of training step ``step``.

    ``agent`` is there for its losses (``loss(batch, networks)``): a diagnostic computes them on the
    networks of a ``copied_networks``, never on the training networks, and copies a network before
    running it in another mode. ``batch``: the first ``inputs(cfg)`` transitions of the pause's
    evaluation batch, which the diagnostics share (stream ``diagnostics/batch``); ``own_inputs``:
    the ``own_inputs(cfg)`` replay observations drawn for this diagnostic alone (stream
    ``<name>/inputs``). ``dynamics``: the training-dynamics tracker, the one piece of pause state
    that outlives a pause (checkpointed with the run). ``advance(n)``: tell the pause's progress
    that ``n`` more of the diagnostic's ``steps(cfg)`` are done (a Python int; never a tensor).
    """

    cfg: Any  # the whole run config (read-only)
    seed: int  # the run seed: every stream of the pause derives from it (``seeding``)
    step: int
    agent: Any
    replay: Any
    build_fresh: Callable[[], Any]  # a freshly initialised network of the run's architecture (interventions included)
    batch: Any = None
    own_inputs: Any = None
    dynamics: Any = None
    compiled_probe_fit: Any = None  # the probe's compiled minibatch loss (speed.compile / speed.cuda_graphs), if any
    advance: Callable[[int], None] = lambda n=1: None

    @property
    def online(self) -> Any:
        return self.agent.online

    @property
    def target(self) -> Any:
        return self.agent.target


def batch_head(batch: Any, n: int) -> Any:
    """The first ``n`` transitions of ``batch`` (every field sliced)."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[:n] for f in dataclasses.fields(batch)})


class Diagnostic:
    """One measurement of a pause. A subclass sets the class attributes and ``run``; the rest has
    defaults.

    ``name``: its registered name, ``timing/<name>_s`` and its progress line. ``phase``: the metrics
    phase of its scalars. ``key``: where its config sits (``diagnostics.<name>``; the plasticity
    probe's sits at ``probe``). ``scalars``: the metric names it writes at the default config (a
    per-layer family as ``<family>/*``, shell-style); ``arrays``: the array names it writes. The report keys on
    these declarations (``report/names.py``), and a test runs every diagnostic to check them.
    """

    name: str = ""
    phase: str = ""
    key: str = ""
    scalars: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()

    def config_key(self) -> str:
        return self.key or f"diagnostics.{self.name}"

    def config(self, cfg: Any) -> Any:
        """The diagnostic's own config node of the run config ``cfg``."""
        return OmegaConf.select(cfg, self.config_key())

    def due(self, cfg: Any, step: int) -> bool:
        """Whether it runs at the pause of ``step``: when enabled, every ``every_steps`` and at the
        final pause (``step == total_steps``)."""
        c = self.config(cfg)
        return bool(c.enabled) and (step % int(c.every_steps) == 0 or step == int(cfg.total_steps))

    def inputs(self, cfg: Any) -> int:
        """How many transitions of the pause's shared evaluation batch it reads (0: none)."""
        return 0

    def own_inputs(self, cfg: Any) -> int:
        """How many replay observations it draws for itself, apart from the shared batch (0: none)."""
        return 0

    def steps(self, cfg: Any) -> int | None:
        """How many ``advance`` ticks its progress bar counts (None: a bar with elapsed time only)."""
        return None

    def detail(self, cfg: Any) -> str:
        """A few words for its progress log line (e.g. the probe's ``3 targets x 10 steps``)."""
        return ""

    def run(self, view: PauseView) -> Output:
        raise NotImplementedError


def undeclared(patterns: tuple[str, ...], written) -> set[str]:
    """The names of ``written`` that no pattern of the declaration ``patterns`` matches (shell-style:
    ``param_norm/*`` covers every ``param_norm/<layer>``)."""
    return {w for w in written if not any(fnmatchcase(w, p) for p in patterns)}


def check_cadence(cfg: Any, key: str) -> None:
    """An enabled diagnostic's ``<key>.every_steps`` is a positive multiple of ``probe.every_steps``
    (the pause interval): it can only run at a pause."""
    if not OmegaConf.select(cfg, f"{key}.enabled"):
        return
    pause = OmegaConf.select(cfg, "probe.every_steps")
    if pause is None or pause <= 0:
        raise ConfigError("probe.every_steps", f"must be > 0, got {pause}")
    every = OmegaConf.select(cfg, f"{key}.every_steps")
    if every is None or every <= 0 or every % pause:
        raise ConfigError(
            f"{key}.every_steps", f"must be a positive multiple of probe.every_steps ({pause}), got {every}"
        )
