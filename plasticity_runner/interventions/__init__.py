"""Interventions on plasticity (section 6.2, plus ReDo, CReLU and plasticity injection): one small
module each, composed in a fixed order.

An intervention is selected by adding its entry to the ``intervention`` config list group
(``intervention=[layer_norm,two_hot]``); ``build_interventions`` returns the active ones in the
order of ``REGISTRY``, and every hook runs them in that order. The order, by when each acts:

1. build time (network options; they touch different options, or set one to the same value, so
   their order is immaterial): ``crelu``, ``layer_norm``, ``spectral_norm``, ``two_hot``, ``nap``
   (its layer norm: ``layer_norm`` and ``nap`` together set it once); ``on_build`` records
   ``l2_init``'s theta_0 and ``nap``'s initial norms from the network as built;
2. every optimizer step, in the loss: ``weight_decay``, ``l2_init`` (sums; order immaterial);
3. after every optimizer step, in this order: ``redo`` (every ``every_steps``), then
   ``continual_backprop`` (unit-level recycling, ReDo first so CBP ranks the units after ReDo's
   pass), then ``scheduled_reset`` (every ``every_steps``: a reset supersedes the unit surgery of
   the same step), then ``soft_shrink_perturb`` (every step, on the network as the others left it),
   then ``plasticity_injection`` (once), then ``nap`` (last: its projection is the final word of
   every step, so each weight ends the step at its initial norm whatever the others did);
4. at each target update (right after the target copy; in a step that also updates the target
   network, after the after-step hooks): ``shrink_perturb``, then ``reset_last_layer`` (so the last
   layer ends exactly at a fresh initialisation), then ``reset_optimizer`` (last, so the whole
   state ends empty).

Decoupled weight decay (AdamW) is an optimizer option, not an intervention: ``optimizer=adamw``
or ``optimizer.weight_decay`` (``optim.py``); it acts inside the optimizer step, before step 3.

To add one: a module here subclassing ``base.Intervention``, an entry below, an
``Optional[<Name>Config]`` field of ``config.InterventionsConfig`` (same position) and a
``configs/intervention/<name>.yaml``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ..errors import ConfigError
from .base import Intervention
from .continual_backprop import ContinualBackprop
from .crelu import CReLU
from .l2_init import L2Init
from .layer_norm import LayerNorm
from .nap import NaP
from .plasticity_injection import PlasticityInjection
from .redo import ReDo
from .reset_last_layer import ResetLastLayer
from .reset_optimizer import ResetOptimizer
from .scheduled_reset import ScheduledReset
from .shrink_perturb import ShrinkPerturb
from .soft_shrink_perturb import SoftShrinkPerturb
from .spectral_norm import SpectralNorm
from .two_hot import TwoHot
from .weight_decay import WeightDecay

# name -> class; the order of this dict is the order of application (module docstring, the README)
REGISTRY: dict[str, type[Intervention]] = {
    cls.name: cls
    for cls in (
        CReLU,
        LayerNorm,
        SpectralNorm,
        TwoHot,
        WeightDecay,
        L2Init,
        ShrinkPerturb,
        ResetLastLayer,
        ReDo,
        ContinualBackprop,
        ScheduledReset,
        SoftShrinkPerturb,
        PlasticityInjection,
        NaP,
        ResetOptimizer,
    )
}


def build_interventions(cfg: DictConfig | dict | None) -> list[Intervention]:
    """The active interventions (entries set in ``cfg``), in the order of ``REGISTRY``.

    Raises ``ConfigError`` naming the pair when two active interventions cannot be combined.
    """
    if not cfg:
        return []
    active = {name: opts for name, opts in cfg.items() if opts is not None}
    unknown = sorted(set(active) - set(REGISTRY))
    if unknown:
        raise ConfigError("intervention", f"unknown interventions {unknown}; known: {list(REGISTRY)}")
    out = [REGISTRY[name](active[name]) for name in REGISTRY if name in active]
    for i in out:
        i.check_compatible(out)
    network_options(out)  # raises on two interventions setting one network option differently
    return out


def network_options(interventions: list[Intervention]) -> dict[str, Any]:
    """Keyword options for ``nets.build_network`` after every intervention has had its say."""
    options: dict[str, Any] = {}
    for i in interventions:
        mine: dict[str, Any] = {}
        i.network_options(mine)
        for key, value in mine.items():
            if key in options and options[key] != value:
                raise ConfigError(
                    "intervention",
                    f"{i.name} sets network option {key}={value!r}, already set to {options[key]!r} "
                    f"by another intervention",
                )
        options.update(mine)
    return options


def active_names(interventions: list[Intervention]) -> str:
    """The label of an intervention set for tables: names joined by '+', or 'none'."""
    return "+".join(i.name for i in interventions) or "none"
