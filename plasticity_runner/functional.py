"""The training step as pure functions of tensors: the loss of ``DQNAgent.loss_terms`` and the
project's optimizers (``optim.py``), with the parameters, buffers and optimizer state passed in
and returned as dicts of tensors.

Pure means: no ``.item()``, no Python branch on a tensor's value, step counts held as tensors, no
state kept between calls. So each function both compiles with ``torch.compile(fullgraph=True)``
and maps over a leading member dimension with ``torch.func.vmap`` (a population of agents: one
stacked tensor per parameter). The step graph (``speed.step_graph``, ``step_graph.py``) and the
populations build on these.

* **The loss.** ``FunctionalLoss(agent)`` computes ``agent.loss_terms`` (the TD term, each
  intervention's penalty, their total, in the order of ``agent.loss_names``) for explicit online
  parameters and buffers, target parameters and buffers, and a batch, by running the agent's own
  ``loss_terms`` under ``torch.func.functional_call`` of a module holding both networks: the same
  code, with the same eval/train switch (the online network in train mode for the forward of the
  TD term only). An intervention's penalty works here when it reads the online network through
  the ``Networks`` it receives (``weight_decay``, ``l2_init``, ``parseval``); an intervention whose
  in-step hooks read other per-run tensors or decide per step declares why in its class attribute
  ``functional_unsupported`` (``c_chain``: its previous network and reference batch; ``sam``: a
  second forward and backward inside the step), and ``unsupported`` lists them for a caller to
  refuse at start.
* **The optimizers.** ``FunctionalAdam`` (eq. 6 with ``eps_root``, decoupled weight decay, per-element
  step counts), ``FunctionalRMSProp`` (optax form, centred or not, eps inside or outside the root),
  ``FunctionalSGD`` (heavy-ball momentum): ``init(params)`` and ``update(params, grads, state)``.
  A state is a dict of dicts ``{slot: {parameter name: tensor}}``; ``step`` counts are float
  tensors (0-dim, or the parameter's shape for a per-element count). ``functional_optimizer``
  reads one from a torch optimizer; ``optimizer_state`` and ``write_optimizer_state`` convert
  to and from the torch optimizer's per-parameter state, whose layout (what a checkpoint holds)
  stays that of ``optim.py``.

Which parameters are trained: the online network's parameters that the optimizer holds and that
require gradients (``split_online``); the rest (frozen parameters, buffers) pass as constants.
A parameter the loss does not reach gets a zero gradient here, where the torch optimizer would skip
it (no gradient at all): no body of this project has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .envs.base import Batch
from .optim import Adam, RMSProp

Tensors = dict[str, torch.Tensor]
OptState = dict[str, Tensors]
BATCH_FIELDS = ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t")


# --- which parts a pure step can run ---------------------------------------------------------------


def unsupported(interventions: list[Any]) -> list[tuple[str, str]]:
    """``(name, reason)`` of each intervention whose in-step hooks a pure step cannot run."""
    return [(i.name, i.functional_unsupported) for i in interventions if i.functional_unsupported]


def split_online(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Tensors, Tensors]:
    """``(trained, fixed)`` of ``net`` by name: the parameters the optimizer holds that require
    gradients, and everything else (frozen parameters, buffers). The tensors themselves, not copies."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trained, fixed = {}, {}
    for name, p in net.named_parameters():
        (trained if id(p) in held and p.requires_grad else fixed)[name] = p
    fixed.update(dict(net.named_buffers()))
    return trained, fixed


def network_tensors(net: nn.Module) -> Tensors:
    """Every parameter and buffer of ``net`` by name (the target network's state for the loss)."""
    return {**dict(net.named_parameters()), **dict(net.named_buffers())}


def as_batch(batch: Batch | Mapping[str, torch.Tensor]) -> Batch:
    """A ``Batch`` from a ``Batch`` or a mapping of its fields (a pytree ``vmap`` can map over)."""
    if isinstance(batch, Batch):
        return batch
    return Batch(**{k: batch[k] for k in BATCH_FIELDS})


def batch_dict(batch: Batch) -> Tensors:
    """A ``Batch``'s fields as a dict (for ``vmap``'s in_dims)."""
    return {k: getattr(batch, k) for k in BATCH_FIELDS}


# --- the loss --------------------------------------------------------------------------------------


class _Pair(nn.Module):
    """The agent's two networks as submodules of one module, so that one ``functional_call``
    swaps both; ``forward`` is the agent's ``loss_terms``."""

    def __init__(self, agent: Any):
        super().__init__()
        self.online, self.target = agent.online, agent.target
        object.__setattr__(self, "agent", agent)  # not a submodule

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.agent.loss_terms(batch)


class FunctionalLoss:
    """``agent.loss_terms`` as a pure function of explicit tensors (see the module docstring).

    ``terms(trained, fixed, target, batch)`` -> the loss parts ``[len(agent.loss_names)]``;
    ``grads_and_terms(...)`` -> ``(d total / d trained, terms)`` (``torch.func.grad``). The
    networks' own tensors are untouched (``functional_call`` swaps them for the call only). The
    module structure is read at each call: an intervention that changes it (plasticity injection)
    needs the new names in the dicts passed.

    Which parameters a penalty sums over (``interventions.base.trains``): every tensor passed in
    ``trained`` or as a plain tensor in ``fixed``; a frozen parameter (plasticity injection's old
    and frozen heads) is left out only when ``fixed`` holds the module's own ``nn.Parameter``
    (``requires_grad`` off), as ``split_online`` gives it. Stacked copies of frozen parameters
    (a population under ``vmap``) are plain tensors: a penalty would count them."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.pair = _Pair(agent)
        self.loss_names = agent.loss_names
        self.refused = unsupported(agent.interventions)

    def terms(self, trained: Tensors, fixed: Tensors, target: Tensors, batch: Batch | Mapping) -> torch.Tensor:
        tensors = {f"online.{k}": v for k, v in trained.items()}
        tensors.update({f"online.{k}": v for k, v in fixed.items()})
        tensors.update({f"target.{k}": v for k, v in target.items()})
        return torch.func.functional_call(self.pair, tensors, (as_batch(batch),), tie_weights=False, strict=False)

    def grads_and_terms(
        self, trained: Tensors, fixed: Tensors, target: Tensors, batch: Batch | Mapping
    ) -> tuple[Tensors, torch.Tensor]:
        def total(trained: Tensors, fixed: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
            terms = self.terms(trained, fixed, target, batch)
            return terms[-1], terms.detach()

        # ``fixed`` passes through the transform (not captured), so that a train-mode forward may
        # update its buffers in place (spectral norm's power iteration), as the eager step does
        return torch.func.grad(total, argnums=0, has_aux=True)(trained, fixed)


# --- the optimizers --------------------------------------------------------------------------------


def _count(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=like.device)


@dataclass(frozen=True)
class FunctionalAdam:
    """``optim.Adam`` (paper eq. 6; AdamW's decoupled decay; per-element counts) as a pure update.

    State: ``step`` (a float count per parameter: 0-dim, or per element where the torch state has
    ``unit_step``), ``exp_avg``, ``exp_avg_sq``. Per step: ``p *= 1 - lr * weight_decay``; ``m``
    lerps to ``g`` by ``1 - b1``; ``v = b2 v + (1 - b2) g^2``; ``t += 1``;
    ``p += (-lr / (1 - b1^t)) * m / (sqrt(v / (1 - b2^t) + eps_root) + eps)``, the bias
    corrections in float64 (as ``optim.Adam``'s host floats)."""

    lr: float
    b1: float
    b2: float
    eps: float
    eps_root: float = 0.0
    weight_decay: float = 0.0
    slots = ("exp_avg", "exp_avg_sq")

    def init(self, params: Tensors) -> OptState:
        return {
            "step": {k: _count(p) for k, p in params.items()},
            "exp_avg": {k: torch.zeros_like(p) for k, p in params.items()},
            "exp_avg_sq": {k: torch.zeros_like(p) for k, p in params.items()},
        }

    def update(self, params: Tensors, grads: Tensors, state: OptState) -> tuple[Tensors, OptState]:
        new_p, new_s = {}, {"step": {}, "exp_avg": {}, "exp_avg_sq": {}}
        for k, p in params.items():
            g, m, v, t = grads[k], state["exp_avg"][k], state["exp_avg_sq"][k], state["step"][k] + 1
            if self.weight_decay:
                p = p * (1 - self.lr * self.weight_decay)
            m = torch.lerp(m, g, 1 - self.b1)
            v = (v * self.b2).addcmul(g, g, value=1 - self.b2)
            t64 = t.to(torch.float64)
            bias1 = 1 - torch.pow(self.b1, t64)
            bias2 = (1 - torch.pow(self.b2, t64)).to(p.dtype)
            step_size = (-self.lr / bias1).to(p.dtype)
            denom = ((v / bias2) + self.eps_root).sqrt() + self.eps
            new_p[k] = p + step_size * (m / denom)
            new_s["step"][k], new_s["exp_avg"][k], new_s["exp_avg_sq"][k] = t, m, v
        return new_p, new_s


@dataclass(frozen=True)
class FunctionalRMSProp:
    """``optim.RMSProp`` (optax / DQN Zoo form) as a pure update. State: ``step`` (counted, unused
    by the update), ``nu`` and, when ``centered``, ``mu``. ``nu = d nu + (1 - d) g^2``;
    ``mu`` lerps to ``g`` by ``1 - d``; ``p -= lr g / sqrt(nu - mu^2 + eps)`` (eps inside the root)
    or ``/ (sqrt(nu - mu^2) + eps)`` (``eps_outside_root``)."""

    lr: float
    decay: float
    eps: float
    centered: bool = True
    eps_outside_root: bool = False

    @property
    def slots(self) -> tuple[str, ...]:
        return ("nu", "mu") if self.centered else ("nu",)

    def init(self, params: Tensors) -> OptState:
        out = {"step": {k: _count(p) for k, p in params.items()}}
        out.update({s: {k: torch.zeros_like(p) for k, p in params.items()} for s in self.slots})
        return out

    def update(self, params: Tensors, grads: Tensors, state: OptState) -> tuple[Tensors, OptState]:
        d = self.decay
        new_p: Tensors = {}
        new_s: OptState = {"step": {}, **{s: {} for s in self.slots}}
        for k, p in params.items():
            g = grads[k]
            nu = (state["nu"][k] * d).addcmul(g, g, value=1 - d)
            if self.centered:
                mu = torch.lerp(state["mu"][k], g, 1 - d)
                denom = nu.addcmul(mu, mu, value=-1)
                new_s["mu"][k] = mu
            else:
                denom = nu
            denom = denom.sqrt() + self.eps if self.eps_outside_root else (denom + self.eps).sqrt()
            new_p[k] = p.addcdiv(g, denom, value=-self.lr)
            new_s["nu"][k], new_s["step"][k] = nu, state["step"][k] + 1
        return new_p, new_s


@dataclass(frozen=True)
class FunctionalSGD:
    """``torch.optim.SGD(lr, momentum)`` as a pure update. State: ``momentum_buffer`` (with
    ``momentum > 0``; a fresh buffer is zeros, and ``momentum * 0 + g`` is torch's first-step ``g``
    exactly), ``step`` (counted, unused). ``buf = momentum buf + g``; ``p -= lr buf``."""

    lr: float
    momentum: float = 0.0

    @property
    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def init(self, params: Tensors) -> OptState:
        out = {"step": {k: _count(p) for k, p in params.items()}}
        out.update({s: {k: torch.zeros_like(p) for k, p in params.items()} for s in self.slots})
        return out

    def update(self, params: Tensors, grads: Tensors, state: OptState) -> tuple[Tensors, OptState]:
        new_p: Tensors = {}
        new_s: OptState = {"step": {}, **{s: {} for s in self.slots}}
        for k, p in params.items():
            g = grads[k]
            if self.momentum:
                g = (state["momentum_buffer"][k] * self.momentum).add(g)
                new_s["momentum_buffer"][k] = g
            new_p[k] = p.add(g, alpha=-self.lr)
            new_s["step"][k] = state["step"][k] + 1
        return new_p, new_s


FunctionalOptimizer = FunctionalAdam | FunctionalRMSProp | FunctionalSGD


class UnsupportedOptimizer(ValueError):
    """A torch optimizer (or an option of one) that has no functional form here."""


def functional_optimizer(optimizer: torch.optim.Optimizer) -> FunctionalOptimizer:
    """The functional form of ``optimizer`` (its hyperparameters; every param group must share them).
    Raises ``UnsupportedOptimizer`` naming what has none."""
    groups = optimizer.param_groups
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in groups]
    if any(h != hyper[0] for h in hyper[1:]):
        raise UnsupportedOptimizer(f"{type(optimizer).__name__}: param groups with different hyperparameters")
    h = hyper[0]
    if isinstance(optimizer, Adam):
        b1, b2 = h["betas"]
        return FunctionalAdam(h["lr"], b1, b2, h["eps"], h["eps_root"], h.get("weight_decay", 0.0))
    if isinstance(optimizer, RMSProp):
        return FunctionalRMSProp(h["lr"], h["decay"], h["eps"], h["centered"], h.get("eps_outside_root", False))
    if type(optimizer) is torch.optim.SGD:
        extra = {k: h[k] for k in ("dampening", "weight_decay") if h.get(k)}
        extra.update({k: True for k in ("nesterov", "maximize") if h.get(k)})
        if extra:
            raise UnsupportedOptimizer(f"SGD options without a functional form: {extra}")
        return FunctionalSGD(h["lr"], h["momentum"])
    raise UnsupportedOptimizer(f"{type(optimizer).__name__} has no functional form")


def optimizer_state(
    optimizer: torch.optim.Optimizer, fopt: FunctionalOptimizer, params: Tensors, counts: Tensors | None = None
) -> OptState:
    """The functional state of ``params`` (by name) from the torch optimizer's per-parameter state:
    its tensors themselves (no copy), zeros where a parameter has no state yet (as the torch
    optimizer would create at its next step). ``counts``: the step counts to use (tensors by name),
    read from ``state["step"]`` (a host int; one small tensor each) when None; a per-element
    ``unit_step`` always comes from the state."""
    out: OptState = {"step": {}, **{s: {} for s in fopt.slots}}
    for k, p in params.items():
        st = optimizer.state.get(p) or {}
        for s in fopt.slots:
            buf = st.get(s)
            out[s][k] = torch.zeros_like(p) if buf is None else buf
        if "unit_step" in st:
            out["step"][k] = st["unit_step"]
        elif counts is not None:
            out["step"][k] = counts[k]
        else:
            out["step"][k] = torch.tensor(float(st.get("step", 0)), dtype=torch.float32, device=p.device)
    return out


@torch.no_grad()
def write_optimizer_state(
    optimizer: torch.optim.Optimizer, fopt: FunctionalOptimizer, params: Tensors, state: OptState
) -> None:
    """Write a functional state (one step after the torch state's, as ``update`` returns it) into
    the torch optimizer's per-parameter state, in place where a tensor exists: the layout
    ``optim.py``'s own step leaves (Adam's host ``step`` and, on its fused path, ``step_t``; a
    per-element ``unit_step``; SGD's ``momentum_buffer``, no state at all without momentum). The host counts
    advance by one (no device read)."""
    if isinstance(fopt, FunctionalSGD) and not fopt.momentum:
        return  # torch's SGD keeps no state without momentum
    for k, p in params.items():
        st = optimizer.state[p]
        for s in fopt.slots:
            if st.get(s) is None:
                st[s] = state[s][k].clone()
            elif st[s] is not state[s][k]:
                st[s].copy_(state[s][k])
        if isinstance(fopt, FunctionalSGD):  # torch's SGD keeps no count
            continue
        st["step"] = int(st.get("step", 0)) + 1
        if "unit_step" in st:
            st["unit_step"].copy_(state["step"][k])
        elif isinstance(fopt, FunctionalAdam):
            if fopt.eps_root:
                st.pop("step_t", None)  # optim.Adam's _foreach path drops the fused kernel's count
            elif "step_t" in st:
                st["step_t"].copy_(state["step"][k])
            else:
                st["step_t"] = torch.full((), float(st["step"]), dtype=torch.float32, device=p.device)


def write_params(targets: Tensors, values: Tensors) -> None:
    """Copy ``values`` into the tensors ``targets`` (by name), in place (``torch._foreach_copy_``)."""
    names = list(targets)
    with torch.no_grad():
        torch._foreach_copy_([targets[k] for k in names], [values[k] for k in names])
