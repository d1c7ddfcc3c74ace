"""The supervised learner of the continual protocols, with the surface the pause and the
interventions read (``DQNAgent``'s: ``online``, ``target``, ``networks``, ``loss``,
``sample_losses``).

The loss of a step (``loss``, what the optimizer steps on and what ``grad_norm_eval`` and the
gradient covariance differentiate):

* classification: the cross-entropy of the network's outputs, read as class logits, to the labels;
* regression: the head's own loss of its single output to the target (``QNetwork.td_loss`` with
  action 0: the squared error for the scalar head, the two-hot cross-entropy for ``two_hot``);

plus the interventions' penalties (``l2_init``, ``weight_decay``). The network trains in train mode
for the step's forward and rests in eval mode, as the DQN agent's.

Interventions: every hook runs as in the DQN runs (``network_options``, ``on_build``,
``loss_penalty``, ``before_step`` between the backward and the optimizer step, ``after_step`` after
every step; the current task's inputs are the learner's ``replay``, C-CHAIN's reference
observations); the target-update hooks (``shrink_perturb``,
``reset_last_layer``, ``reset_optimizer``) run at every task switch, right after the ``target``
network (the online network as it stood at the last switch; no loss reads it) is copied from the
online one. The batch handed to the hooks and the diagnostics is an ``envs.base.Batch`` with
``o_tm1 = o_t = x``, ``a_tm1`` the label (classification) or 0 (regression), ``r_t`` the regression
target (0 for classification) and ``discount_t = 0``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..envs.base import Batch
from ..interventions.base import Intervention, Networks
from ..probes.gram import SampleLosses


def make_batch(x: torch.Tensor, y: torch.Tensor, kind: str) -> Batch:
    """A supervised minibatch as the ``Batch`` the hooks and the diagnostics read (module docstring)."""
    zeros = torch.zeros(x.shape[0], device=x.device)
    if kind == "classification":
        return Batch(o_tm1=x, a_tm1=y, r_t=zeros, discount_t=zeros, o_t=x)
    return Batch(
        o_tm1=x, a_tm1=torch.zeros(x.shape[0], dtype=torch.long, device=x.device), r_t=y, discount_t=zeros, o_t=x
    )


def per_sample_loss(net: nn.Module, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss [B], output [B, A])`` of ``net`` in the mode it is in: the per-sample cross-entropy to
    the labels, or the head's loss of its output 0 to ``r_t``; ``output`` is the prediction (logits,
    or the regression value in column 0)."""
    if kind == "classification":
        logits = net(batch.o_tm1)
        return F.cross_entropy(logits, batch.a_tm1, reduction="none"), logits
    raw = net.head.raw(net.body(batch.o_tm1))
    return net.head.loss_from_raw(raw, batch.a_tm1, batch.r_t), net.head.readout(raw)


class _SampleLoss(nn.Module):
    """``forward(o_tm1, a_tm1, r_t)`` -> the per-sample supervised loss of the wrapped network."""

    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, o_tm1: torch.Tensor, a_tm1: torch.Tensor, r_t: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(r_t)
        return per_sample_loss(self.net, Batch(o_tm1, a_tm1, r_t, zeros, o_tm1), self.kind)[0]


class SupervisedAgent:
    """The network, its optimizer and the interventions of a continual protocol (module docstring)."""

    def __init__(
        self,
        kind: str,
        online: nn.Module,
        optimizer: torch.optim.Optimizer,
        interventions: list[Intervention],
        build_fresh: Callable[[], nn.Module],
        seed: int,
    ):
        self.kind = kind
        target = copy.deepcopy(online)
        self.networks = Networks(online, target, optimizer, build_fresh, int(seed))
        self.interventions = interventions
        online.eval()
        target.eval()
        target.requires_grad_(False)
        for i in interventions:
            i.on_build(self.networks)

    online = property(lambda self: self.networks.online, doc="The network being trained.")
    target = property(lambda self: self.networks.target, doc="The network as it stood at the last task switch.")
    optimizer = property(lambda self: self.networks.optimizer, doc="The network's optimizer.")

    def _penalised(self, loss: torch.Tensor, networks: Networks) -> torch.Tensor:
        for i in self.interventions:
            penalty = i.loss_penalty(networks)
            if penalty is not None:
                loss = loss + penalty
        return loss

    def loss(self, batch: Batch, networks: Networks | None = None) -> torch.Tensor:
        """The training loss of ``batch`` (mean supervised loss plus penalties) for the networks of
        ``networks`` (default: the agent's own; a diagnostic passes copies)."""
        networks = networks or self.networks
        networks.online.train()
        try:
            per_sample, _ = per_sample_loss(networks.online, batch, self.kind)
        finally:
            networks.online.eval()
        return self._penalised(per_sample.mean(), networks)

    def learn(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch``; returns the step's online measure before the update (device
        scalars, no host sync): ``(mean loss without penalties, number correct)`` for classification,
        ``(mean loss, sum of squared errors of the prediction)`` for regression."""
        self.networks.last_batch = batch
        online = self.online
        online.train()
        try:
            per_sample, output = per_sample_loss(online, batch, self.kind)
        finally:
            online.eval()
        loss = self._penalised(per_sample.mean(), self.networks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

        def recompute() -> torch.Tensor:  # the step's loss and gradients again, at the current parameters
            self.optimizer.zero_grad(set_to_none=True)
            again = self.loss(batch)
            again.backward()
            return again.detach()

        for i in self.interventions:  # SAM replaces the gradients here
            i.before_step(self.networks, recompute)
        self.optimizer.step()
        with torch.no_grad():
            if self.kind == "classification":
                measure = (output.argmax(dim=1) == batch.a_tm1).sum()
            else:
                measure = (output[:, 0] - batch.r_t).square().sum()
        return per_sample.detach().mean(), measure

    def after_step(self, step: int) -> None:
        """The interventions' ``after_step`` hooks of step ``step``."""
        for i in self.interventions:
            i.after_step(self.networks, step)

    @torch.no_grad()
    def switch_task(self, step: int) -> None:
        """At a task switch (after step ``step``): copy the online network into ``target``, then the
        interventions' target-update hooks (where the DQN runs copy their target network)."""
        torch._foreach_copy_(list(self.target.parameters()), list(self.online.parameters()))
        for b_t, b in zip(self.target.buffers(), self.online.buffers()):
            b_t.copy_(b)
        for i in self.interventions:
            i.on_target_update(self.networks, step)

    def sample_losses(self, batch: Batch) -> SampleLosses:
        """The supervised loss of each sample of ``batch`` on an eval-mode copy of the network (the
        gradient covariance's ``loss: td``, the training loss of each sample; penalties left out)."""
        model = _SampleLoss(copy.deepcopy(self.online).eval(), self.kind)
        return SampleLosses(model, (batch.o_tm1, batch.a_tm1, batch.r_t))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """The network's outputs on ``x`` in eval mode, in chunks."""
        return torch.cat([self.online(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])
