"""DQN and Double DQN: the regression loss of equation (1) against a target network.

The parts (online network, target network, optimizer, interventions) are built by the trainer and
handed in; the agent only acts, learns from a ``Batch`` and copies the target network.

Network modes: both networks rest in eval mode; ``learn`` puts the online network in train mode
for the forward of the TD loss only. So acting, TD targets (target network, and the online argmax
of Double DQN) and anything else that calls the networks (the trainer's logging, the probes) see
the deterministic network: no dropout (ViT), BatchNorm with its running statistics (ResNet-18),
spectral norm without a power-iteration update. For MLP/CNN the two modes compute the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..envs.base import Batch
from ..interventions.base import Intervention


def epsilon_at(step: int, cfg: Any) -> float:
    """Linear decay from ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_decay_steps``."""
    if step >= cfg.epsilon_decay_steps:
        return float(cfg.epsilon_end)
    frac = min(step / cfg.epsilon_decay_steps, 1.0)
    return float(cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start))


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
        self.online = online
        self.target = target
        self.optimizer = optimizer
        self.interventions = interventions
        self.num_actions = num_actions
        self.build_fresh = build_fresh  # a fresh initialisation of the online network (interventions' resets)
        self.seed = int(seed)  # the run seed; interventions derive the seeds of their fresh inits from it
        self.last_batch: Batch | None = None  # the batch of the last ``learn`` (ReDo scores units on it)
        self.gamma = float(cfg.gamma)
        self.double_dqn = bool(cfg.double_dqn)
        self.online.eval()
        self.target.eval()
        self.target.requires_grad_(False)
        for i in interventions:
            i.on_build(self)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-greedy actions [N] on the device (no host sync)."""
        greedy = self.online(obs).argmax(dim=1)
        n = obs.shape[0]
        explore = torch.rand(n, generator=generator, device=obs.device) < epsilon
        random_a = torch.randint(self.num_actions, (n,), generator=generator, device=obs.device)
        return torch.where(explore, random_a, greedy)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """``r_t + gamma * discount_t * Q_target(o_t, a')``; a' from the online net for Double DQN."""
        q_target_t = self.target(batch.o_t)
        if self.double_dqn:
            a_t = self.online(batch.o_t).argmax(dim=1, keepdim=True)
            v_t = q_target_t.gather(1, a_t).squeeze(1)
        else:
            v_t = q_target_t.max(dim=1).values
        return batch.r_t + self.gamma * batch.discount_t * v_t

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean TD loss of the batch (eq. 1 for the scalar head) plus any intervention penalty."""
        target = self.td_target(batch)  # networks in eval mode
        self.online.train()
        try:
            loss = self.online.td_loss(batch.o_tm1, batch.a_tm1, target).mean()
        finally:
            self.online.eval()
        for i in self.interventions:
            penalty = i.loss_penalty(self)
            if penalty is not None:
                loss = loss + penalty
        return loss

    def learn(self, batch: Batch, step: int, run_hooks: bool = True) -> torch.Tensor:
        """One optimizer step, then (``run_hooks``) the interventions' ``after_step`` hooks; returns
        the detached loss (a device scalar: no sync). The trainer defers the hooks
        (``run_hooks=False``, then ``after_step``) so that a pause can measure the network as trained."""
        self.last_batch = batch
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if run_hooks:
            self.after_step(step)
        return loss.detach()

    def after_step(self, step: int) -> None:
        """The interventions' ``after_step`` hooks of training step ``step``."""
        for i in self.interventions:
            i.after_step(self, step)

    @torch.no_grad()
    def update_target(self, step: int) -> None:
        """Copy the online parameters and buffers into the target network, then run the hooks."""
        torch._foreach_copy_(list(self.target.parameters()), list(self.online.parameters()))
        for b_t, b in zip(self.target.buffers(), self.online.buffers()):
            b_t.copy_(b)
        for i in self.interventions:
            i.on_target_update(self, step)
