"""Parts register themselves: one ``register`` call in the part's own module declares its config
schema, its range checks, its builder, its place in the order and what its group asks of every
part besides (its *spec*: one dataclass per group, below; a keyword the group does not know is an
error at import).

Every kind of part lives in one package, and the package imports all of its modules on import
(``load_modules``), so dropping a module into the package is all it takes to add a part:

================  ================================  ==================================================  =====================
group             package                           what ``build`` is                                   its spec's keywords
================  ================================  ==================================================  =====================
``intervention``  ``plasticity_runner.interventions``  the ``Intervention`` subclass                     ``InterventionSpec``
``architecture``  ``plasticity_runner.nets``           ``build(arch_cfg, obs_shape, layer_norm, activation)``  ``ArchitectureSpec``
``env``           ``plasticity_runner.envs``           ``build(env_cfg, device, seed)``                     ``EnvSpec``
``diagnostic``    ``plasticity_runner.probes``         the ``Diagnostic``                                  ``DiagnosticSpec``
================  ================================  ==================================================  =====================

The config schema (``config.py``), Hydra's ConfigStore, ``config.validate`` and the tests read the
registrations; nothing keeps a parallel list. This module depends on nothing in the project.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

# group -> the package whose modules register that group's parts
PACKAGES = {
    "intervention": "plasticity_runner.interventions",
    "architecture": "plasticity_runner.nets",
    "env": "plasticity_runner.envs",
    "diagnostic": "plasticity_runner.probes",
}


@dataclass(frozen=True)
class InterventionSpec:
    """``phase``: when it acts (``interventions.base.PHASES``: build, loss, after_step,
    target_update); ``test_overrides``: the overrides that make it act within the first steps of a
    tiny test run (the generic tests add them)."""

    phase: str
    test_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArchitectureSpec:
    """``tiny``: its sizes at test scale (the tests build it with them); ``test_overrides``: the
    same as command-line overrides, for the tests that run it through the trainer."""

    tiny: dict[str, Any] = field(default_factory=dict)
    test_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvSpec:
    """``program``: a case study's own loop ``program(cfg, run) -> summary`` (section 4), run by
    ``trainer.train`` instead of the DQN loop; ``episodic``: its games end (the trainer logs
    ``episodes_finished`` and ``episode_return``); ``continual``: a continual supervised protocol
    (``envs/continual.py``: its own program, every intervention, the DQN runs' pause)."""

    program: Callable[..., dict[str, Any]] | None = None
    episodic: bool = False
    continual: bool = False


@dataclass(frozen=True)
class DiagnosticSpec:
    """``trainer_only``: only the DQN trainer runs it (the case studies' loops never do: the probe)."""

    trainer_only: bool = False


SPECS: dict[str, type] = {
    "intervention": InterventionSpec,
    "architecture": ArchitectureSpec,
    "env": EnvSpec,
    "diagnostic": DiagnosticSpec,
}


@dataclass(frozen=True)
class Part:
    """One registered option of a config group.

    ``schema``: the dataclass of its config keys (stored in Hydra's ConfigStore; a typo in a key
    fails at composition). ``check(cfg, key)``: range checks of the composed config ``cfg`` whose
    part sits at the dotted ``key`` (e.g. ``"intervention.redo"``); raises ``errors.ConfigError``
    naming the key. ``order``: the place in the order of application (interventions) or of
    running (diagnostics). ``spec``: what its group asks of every part besides (``SPECS``)."""

    group: str
    name: str
    schema: type
    build: Any = None
    check: Callable[[Any, str], None] | None = None
    order: float = 0.0
    spec: Any = None


_PARTS: dict[str, dict[str, Part]] = {}


def register(
    group: str,
    name: str,
    schema: type,
    *,
    build: Any = None,
    check: Callable | None = None,
    order: float = 0.0,
    **spec: Any,
) -> Part:
    """Register one part (at import of its module); ``spec``: the keywords of its group's spec
    (``SPECS``); a keyword the spec does not know, or a second part of the same name, is an error."""
    if group not in PACKAGES:
        raise ValueError(f"unknown part group {group!r}; known: {sorted(PACKAGES)}")
    parts = _PARTS.setdefault(group, {})
    if name in parts and parts[name].schema is not schema:
        raise ValueError(f"{group} {name!r} is registered twice")
    kind = SPECS[group]
    known = [f.name for f in fields(kind)]
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise TypeError(f"{group} {name!r}: unknown keyword(s) {unknown}; its spec {kind.__name__} declares {known}")
    try:
        typed = kind(**{k: tuple(v) if k == "test_overrides" else v for k, v in spec.items()})
    except TypeError as e:
        raise TypeError(f"{group} {name!r}: {e}; its spec {kind.__name__} declares {known}") from None
    part = Part(group, name, schema, build, check, float(order), typed)
    parts[name] = part
    return part


def set_order(group: str, names: tuple[str, ...] | list[str]) -> None:
    """Give the parts of ``group`` their order from one list (the interventions': the order of
    application, ``interventions.ORDER``): every registered part must be in it, none registered
    with an ``order=`` of its own, and the list may name nothing else."""
    found = _PARTS.get(group, {})
    own = sorted(n for n, p in found.items() if p.order != 0.0)
    missing, unknown = sorted(set(found) - set(names)), sorted(set(names) - set(found))
    problems = [
        text
        for text, bad in (
            (f"registered with order= (drop it): {own}", own),
            (f"registered but not listed (add them): {missing}", missing),
            (f"listed but not registered: {unknown}", unknown),
            ("a name is listed twice", len(set(names)) != len(names)),
        )
        if bad
    ]
    if problems:
        raise ValueError(f"the order of the {group} parts is one list ({list(names)}): " + "; ".join(problems))
    for k, name in enumerate(names):
        found[name] = replace(found[name], order=float(k + 1))


def parts(group: str) -> dict[str, Part]:
    """The registered parts of ``group``, name -> part, in their order (ties: by name)."""
    if group not in PACKAGES:
        raise ValueError(f"unknown part group {group!r}; known: {sorted(PACKAGES)}")
    importlib.import_module(PACKAGES[group])  # its __init__ imports every module (load_modules)
    found = _PARTS.get(group, {})
    return {p.name: p for p in sorted(found.values(), key=lambda p: (p.order, p.name))}


def get(group: str, name: str) -> Part:
    """The part ``name`` of ``group``; a ``KeyError`` that lists the known names."""
    known = parts(group)
    if name not in known:
        raise KeyError(f"unknown {group} {name!r}; known: {sorted(known)}")
    return known[name]


def load_modules(package_name: str, package_path: list[str]) -> None:
    """Import every module of a package (called by the package's ``__init__``), so that each
    registers its parts; modules whose names start with ``_`` are skipped."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
