"""DQN and Double DQN: the regression loss of equation (1) against a target network.

The parts (online network, target network, optimizer, interventions) are built by the trainer and
handed in; the agent only acts, learns from a ``Batch`` and copies the target network. It holds
the networks and the optimizer in an ``interventions.base.Networks``, the one object the
interventions' hooks receive (never the agent itself).

``td_target`` is a plain function of the two networks: the probes compute TD losses on copies of
the networks with it, without copying the agent. ``loss_terms`` is the training loss and its parts
(the definition): the TD term, each intervention's penalty and their sum, the total minimised, in
the order of ``loss_names``; ``loss`` is that total. ``learn`` steps on ``step_loss``, which is
``loss_terms`` unless the fast path wrapped it (``wrap_loss``: ``torch.compile`` with an eager
fallback, ``fastpath.py``), and returns the detached parts, which the trainer logs under
``loss_names`` (``td_loss``, ``penalty/<intervention>``, ``loss_total``).

Network modes: both networks rest in eval mode; ``learn`` puts the online network in train mode
for the forward of the TD loss only. So acting, TD targets (target network, and the online argmax
of Double DQN) and anything else that calls the networks (the trainer's logging, the probes) see
the deterministic network: no dropout (ViT), BatchNorm with its running statistics (ResNet-18),
spectral norm without a power-iteration update. For MLP/CNN the two modes compute the same thing.

TD loss: by default the head's (eq. 1 for the scalar head: ``(Q(s, a) - target)^2``, the
two-hot head's cross-entropy). With ``agent.td_loss_scale != 1`` or ``agent.td_error_clip`` set,
the agent computes DQN Zoo's loss itself (``clipped_td_loss``: ``td_loss_scale * td^2``, e.g.
``0.5 td^2``); that needs a regression head (not the two-hot head). The logged ``td_loss`` is this
TD term alone, on that scale, without any penalty.

Time: the target period and the epsilon decay count training (optimizer) steps
(``target_update_steps``, ``epsilon_decay_steps``) or, as DQN Zoo does, emulator frames
(``target_update_frames``, ``epsilon_decay_frames``); ``FrameClock`` converts between the two.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..interventions.base import Intervention, Networks
from ..probes.gram import SampleLosses

if TYPE_CHECKING:  # annotations only: importing envs here loads every env, one of which imports this module
    from ..envs.base import Batch

# The names of the training loss's parts (``DQNAgent.loss_names``), which the trainer logs at every
# log point (phase ``train``): the TD term alone, each intervention's penalty, the total minimised.
TD_LOSS, LOSS_TOTAL, PENALTY = "td_loss", "loss_total", "penalty"


def penalty_name(intervention: str) -> str:
    """The logged name of an intervention's loss penalty, e.g. ``penalty/weight_decay``."""
    return f"{PENALTY}/{intervention}"


def has_penalty(intervention: Intervention) -> bool:
    """Whether ``intervention`` adds a term to the loss (overrides ``loss_penalty``)."""
    return type(intervention).loss_penalty is not Intervention.loss_penalty


@dataclass(frozen=True)
class FrameClock:
    """Emulator frames done by the end of a training step, counted over all copies of the game.

    The replay prefill takes ``prefill_frames``; every training step then adds ``frames_per_step``
    (``update_every_env_steps x num_envs x frame_skip``): the ``frames`` the train metrics log.
    """

    prefill_frames: int
    frames_per_step: int

    def frames(self, step: int) -> int:
        return self.prefill_frames + int(step) * self.frames_per_step


def frame_clock(cfg: Any) -> FrameClock | None:
    """The ``FrameClock`` of a composed config; None for an env without frames (no ``env.frame_skip``)."""
    frame_skip = getattr(cfg.env, "frame_skip", None)
    if not frame_skip:
        return None
    num_envs = int(cfg.env.num_envs)
    prefill_env_steps = -(-int(cfg.agent.learning_starts) // num_envs)  # ceil: vector steps of the prefill
    return FrameClock(
        prefill_frames=prefill_env_steps * num_envs * int(frame_skip),
        frames_per_step=int(cfg.agent.update_every_env_steps) * num_envs * int(frame_skip),
    )


def _need_clock(clock: FrameClock | None, key: str) -> FrameClock:
    if clock is None:
        raise ValueError(
            f"agent.{key} counts emulator frames, which this environment has none of; "
            f"use agent.{key.replace('_frames', '_steps')}"
        )
    return clock


def epsilon_at(step: int, cfg: Any, clock: FrameClock | None = None) -> float:
    """Exploration rate after ``step`` training steps: linear from ``epsilon_start`` to ``epsilon_end``.

    The decay starts when learning starts (training step 0, after the prefill of
    ``learning_starts`` transitions) and lasts ``epsilon_decay_steps`` training steps or, when
    set instead, ``epsilon_decay_frames`` emulator frames: DQN Zoo's ``LinearSchedule`` with
    ``begin_t`` = the frame at which the replay reaches its minimum size.
    """
    decay_frames = getattr(cfg, "epsilon_decay_frames", None)
    if decay_frames is not None:
        elapsed, decay = step * _need_clock(clock, "epsilon_decay_frames").frames_per_step, int(decay_frames)
        if elapsed >= decay:
            return float(cfg.epsilon_end)
        frac = elapsed / decay
        return float(cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start))
    if step >= cfg.epsilon_decay_steps:
        return float(cfg.epsilon_end)
    frac = min(step / cfg.epsilon_decay_steps, 1.0)
    return float(cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start))


def target_update_due(step: int, cfg: Any, clock: FrameClock | None = None) -> bool:
    """Whether the target network is copied at the end of training step ``step`` (>= 1).

    Every ``target_update_steps`` training steps or, when set instead, whenever the frame count
    passes a multiple of ``target_update_frames`` during the step: DQN Zoo's
    ``frame_t % target_network_update_period == 0``, its frame counter including the prefill.
    """
    period_frames = getattr(cfg, "target_update_frames", None)
    if period_frames is None:
        return step % int(cfg.target_update_steps) == 0
    clock = _need_clock(clock, "target_update_frames")
    period = int(period_frames)
    return clock.frames(step) // period > clock.frames(step - 1) // period


class _ClipGradient(torch.autograd.Function):
    """Identity forward; the backward clips the incoming gradient to ``[-bound, bound]`` (``rlax.clip_gradient``)."""

    generate_vmap_rule = True  # elementwise: vmap applies it per member (functional.py's populations)

    @staticmethod
    def forward(x: torch.Tensor, bound: float) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:  # the form torch.func transforms need
        ctx.bound = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(-ctx.bound, ctx.bound), None


def clipped_td_loss(q_sa: torch.Tensor, target: torch.Tensor, scale: float, clip: float | None) -> torch.Tensor:
    """Mean over the batch of ``scale * td^2``, ``td = target - Q(s, a)``, the gradient reaching
    each ``td`` clipped to ``[-clip, clip]`` (None: no clip).

    DQN Zoo's Double DQN is ``scale = 0.5`` (``rlax.l2_loss``) and ``clip = 1/32``
    (``grad_error_bound``): the clip acts on the gradient of the *batch mean*, ``td_i / B``, so
    with B = 32 each transition's gradient is ``clip(td_i, -1, 1) / 32``, a Huber loss with
    delta 1; another batch size moves that threshold to ``B / 32``, exactly as in DQN Zoo.
    """
    td = target - q_sa
    if clip is not None:
        td = _ClipGradient.apply(td, float(clip))
    return (scale * td.square()).mean()


@torch.no_grad()
def td_target(online: nn.Module, target: nn.Module, batch: Batch, gamma: float, double_dqn: bool) -> torch.Tensor:
    """``r_t + gamma * discount_t * Q_target(o_t, a')``, ``a' = argmax_a Q_target(o_t, a)`` (DQN) or
    ``argmax_a Q_online(o_t, a)`` (Double DQN); the networks are called in the mode they are in."""
    q_target_t = target(batch.o_t)
    if double_dqn:
        a_t = online(batch.o_t).argmax(dim=1, keepdim=True)
        v_t = q_target_t.gather(1, a_t).squeeze(1)
    else:
        v_t = q_target_t.max(dim=1).values
    return batch.r_t + gamma * batch.discount_t * v_t


class DQNAgent:
    def __init__(
        self,
        cfg: Any,
        online: nn.Module,
        target: nn.Module,
        optimizer: torch.optim.Optimizer,
        interventions: list[Intervention],
        num_actions: int,
        build_fresh: Callable[[], nn.Module] | None = None,
        seed: int = 0,
    ):
        self.cfg = cfg
        # what the interventions' hooks see: the networks, the optimizer, build_fresh (a fresh
        # initialisation of the online network, for resets), the run seed (the seeds of those fresh
        # initialisations derive from it) and the batch of the last ``learn`` (ReDo scores units on it)
        self.networks = Networks(online, target, optimizer, build_fresh, int(seed))
        self.interventions = interventions
        self.num_actions = num_actions
        self.step_loss: Callable[[Batch], torch.Tensor] = self.loss_terms  # what ``learn`` steps on (``wrap_loss``)
        self.penalised = [i for i in interventions if has_penalty(i)]
        self.loss_names = (TD_LOSS, *(penalty_name(i.name) for i in self.penalised), LOSS_TOTAL)
        self.gamma = float(cfg.gamma)
        self.double_dqn = bool(cfg.double_dqn)
        clip = getattr(cfg, "td_error_clip", None)
        self.td_error_clip = None if clip is None else float(clip)
        self.td_loss_scale = float(getattr(cfg, "td_loss_scale", 1.0))
        # DQN Zoo's loss (0.5 td^2, clipped gradient) is computed here; eq. (1) is the head's
        self.agent_td_loss = self.td_error_clip is not None or self.td_loss_scale != 1.0
        if self.agent_td_loss:
            _check_regression_head(online)
        self.online.eval()
        self.target.eval()
        self.target.requires_grad_(False)
        for i in interventions:
            i.on_build(self.networks)

    # the Networks' parts, read-only here: an intervention changes them through agent.networks
    online = property(lambda self: self.networks.online, doc="The online Q-network.")
    target = property(lambda self: self.networks.target, doc="The target Q-network.")
    optimizer = property(lambda self: self.networks.optimizer, doc="The online network's optimizer.")
    build_fresh = property(lambda self: self.networks.build_fresh, doc="A fresh initialisation of the online network.")
    seed = property(lambda self: self.networks.seed, doc="The run seed.")
    last_batch = property(lambda self: self.networks.last_batch, doc="The batch of the last ``learn``.")

    def wrap_loss(self, wrap: Callable[[Callable[[Batch], torch.Tensor]], Callable[[Batch], torch.Tensor]]) -> None:
        """``learn`` steps on ``wrap(self.loss_terms)`` from now on (the fast path's compiled loss,
        which must compute what ``loss_terms`` does); ``loss_terms`` itself is untouched."""
        self.step_loss = wrap(self.loss_terms)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-greedy actions [N] on the device (no host sync)."""
        greedy = self.online(obs).argmax(dim=1)
        n = obs.shape[0]
        explore = torch.rand(n, generator=generator, device=obs.device) < epsilon
        random_a = torch.randint(self.num_actions, (n,), generator=generator, device=obs.device)
        return torch.where(explore, random_a, greedy)

    def td_target(self, batch: Batch) -> torch.Tensor:
        """``td_target`` of the agent's networks (both in eval mode)."""
        return td_target(self.online, self.target, batch, self.gamma, self.double_dqn)

    def loss_terms(self, batch: Batch, networks: Networks | None = None) -> torch.Tensor:
        """The training loss's parts ``[len(loss_names)]``, for the networks of ``networks`` (default:
        the agent's own; a diagnostic passes one holding copies, ``probes.base.copied_networks``):
        the batch-mean TD term (eq. 1 for the scalar head, the two-hot head's cross-entropy, or
        ``clipped_td_loss``), each penalising intervention's ``loss_penalty`` (registered order),
        and last their sum, the total the optimizer minimises. One vector, so that the trainer
        accumulates all of them in one device op per step."""
        networks = networks or self.networks
        online = networks.online
        target = td_target(online, networks.target, batch, self.gamma, self.double_dqn)  # networks in eval mode
        online.train()
        try:
            if self.agent_td_loss:
                q_sa = online(batch.o_tm1).gather(1, batch.a_tm1[:, None]).squeeze(1)
                td = clipped_td_loss(q_sa, target, self.td_loss_scale, self.td_error_clip)
            else:
                td = online.td_loss(batch.o_tm1, batch.a_tm1, target).mean()
        finally:
            online.eval()
        parts, total = [td], td
        for i in self.penalised:
            penalty = i.loss_penalty(networks)
            penalty = td.new_zeros(()) if penalty is None else penalty
            parts.append(penalty)
            total = total + penalty
        return torch.stack([*parts, total])

    def loss(self, batch: Batch, networks: Networks | None = None) -> torch.Tensor:
        """The total training loss (the last of ``loss_terms``): TD term plus the penalties."""
        return self.loss_terms(batch, networks)[-1]

    def learn(self, batch: Batch, step: int, run_hooks: bool = True) -> torch.Tensor:
        """One optimizer step on the total loss (the interventions' ``before_step`` hooks between
        the backward and the step), then (``run_hooks``) the interventions' ``after_step`` hooks;
        returns the detached ``loss_terms`` at the step's parameters (a device vector named by
        ``loss_names``: no sync). The trainer defers the hooks (``run_hooks=False``, then
        ``after_step``) so that a pause can measure the network as trained."""
        self.networks.last_batch = batch
        terms = self.step_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms[-1].backward()

        def recompute() -> torch.Tensor:  # the step's total loss and gradients again, at the current parameters
            self.optimizer.zero_grad(set_to_none=True)
            again = self.step_loss(batch)[-1]
            again.backward()
            return again.detach()

        for i in self.interventions:  # SAM replaces the gradients here
            i.before_step(self.networks, recompute)
        self.optimizer.step()
        if run_hooks:
            self.after_step(step)
        return terms.detach()

    def after_step(self, step: int) -> None:
        """The interventions' ``after_step`` hooks of training step ``step``."""
        for i in self.interventions:
            i.after_step(self.networks, step)

    def sample_losses(self, batch: Batch) -> SampleLosses:
        """The TD loss of each transition of ``batch`` against the fixed target of the agent's networks
        (``td_sample_losses``: the gradient covariance's ``loss: td``)."""
        return td_sample_losses(self.online, self.target, batch, gamma=self.gamma, double_dqn=self.double_dqn)

    @torch.no_grad()
    def update_target(self, step: int) -> None:
        """Copy the online parameters and buffers into the target network, then run the hooks."""
        torch._foreach_copy_(list(self.target.parameters()), list(self.online.parameters()))
        for b_t, b in zip(self.target.buffers(), self.online.buffers()):
            b_t.copy_(b)
        for i in self.interventions:
            i.on_target_update(self.networks, step)


class _TDLoss(nn.Module):
    """``forward(o_tm1, a_tm1, target)`` -> per-transition TD loss [B] of the wrapped network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, o_tm1: torch.Tensor, a_tm1: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net.td_loss(o_tm1, a_tm1, target)


def td_sample_losses(
    online: nn.Module, target: nn.Module, batch: Any, *, gamma: float, double_dqn: bool
) -> SampleLosses:
    """The TD loss of each transition of ``batch`` w.r.t. the parameters of ``online`` (eq. 1), for
    per-sample gradients (``probes.gram``; the gradient covariance's ``loss: td``).

    The TD target is computed once, from eval-mode copies of the online and target networks
    (``td_target`` with the agent's ``gamma`` and ``double_dqn``), and held fixed; the losses are
    those of the online copy (the networks passed in are never touched).
    """
    online, target = copy.deepcopy(online).eval(), copy.deepcopy(target).eval()
    y = td_target(online, target, batch, float(gamma), bool(double_dqn))
    return SampleLosses(_TDLoss(online), (batch.o_tm1, batch.a_tm1, y))


def _check_regression_head(online: nn.Module) -> None:
    """``agent.td_loss_scale`` / ``agent.td_error_clip`` regress Q(s, a) itself: not for the two-hot head."""
    from ..nets.heads import InjectedHead, TwoHotHead

    head = getattr(online, "head", None)
    if isinstance(head, InjectedHead):
        head = head.old
    if isinstance(head, TwoHotHead):
        raise ValueError(
            "agent.td_error_clip / agent.td_loss_scale: the two-hot head's loss is a cross-entropy, "
            "not a squared TD error; leave them at null / 1.0 with intervention two_hot"
        )
