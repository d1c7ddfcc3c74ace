"""Interventions on plasticity (section 6.2, plus ReDo, CReLU, plasticity injection and the
peers' methods): one small module each, composed in a fixed order.

Each module here defines its config dataclass and its ``Intervention`` subclass and registers
them (``registry.register("intervention", name, <Name>Config, build=<class>, check=<range
checks>, phase=<when it acts>)``), and takes its place in ``ORDER`` below; importing this package
imports every module (``registry.load_modules``). The config schema (``config.InterventionsConfig``), the range checks
of ``config.validate``, the order below and the tests read those registrations: adding an
intervention is one module here, one ``configs/intervention/<name>.yaml`` and one test file.

An intervention is selected by adding its entry to the ``intervention`` config list group
(``intervention=[layer_norm,two_hot]``); ``build_interventions`` returns the active ones in the
order of ``ORDER``, and every hook (``base.Intervention``) runs them in that
order. ``phase`` names when an intervention mainly acts:

1. ``build``: network options before the networks are built (``crelu``, ``layer_norm``,
   ``spectral_norm``, ``two_hot``; they touch different options, or set one to the same value,
   so their order is immaterial; ``on_build`` then records what some need of the network as built);
2. ``loss``: a penalty added to the TD loss at every optimizer step (``weight_decay``,
   ``l2_init``: sums, order immaterial);
3. ``gradient``: between the backward and the optimizer step (``sam``: the gradient at the
   ascent point replaces the step's gradient);
4. ``after_step``: after every optimizer step, in the registered order; each module's docstring
   says why it sits where it does (``redo`` before ``continual_backprop``, so CBP ranks the units
   after ReDo's pass; ``scheduled_reset`` after both, a reset superseding the unit surgery of the
   same step; ``nap`` last, its projection the final word of every step);
5. ``target_update``: right after each target-network copy (in a step that also updates the
   target network, after the after-step hooks), in the registered order (``reset_optimizer``
   last, so the whole state ends empty).

``REGISTRY`` (name -> class, in that order) is the view of the registrations callers use;
``plasticity-run --help`` prints, for each hook, the interventions that implement it in that order
(``order_help``).

Decoupled weight decay (AdamW) is an optimizer option, not an intervention: ``optimizer=adamw``
or ``optimizer.weight_decay`` (``optim.py``); it acts inside the optimizer step, before step 4.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import registry
from ..errors import ConfigError
from .base import PHASES, Intervention, Networks

# The order of application: every hook runs the active interventions in this order (a hook of one
# phase meets only the interventions acting then; within a phase, each module's docstring says why it
# sits where it does). A new intervention adds its name here.
ORDER = (
    "crelu",
    "fourier",
    "layer_norm",
    "spectral_norm",
    "two_hot",
    "hl_gauss",  # build
    "weight_decay",
    "l2_init",
    "parseval",  # loss
    "sam",  # gradient
    "shrink_perturb",
    "reset_last_layer",  # target_update
    "redo",
    "regrama",
    "continual_backprop",
    "scheduled_reset",
    "hare_tortoise",
    "soft_shrink_perturb",
    "plasticity_injection",
    "weight_clipping",
    "nap",  # after_step
    "c_chain",  # loss
    "reset_optimizer",  # target_update, last: the optimizer state ends empty whatever the others did
)

registry.load_modules(__name__, __path__)
registry.set_order("intervention", ORDER)


def _registered() -> dict[str, type[Intervention]]:
    """name -> class of every registered intervention, in the order of application. A
    registration whose class carries another ``name``, names an unknown ``phase`` or does not
    implement that phase's hook is a programming error: raised at import."""
    out: dict[str, type[Intervention]] = {}
    for name, part in registry.parts("intervention").items():
        cls, phase = part.build, part.spec.phase
        if not (isinstance(cls, type) and issubclass(cls, Intervention)) or cls.name != name:
            raise ValueError(f"intervention {name!r}: build= must be an Intervention subclass with name {name!r}")
        if phase not in PHASES:
            raise ValueError(f"intervention {name!r}: phase={phase!r}; known: {sorted(PHASES)}")
        if getattr(cls, PHASES[phase]) is getattr(Intervention, PHASES[phase]):
            raise ValueError(f"intervention {name!r}: phase {phase!r}, but {cls.__name__} lacks {PHASES[phase]}")
        out[name] = cls
    return out


# name -> class; the order of this dict is the order of application (the registered ``order``)
REGISTRY: dict[str, type[Intervention]] = _registered()


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


# The hooks of a training step, in the order they are called (``base.Intervention``; the agents).
HOOKS = ("network_options", "on_build", "loss_penalty", "before_step", "after_step", "on_target_update")


def hook_order() -> dict[str, list[str]]:
    """hook -> the interventions that implement it, in the order the hook runs them (``ORDER``)."""
    return {
        hook: [name for name, cls in REGISTRY.items() if getattr(cls, hook) is not getattr(Intervention, hook)]
        for hook in HOOKS
    }


def order_help(indent: str = "  ") -> str:
    """The order of the hooks and, within each, of the interventions, as ``plasticity-run --help``
    prints it (the ``${intervention_order:}`` resolver of configs/hydra/help/plasticity_run.yaml):
    one line per hook, the lines after the first indented by ``indent`` (the template's own)."""
    lines = [f"{hook:<17} {' > '.join(names) or '-'}" for hook, names in hook_order().items()]
    return ("\n" + indent).join(lines)


OmegaConf.register_new_resolver("intervention_order", order_help, replace=True)


def active_names(interventions: list[Intervention]) -> str:
    """The label of an intervention set for tables: names joined by '+', or 'none'."""
    return "+".join(i.name for i in interventions) or "none"


__all__ = [
    "HOOKS",
    "ORDER",
    "REGISTRY",
    "Intervention",
    "Networks",
    "active_names",
    "build_interventions",
    "hook_order",
    "network_options",
    "order_help",
]
