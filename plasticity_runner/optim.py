"""Optimizers, with the variants the paper needs that torch lacks.

* ``Adam``: equation (6) of the paper (optax's ``scale_by_adam``),
  ``u_t = -lr * m_hat / (sqrt(v_hat + eps_root) + eps)``; with ``eps_root = 0`` it is torch's Adam.
* ``RMSProp``: the optax / DQN Zoo form, ``u_t = -lr * g / sqrt(nu - mu^2 + eps)`` with ``eps``
  *inside* the square root and (when ``centered``) the mean gradient ``mu`` subtracted. torch's
  ``RMSprop`` puts eps outside the root, so it is a different optimizer for the same numbers.
  With ``eps_outside_root`` it is torch's centred ``RMSprop``, ``-lr * g / (sqrt(nu - mu^2) + eps)``
  (the MinAtar paper's DQN, ``examples/dqn.py``).
* ``sgd``: torch's SGD.
* Decoupled weight decay (AdamW, Loshchilov & Hutter 2019): ``Adam(weight_decay=wd)`` first
  multiplies every parameter by ``1 - lr * wd``, then takes the Adam step, exactly as
  ``torch.optim.AdamW`` (config: ``optimizer=adamw`` or ``optimizer.weight_decay``). This is not
  the coupled L2 of the ``weight_decay`` intervention (a loss term that Adam rescales).
* Per-element step counts: an intervention that restarts Adam's bias correction for single units
  (``reset_state_entries(..., restart_steps=True)``: continual backprop, ReDo's option) gives the
  tensor a ``state["unit_step"]`` (a count per element, as Dohare et al.'s ``AdamGnT``); such a
  tensor takes its step elementwise, with the bias corrections ``1 - b**unit_step``.

Every optimizer keeps its state per parameter (looked up by the parameter tensor, never by
position), so interventions can reset the state of one parameter (``reset_state``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.adam import adam


class Adam(Optimizer):
    """Adam with ``eps_root`` inside the square root (paper eq. 6, optax ``scale_by_adam``).

    With ``eps_root = 0`` the update is torch's, and the step runs torch's fused Adam kernel (one
    pass over parameters, gradients and moments); with ``eps_root > 0`` it runs as ``_foreach`` ops.
    Either way the step count is kept per parameter: ``state["step"]`` on the host (bias corrections
    of the ``_foreach`` path need no device sync) and ``state["step_t"]``, the same count as a
    0-dim tensor on the parameter's device, for the fused kernel.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, eps_root=0.0, weight_decay=0.0):
        if lr < 0 or eps < 0 or eps_root < 0 or weight_decay < 0:
            raise ValueError("Adam: lr, eps, eps_root and weight_decay must be >= 0")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, eps_root=eps_root, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            fused = not group["eps_root"]
            decay = group["weight_decay"]
            params, grads, ms, vs, counts, steps, per_element = [], [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if "unit_step" in state:  # per-element counts: stepped below, elementwise
                    state["step"] += 1
                    per_element.append(p)
                    continue
                if fused and "step_t" not in state:  # the count before this step (the kernel adds 1)
                    state["step_t"] = torch.full((), float(state["step"]), dtype=torch.float32, device=p.device)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
                counts.append(state["step"])
                if fused:
                    steps.append(state["step_t"])
            if decay and (
                params or per_element
            ):  # decoupled weight decay (AdamW): before the update, as torch.optim.AdamW
                torch._foreach_mul_(params + per_element, 1 - group["lr"] * decay)
            for p in per_element:
                self._step_per_element(p, group)
            if not params:
                continue
            if fused:
                # adds 1 to each step_t, then m, v and the parameter in one kernel per tensor group
                adam(
                    params,
                    grads,
                    ms,
                    vs,
                    [],
                    steps,
                    fused=True,
                    amsgrad=False,
                    beta1=b1,
                    beta2=b2,
                    lr=group["lr"],
                    weight_decay=0.0,
                    eps=group["eps"],
                    maximize=False,
                )
                continue
            for p in params:  # the fused kernel's count goes stale on this path: rebuild it if needed
                self.state[p].pop("step_t", None)
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            # sqrt(v_hat + eps_root) + eps  (bias corrections are host floats: no device sync)
            denom = torch._foreach_div(vs, [1 - b2**t for t in counts])
            torch._foreach_add_(denom, group["eps_root"])
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, ms, denom, [-group["lr"] / (1 - b1**t) for t in counts])
        return loss

    def _step_per_element(self, p: torch.Tensor, group: dict) -> None:
        """One Adam step of ``p`` with a step count per element (``state["unit_step"]``)."""
        b1, b2 = group["betas"]
        state = self.state[p]
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["unit_step"]
        g = p.grad
        t.add_(1)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bias1 = 1 - torch.pow(b1, t)
        bias2 = 1 - torch.pow(b2, t)
        denom = (v / bias2).add_(group["eps_root"]).sqrt_().add_(group["eps"])
        p.addcdiv_(m / bias1, denom, value=-group["lr"])


class RMSProp(Optimizer):
    """RMSProp as in optax / DQN Zoo: eps inside the square root (outside with ``eps_outside_root``,
    torch's form), optionally centred."""

    def __init__(self, params, lr=2.5e-4, decay=0.95, eps=1e-5, centered=True, eps_outside_root=False):
        super().__init__(
            params, dict(lr=lr, decay=decay, eps=eps, centered=centered, eps_outside_root=eps_outside_root)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            d = group["decay"]
            params, grads, nus, mus = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["nu"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["mu"] = torch.zeros_like(p)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                nus.append(state["nu"])
                if group["centered"]:
                    mus.append(state["mu"])
            if not params:
                continue
            torch._foreach_mul_(nus, d)
            torch._foreach_addcmul_(nus, grads, grads, value=1 - d)
            if group["centered"]:
                torch._foreach_lerp_(mus, grads, 1 - d)
                denom = torch._foreach_addcmul(nus, mus, mus, value=-1)
            else:
                denom = [n.clone() for n in nus]
            if group["eps_outside_root"]:  # torch.optim.RMSprop: sqrt(nu - mu^2) + eps
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, group["eps"])
            else:
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def build_optimizer(cfg: Any, params: Iterable[torch.Tensor]) -> Optimizer:
    """The optimizer named by ``cfg.name`` over ``params`` (fresh state)."""
    params = list(params)
    kind = cfg.kind
    if kind == "adam":
        return Adam(
            params,
            lr=cfg.lr,
            betas=(cfg.b1, cfg.b2),
            eps=cfg.eps,
            eps_root=cfg.eps_root,
            weight_decay=float(getattr(cfg, "weight_decay", 0.0) or 0.0),
        )
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if kind == "rmsprop":
        return RMSProp(
            params,
            lr=cfg.lr,
            decay=cfg.decay,
            eps=cfg.eps,
            centered=cfg.centered,
            eps_outside_root=bool(getattr(cfg, "eps_outside_root", False)),
        )
    raise ValueError(f"optimizer.kind: unknown optimizer kind {kind!r}")


def reset_state(optimizer: Optimizer, params: Iterable[torch.Tensor] | None = None) -> None:
    """Forget the optimizer state of ``params`` (all parameters when None), looked up by tensor."""
    if params is None:
        optimizer.state.clear()
        return
    for p in params:
        optimizer.state.pop(p, None)


def reset_state_entries(
    optimizer: Optimizer, param: torch.Tensor, index: torch.Tensor, dim: int, restart_steps: bool = False
) -> None:
    """Zero the optimizer state of ``param`` at ``index`` along ``dim`` (moments, momentum buffers):
    the state of single units, for interventions that recycle units (ReDo, continual backprop).

    Step counts: with ``restart_steps=False`` they are kept (the tensor's count, and any per-element
    ``unit_step``); with ``restart_steps=True`` and ``Adam``, the entries' counts restart at 0 (the
    tensor gets a per-element ``unit_step``, so their bias correction starts again, as a fresh
    Adam's would). Other optimizers have no bias correction: the flag changes nothing there."""
    state = optimizer.state.get(param)
    if not state:
        return
    if restart_steps and isinstance(optimizer, Adam) and "unit_step" not in state:
        state["unit_step"] = torch.full_like(param, float(state["step"]))
        state.pop("step_t", None)  # the fused kernel's per-tensor count no longer applies
    for key, value in state.items():
        if key == "unit_step" and not restart_steps:
            continue
        if torch.is_tensor(value) and value.shape == param.shape:
            value.index_fill_(dim, index.to(value.device), 0)


def remove_params(optimizer: Optimizer, params: Iterable[torch.Tensor]) -> None:
    """Stop optimizing ``params``: drop them from every param group (by identity) and forget their state."""
    drop = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in drop]
    for p in list(optimizer.state):
        if id(p) in drop:
            del optimizer.state[p]
