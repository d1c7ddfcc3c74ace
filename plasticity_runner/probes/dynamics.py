"""Training dynamics: gradient norms, weight change, relative parameter change, greedy-action change.

Unlike the statistics of section 5.2, these need state that outlives one pause; ``DynamicsTracker``
holds it and a checkpoint keeps it (``state_dict``), so a resumed run measures exactly what an
uninterrupted one does:

* ``theta_0``: the parameters at initialisation (step 0), by parameter name;
* ``theta_prev``: the parameters at the previous log point, taken after that step's hooks (the
  state the next window starts from);
* the greedy-action-change reference batch: ``reference_inputs`` replay observations drawn once, at the
  first measurement, by a generator of stream ``diagnostics/churn_reference`` (never a training
  stream), and the greedy actions on it at the previous measurement;
* on the device only, between log points: the sum over the window's optimizer steps of each
  layer's gradient norm (no host read in the hot loop; read and reset at the log point).

Definitions (``<layer>`` is the module owning the parameters, as in ``statistics``; a layer is a
module's own parameters, e.g. weight and bias of a ``Linear``; a spectral-norm layer's trained
``original``; buffers such as BatchNorm's running statistics are not parameters):

* at every log point, phase ``train``:
  - ``grad_norm_window_mean``, ``grad_norm_window_mean/<layer>``: the mean over the optimizer steps
    since the previous log point of ``||g_t||_2``, ``g_t`` the gradient of that step's training
    loss (the TD loss plus intervention penalties, exactly what the optimizer stepped on) w.r.t.
    the parameters that received a gradient (of the layer); a mean of norms, not the norm of the
    mean gradient;
  - ``rel_param_change_window``, ``rel_param_change_window/<layer>``:
    ``||theta_t - theta_prev||_2 / ||theta_t||_2``, the relative change of the parameters (of the
    layer) over the window (not per step; not Lyle et al. 2024's effective learning rate
    ``eta / ||w||^2`` of a scale-invariant layer, which the runner does not compute), with
    ``theta_t`` as the log point measures it (before the step's hooks) and ``theta_prev`` after the
    hooks of the previous log point's step; so hooks at log-point steps (resets on a log point)
    are in no window, hooks between log points are.
* at every pause, phase ``dynamics`` (cadence ``diagnostics.dynamics.every_steps``):
  - ``grad_norm_eval``, ``grad_norm_eval/<layer>``: ``||grad L(theta)||_2`` of the training loss
    (``DQNAgent.loss``: TD loss in train mode plus penalties; dropout drawn from the private stream
    ``diagnostics/dynamics``) on the first ``num_inputs`` transitions of the pause's evaluation
    batch, w.r.t. the parameters that train;
  - ``weight_change_from_init``, ``.../<layer>``: ``||theta_t - theta_0||_2``; and
    ``weight_change_from_init_rel``, ``.../<layer>``: the same divided by ``||theta_0||_2``;
  - ``greedy_action_change_between_pauses``: the fraction of the reference batch whose greedy
    action ``argmax_a Q(x, a)`` differs from the previous measurement's (absent at the first), so
    over the ``diagnostics.dynamics.every_steps`` optimizer steps between two pauses; not Schaul et
    al.'s policy churn, the change caused by a single update, which the runner does not compute.

A parameter created after initialisation (plasticity injection's new head) is not in ``theta_0``;
a parameter absent from ``theta_prev`` (created within the window) has no previous value: both
are left out of the norms above (of the layer and of the total), and a layer with none left gets
no row. A layer whose ``||theta||`` is 0 gets NaN as a ratio.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import II
from torch import nn

from .. import registry
from ..errors import positive
from ..seeding import churn_reference_seed, diagnostic_seed
from .base import Diagnostic, Output, PauseView, check_cadence, copied_networks
from .per_layer import by_layer_name, layer_of, layer_squares

# the names it writes (each also per layer, ``<name>/<layer>``); the report keys on them (``report/names.py``)
GRAD_NORM_EVAL, WEIGHT_CHANGE, WEIGHT_CHANGE_REL = (
    "grad_norm_eval",
    "weight_change_from_init",
    "weight_change_from_init_rel",
)
GREEDY_ACTION_CHANGE = "greedy_action_change_between_pauses"  # no per-layer rows
GRAD_NORM_WINDOW, REL_PARAM_CHANGE_WINDOW = (
    "grad_norm_window_mean",
    "rel_param_change_window",
)  # log points, phase ``train``


def _params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in net.named_parameters()}


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.clone() for name, p in _params(net).items()}


def _layer_norms(squares: dict[str, float]) -> dict[str, float]:
    return {layer: sq**0.5 for layer, sq in squares.items()}


def difference_norms(
    now: dict[str, torch.Tensor], then: dict[str, torch.Tensor]
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per layer (and ``None`` for the total over every layer): ``||now - then||``, ``||now||`` and
    ``||then||`` over the parameters present in both with equal shapes (float64 sums)."""
    both = [(name, p, then[name]) for name, p in now.items() if name in then and then[name].shape == p.shape]
    with torch.no_grad():
        diff = layer_squares((name, p.double() - q.double()) for name, p, q in both)
    cur = layer_squares((name, p) for name, p, _ in both)
    old = layer_squares((name, q) for name, _, q in both)
    return _layer_norms(diff), _layer_norms(cur), _layer_norms(old)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0.0 else math.nan


class GradNormAccumulator:
    """Sums each layer's gradient norm over the optimizer steps of a log window, on the device.

    ``add(net)`` after ``backward``: ``torch._foreach_norm`` of the gradients, squared, summed per
    layer with ``index_add_``, square-rooted and added to a device vector: no host read. The layout
    (each parameter's layer) is cached for the names of the parameters that have a gradient and
    rebuilt when they change (an intervention that adds or freezes parameters); ``read()`` combines
    the layouts of the window, each layer averaged over the steps in which it had a gradient.
    """

    def __init__(self) -> None:
        self._layout: tuple[tuple[str, ...], tuple[str, ...], torch.Tensor] | None = None  # names, layers, index
        self._sums: dict[tuple[str, ...], list] = {}  # layers -> [device sums [L + 1], steps]

    def _layout_of(self, names: tuple[str, ...], device: torch.device) -> tuple[tuple[str, ...], torch.Tensor]:
        """The layers of the parameters ``names`` (first-seen order) and each one's position among them."""
        if self._layout is None or self._layout[0] != names:
            layers: list[str] = []
            index = []
            for name in names:
                layer = layer_of(name)
                if layer not in layers:
                    layers.append(layer)
                index.append(layers.index(layer))
            # filled on the device: no host-to-device copy (a sync on cuda)
            positions = torch.cat([torch.full((1,), i, dtype=torch.long, device=device) for i in index])
            self._layout = (names, tuple(layers), positions)
        return self._layout[1], self._layout[2]

    @torch.no_grad()
    def add(self, net: nn.Module) -> None:
        # a frozen parameter keeps a stale .grad
        named = [(name, p) for name, p in net.named_parameters() if p.grad is not None and p.requires_grad]
        if not named:
            return
        layers, index = self._layout_of(tuple(name for name, _ in named), named[0][1].device)
        norms = torch.stack(torch._foreach_norm([p.grad for _, p in named])).double()
        per_layer = torch.zeros(len(layers), dtype=torch.float64, device=norms.device)
        per_layer.index_add_(0, index, norms.square())
        step = torch.cat([per_layer.sqrt(), per_layer.sum().sqrt().reshape(1)])
        entry = self._sums.get(layers)
        if entry is None:
            self._sums[layers] = [step, 1]
        else:
            entry[0] += step
            entry[1] += 1

    def read(self) -> dict[str, float]:
        """``grad_norm_window_mean`` (total) and ``grad_norm_window_mean/<layer>`` over the steps
        added since the last read (one host read per layout); then resets. Empty if no step."""
        sums: dict[Any, float] = {}
        steps: dict[Any, int] = {}
        for layers, (vector, n) in self._sums.items():
            values = vector.tolist()
            for key, v in zip((*layers, None), values):
                sums[key] = sums.get(key, 0.0) + v
                steps[key] = steps.get(key, 0) + n
        self._sums = {}
        return by_layer_name(GRAD_NORM_WINDOW, {k: sums[k] / steps[k] for k in sums})


class DynamicsTracker:
    """The state behind the dynamics metrics (module docstring); ``state_dict`` goes in checkpoints."""

    def __init__(self, net: nn.Module, log_point_metrics: bool = True):
        self.theta_0 = _snapshot(net)
        # snapshots are replaced, never written in place: the first window starts from theta_0 itself
        self.theta_prev: dict[str, torch.Tensor] | None = self.theta_0 if log_point_metrics else None
        self.reference: torch.Tensor | None = None  # the greedy-action reference observations
        self.previous_actions: torch.Tensor | None = None  # greedy actions on them at the last measurement
        self.log_point_metrics = bool(log_point_metrics)
        self.grad_norms = GradNormAccumulator()

    # ------------------------------------------------------------------ in the loop and at log points

    def after_backward(self, net: nn.Module) -> None:
        """In the training step, after ``backward`` and before the next ``zero_grad``: device ops only."""
        if self.log_point_metrics:
            self.grad_norms.add(net)

    def log_point(self, net: nn.Module) -> dict[str, float]:
        """The log-point metrics (phase ``train``) of the network as the log point measures it."""
        if not self.log_point_metrics:
            return {}
        out = self.grad_norms.read()
        if self.theta_prev is not None:
            diff, cur, _ = difference_norms(_params(net), self.theta_prev)
            out.update(by_layer_name(REL_PARAM_CHANGE_WINDOW, {k: _ratio(diff[k], cur[k]) for k in diff}))
        return out

    def end_window(self, net: nn.Module) -> None:
        """At a log point, after the step's hooks: the parameters the next window starts from."""
        if self.log_point_metrics:
            self.theta_prev = _snapshot(net)

    # ------------------------------------------------------------------------------------- at a pause

    def pause(self, agent: Any, replay: Any, batch: Any, cfg: Any, seed: int, step: int) -> dict[str, float]:
        """The pause metrics (phase ``dynamics``) on copies of the networks; ``batch``: the transitions
        of ``grad_norm_eval`` (the ``Dynamics`` diagnostic passes the first ``cfg.num_inputs`` of the
        pause's evaluation batch); ``cfg``: ``DynamicsConfig``."""
        online = agent.online
        out = {}
        diff, _, init = difference_norms(_params(online), self.theta_0)
        out.update(by_layer_name(WEIGHT_CHANGE, diff))
        out.update(by_layer_name(WEIGHT_CHANGE_REL, {k: _ratio(diff[k], init[k]) for k in diff}))
        out.update(self.greedy_action_change(online, replay, int(cfg.reference_inputs), seed))
        dropout_seed = diagnostic_seed(seed, "dynamics", step)
        out.update(by_layer_name(GRAD_NORM_EVAL, eval_gradient_norms(agent, batch, dropout_seed)))
        return out

    @torch.no_grad()
    def greedy_action_change(self, net: nn.Module, replay: Any, reference_inputs: int, seed: int) -> dict[str, float]:
        """``greedy_action_change_between_pauses`` against the previous measurement; draws the reference batch the first time."""
        if self.reference is None:
            device = next(net.parameters()).device
            generator = torch.Generator(device).manual_seed(churn_reference_seed(seed))
            self.reference = replay.sample_obs(reference_inputs, generator)
        actions = greedy_actions(net, self.reference)
        out = {}
        if self.previous_actions is not None:
            out[GREEDY_ACTION_CHANGE] = float((actions != self.previous_actions).double().mean())
        self.previous_actions = actions
        return out

    # ------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta_0": self.theta_0,
            "theta_prev": self.theta_prev,
            "reference": self.reference,
            "previous_actions": self.previous_actions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``, its tensors moved to the device of the network as built."""
        device = next(iter(self.theta_0.values())).device if self.theta_0 else None
        move = (lambda t: None if t is None else t.to(device)) if device is not None else (lambda t: t)
        self.theta_0 = {k: move(v) for k, v in state["theta_0"].items()}
        prev = state["theta_prev"]
        self.theta_prev = None if prev is None else {k: move(v) for k, v in prev.items()}
        self.reference = move(state["reference"])
        self.previous_actions = move(state["previous_actions"])


def greedy_actions(net: nn.Module, obs: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``argmax_a Q(x, a)`` of an eval-mode copy of ``net`` (ties: the first action, as in acting)."""
    model = copy.deepcopy(net).eval()
    with torch.no_grad():
        return torch.cat([model(obs[i : i + chunk_size]).argmax(dim=1) for i in range(0, obs.shape[0], chunk_size)])


def eval_gradient_norms(agent: Any, batch: Any, seed: int) -> dict[Any, float]:
    """``{None: ||g||, layer: ||g_layer||}`` for ``g`` the gradient of the agent's training loss
    (``DQNAgent.loss``) on ``batch`` w.r.t. the parameters that train, on copies of the networks.

    The loss runs in train mode as in training (dropout, BatchNorm batch statistics on the copy);
    the global RNG is forked and seeded with ``seed`` around it, so training's streams are untouched."""
    copies = copied_networks(agent.networks)
    params = {name: p for name, p in copies.online.named_parameters() if p.requires_grad}
    device = next(copies.online.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        loss = agent.loss(batch, copies)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return _layer_norms(layer_squares((name, g) for name, g in zip(params, grads) if g is not None))


# ------------------------------------------------------------------------------ the diagnostic


@dataclass
class DynamicsConfig:
    """Training dynamics (config key ``diagnostics.dynamics``): gradient norms, weight change since
    init, relative parameter change per log window, greedy-action change between pauses."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 512  # transitions of the evaluation batch in grad_norm_eval (the training batch: 512)
    reference_inputs: int = 512  # replay observations of the fixed greedy-action-change reference batch
    log_point_metrics: bool = True  # grad_norm_window_mean (accumulated on the device) and rel_param_change_window


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    positive(cfg, f"{key}.num_inputs")
    positive(cfg, f"{key}.reference_inputs")


PAUSE_SCALARS = tuple(n for name in (GRAD_NORM_EVAL, WEIGHT_CHANGE, WEIGHT_CHANGE_REL) for n in (name, f"{name}/*"))
PAUSE_SCALARS += (GREEDY_ACTION_CHANGE,)
# written at every log point, phase ``train`` (``DynamicsTracker.log_point``; the trainer writes them)
LOG_POINT_PHASE = "train"
LOG_POINT_SCALARS = (GRAD_NORM_WINDOW, f"{GRAD_NORM_WINDOW}/*", REL_PARAM_CHANGE_WINDOW, f"{REL_PARAM_CHANGE_WINDOW}/*")


class Dynamics(Diagnostic):
    """The pause metrics of the run's ``DynamicsTracker`` (``view.dynamics``, the state it keeps
    across pauses): phase ``dynamics``."""

    name, phase, scalars = "dynamics", "dynamics", PAUSE_SCALARS

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).num_inputs)

    def run(self, view: PauseView) -> Output:
        if view.dynamics is None:
            raise RuntimeError(
                "diagnostics.dynamics is due but the run has no DynamicsTracker (trainer.build_train_state makes one)"
            )
        return Output(
            view.dynamics.pause(view.agent, view.replay, view.batch, self.config(view.cfg), view.seed, view.step)
        )


registry.register("diagnostic", "dynamics", DynamicsConfig, build=Dynamics, check=check, order=40)
