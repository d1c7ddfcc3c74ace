"""Interventions on plasticity (section 6.2): one small module each, composed in a fixed order.

An intervention is selected by adding its entry to the ``intervention`` config list group
(``intervention=[layer_norm,two_hot]``); ``build_interventions`` returns the active ones in the
order of ``ORDER``. Each one implements any of the hooks of ``base.Intervention``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .base import Intervention

# name -> class; the order of this dict is the order of application (documented in the README)
REGISTRY: dict[str, type[Intervention]] = {}


def build_interventions(cfg: DictConfig | dict | None) -> list[Intervention]:
    """The active interventions (entries set in ``cfg``), in the order of ``REGISTRY``."""
    if not cfg:
        return []
    active = {name: opts for name, opts in cfg.items() if opts is not None}
    unknown = sorted(set(active) - set(REGISTRY))
    if unknown:
        raise ValueError(f"intervention: unknown interventions {unknown}; known: {list(REGISTRY)}")
    out = [REGISTRY[name](active[name]) for name in REGISTRY if name in active]
    for i in out:
        i.check_compatible(out)
    return out


def network_options(interventions: list[Intervention]) -> dict[str, Any]:
    """Keyword options for ``nets.build_network`` after every intervention has had its say."""
    options: dict[str, Any] = {}
    for i in interventions:
        i.network_options(options)
    return options


def active_names(interventions: list[Intervention]) -> str:
    """The label of an intervention set for tables: names joined by '+', or 'none'."""
    return "+".join(i.name for i in interventions) or "none"
