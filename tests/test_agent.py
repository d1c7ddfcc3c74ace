"""DQN / Double DQN targets and loss (eq. 1) against a hand computation."""

from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf

from plasticity_runner.agents.dqn import DQNAgent, epsilon_at
from plasticity_runner.envs.base import Batch


class Table(torch.nn.Module):
    """Q(o) = W o: a linear 'network' whose values we can set by hand."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))

    def forward(self, o):
        return o @ self.w.T

    def td_loss(self, o, a, target):
        return (self(o).gather(1, a[:, None]).squeeze(1) - target) ** 2


def make_agent(double):
    cfg = OmegaConf.create(dict(gamma=0.5, double_dqn=double))
    online = Table([[1.0, 0.0], [0.0, 2.0]])
    target = Table([[3.0, 0.0], [0.0, 1.0]])
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    return DQNAgent(cfg, online, target, opt, [], num_actions=2)


BATCH = Batch(
    o_tm1=torch.tensor([[1.0, 0.0]]),
    a_tm1=torch.tensor([1]),
    r_t=torch.tensor([1.0]),
    discount_t=torch.tensor([1.0]),
    o_t=torch.tensor([[1.0, 1.0]]),
)


def test_dqn_target_uses_max_of_target_net():
    # Q_target(o_t) = [3, 1] -> max 3; target = 1 + 0.5 * 3
    assert torch.allclose(make_agent(False).td_target(BATCH), torch.tensor([2.5]))


def test_double_dqn_target_uses_online_argmax():
    # Q_online(o_t) = [1, 2] -> a' = 1; Q_target(o_t, 1) = 1; target = 1 + 0.5 * 1
    assert torch.allclose(make_agent(True).td_target(BATCH), torch.tensor([1.5]))


def test_terminal_discount_zero_and_loss():
    agent = make_agent(False)
    batch = copy.copy(BATCH)
    batch.discount_t = torch.tensor([0.0])
    # Q_online(o_tm1, a=1) = 0, target = 1 -> loss 1
    assert torch.allclose(agent.loss(batch), torch.tensor(1.0))
    agent.update_target(1)
    assert torch.equal(agent.target.w, agent.online.w) and agent.target.w is not agent.online.w


def test_epsilon_schedule():
    cfg = OmegaConf.create(dict(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100))
    assert epsilon_at(0, cfg) == 1.0 and abs(epsilon_at(50, cfg) - 0.55) < 1e-12 and epsilon_at(500, cfg) == 0.1
