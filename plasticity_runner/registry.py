"""Parts register themselves: one ``register`` call in the part's own module declares its config
schema, its range checks, its builder and (for interventions) its place in the order.

Every kind of part lives in one package, and the package imports all of its modules on import
(``load_modules``), so dropping a module into the package is all it takes to add a part:

================  ================================  ==========================================
group             package                           what ``build`` is
================  ================================  ==========================================
``intervention``  ``plasticity_runner.interventions``  the ``Intervention`` subclass
``architecture``  ``plasticity_runner.nets``           ``build(arch_cfg, obs_shape, layer_norm, activation)``
``env``           ``plasticity_runner.envs``           ``build(env_cfg, device, seed)``
``diagnostic``    ``plasticity_runner.probes``         the ``Diagnostic``
================  ================================  ==========================================

The config schema (``config.py``), Hydra's ConfigStore, ``config.validate`` and the tests read the
registrations; nothing keeps a parallel list. This module depends on nothing in the project.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

# group -> the package whose modules register that group's parts
PACKAGES = {
    "intervention": "plasticity_runner.interventions",
    "architecture": "plasticity_runner.nets",
    "env": "plasticity_runner.envs",
    "diagnostic": "plasticity_runner.probes",
}


@dataclass(frozen=True)
class Part:
    """One registered option of a config group.

    ``schema``: the dataclass of its config keys (stored in Hydra's ConfigStore; a typo in a key
    fails at composition). ``check(cfg, key)``: range checks of the composed config ``cfg`` whose
    part sits at the dotted ``key`` (e.g. ``"intervention.redo"``); raises ``errors.ConfigError``
    naming the key. ``order``: the place in the order of application (interventions) or of
    running (diagnostics). ``extra``: what a group needs besides (e.g. an architecture's tiny
    sizes for the tests)."""

    group: str
    name: str
    schema: type
    build: Any = None
    check: Callable[[Any, str], None] | None = None
    order: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


_PARTS: dict[str, dict[str, Part]] = {}


def register(group: str, name: str, schema: type, *, build: Any = None, check: Callable | None = None,
             order: float = 0.0, **extra: Any) -> Part:
    """Register one part (at import of its module); a second part of the same name is an error."""
    if group not in PACKAGES:
        raise ValueError(f"unknown part group {group!r}; known: {sorted(PACKAGES)}")
    parts = _PARTS.setdefault(group, {})
    if name in parts and parts[name].schema is not schema:
        raise ValueError(f"{group} {name!r} is registered twice")
    part = Part(group, name, schema, build, check, float(order), dict(extra))
    parts[name] = part
    return part


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
