"""DQN and Double DQN: the regression loss of equation (1) against a target network.

The parts (online network, target network, optimizer, interventions) are built by the trainer and
handed in; the agent only acts, learns from a ``Batch`` and copies the target network.
"""

from __future__ import annotations

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
    ):
        self.cfg = cfg
        self.online = online
        self.target = target
        self.optimizer = optimizer
        self.interventions = interventions
        self.num_actions = num_actions
        self.gamma = float(cfg.gamma)
        self.double_dqn = bool(cfg.double_dqn)
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
        loss = self.online.td_loss(batch.o_tm1, batch.a_tm1, self.td_target(batch)).mean()
        for i in self.interventions:
            penalty = i.loss_penalty(self)
            if penalty is not None:
                loss = loss + penalty
        return loss

    def learn(self, batch: Batch, step: int) -> torch.Tensor:
        """One optimizer step; returns the detached loss (a device scalar: no sync)."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        for i in self.interventions:
            i.after_step(self, step)
        return loss.detach()

    @torch.no_grad()
    def update_target(self, step: int) -> None:
        """Copy the online parameters and buffers into the target network, then run the hooks."""
        torch._foreach_copy_(list(self.target.parameters()), list(self.online.parameters()))
        for b_t, b in zip(self.target.buffers(), self.online.buffers()):
            b_t.copy_(b)
        for i in self.interventions:
            i.on_target_update(self, step)
