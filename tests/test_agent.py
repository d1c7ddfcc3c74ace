"""DQN / Double DQN targets and loss (eq. 1, and DQN Zoo's clipped loss) against hand computations."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner.agents.dqn import DQNAgent, FrameClock, epsilon_at, target_update_due
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.envs.base import Batch
from plasticity_runner.interventions.base import Intervention, Networks


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


# ---------------------------------------------------------------- DQN Zoo's loss, in frames


def batch_of_two(r):
    """Two transitions from action 1, terminal (target = r): Q_online(o_tm1, 1) = [0, 2]."""
    return Batch(
        o_tm1=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        a_tm1=torch.tensor([1, 1]),
        r_t=torch.tensor(r),
        discount_t=torch.tensor([0.0, 0.0]),
        o_t=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    )


def zoo_agent(scale, clip):
    cfg = OmegaConf.create(dict(gamma=0.5, double_dqn=True, td_loss_scale=scale, td_error_clip=clip))
    online = Table([[1.0, 0.0], [0.0, 2.0]])
    target = Table([[3.0, 0.0], [0.0, 1.0]])
    return DQNAgent(cfg, online, target, torch.optim.SGD(online.parameters(), lr=0.1), [], num_actions=2)


def test_clipped_td_loss_gradient_by_hand():
    # td = target - Q = [3 - 0, 2.2 - 2] = [3, 0.2]; loss = mean(0.5 td^2) = (4.5 + 0.02) / 2 = 2.26.
    # d loss / d td_i = td_i / B = [1.5, 0.1], clipped to +-0.25 -> [0.25, 0.1]; d td / d Q = -1, and
    # Q_i = W[1] . o_i, so d loss / d W[1] = -(0.25 * [1, 0] + 0.1 * [0, 1]) = [-0.25, -0.1]; W[0] gets 0.
    agent = zoo_agent(0.5, 0.25)
    loss = agent.loss(batch_of_two([3.0, 2.2]))
    assert torch.allclose(loss, torch.tensor(2.26))
    loss.backward()
    assert torch.allclose(agent.online.w.grad, torch.tensor([[0.0, 0.0], [-0.25, -0.1]]))


def test_clipped_td_loss_is_huber_of_delta_clip_times_batch():
    """A library oracle: the gradient equals torch's Huber loss (delta = clip x B, batch mean)."""
    agent = zoo_agent(0.5, 1 / 32)
    torch.manual_seed(0)
    batch = Batch(
        o_tm1=torch.randn(32, 2),
        a_tm1=torch.randint(2, (32,)),
        r_t=3 * torch.randn(32),
        discount_t=torch.ones(32),
        o_t=torch.randn(32, 2),
    )
    agent.loss(batch).backward()
    ours = agent.online.w.grad.clone()
    agent.online.w.grad = None
    q_sa = agent.online(batch.o_tm1).gather(1, batch.a_tm1[:, None]).squeeze(1)
    torch.nn.functional.huber_loss(q_sa, agent.td_target(batch), delta=1.0).backward()
    assert torch.allclose(ours, agent.online.w.grad, atol=1e-7)


def test_unclipped_loss_scales_eq1():
    # no clip, scale 0.5: gradient -td / B per transition -> d loss / d W[1] = -(1.5 [1, 0] + 0.1 [0, 1])
    agent = zoo_agent(0.5, None)
    agent.loss(batch_of_two([3.0, 2.2])).backward()
    assert torch.allclose(agent.online.w.grad, torch.tensor([[0.0, 0.0], [-1.5, -0.1]]))
    # the default (scale 1, no clip) is eq. (1) through the head: mean td^2 = (9 + 0.04) / 2
    assert torch.allclose(make_agent(True).loss(batch_of_two([3.0, 2.2])), torch.tensor(4.52))


def dqn_zoo_linear_schedule(t, begin_t, decay_steps, begin_value, end_value):
    """DQN Zoo's parts.LinearSchedule, written out (the oracle)."""
    frac = min(max(t - begin_t, 0), decay_steps) / decay_steps
    return (1 - frac) * begin_value + frac * end_value


def test_epsilon_in_frames_is_dqn_zoos_schedule():
    # DQN Zoo: begin_t = 0.05 x 1M replay x 4 frames, decay over 0.02 x 200M frames; one agent step = 4
    # frames, one training step = 4 agent steps = 16 frames
    clock = FrameClock(prefill_frames=200_000, frames_per_step=16)
    cfg = OmegaConf.create(
        dict(epsilon_start=1.0, epsilon_end=0.01, epsilon_decay_steps=None, epsilon_decay_frames=4_000_000)
    )
    for step in (0, 1, 1000, 125_000, 249_999, 250_000, 10**6):
        expected = dqn_zoo_linear_schedule(clock.frames(step), 200_000, 4_000_000, 1.0, 0.01)
        assert abs(epsilon_at(step, cfg, clock) - expected) < 1e-12
    assert abs(epsilon_at(125_000, cfg, clock) - 0.505) < 1e-12  # half way: 2M frames into the decay


def test_target_update_in_frames_follows_dqn_zoos_frame_counter():
    clock = FrameClock(prefill_frames=200_000, frames_per_step=16)
    cfg = OmegaConf.create(dict(target_update_steps=None, target_update_frames=120_000))
    due = [s for s in range(1, 20_000) if target_update_due(s, cfg, clock)]
    # DQN Zoo copies at every frame_t % 120000 == 0 once the replay is full enough (after frame 200k):
    # frames 240k, 360k, 480k -> training steps (240k - 200k) / 16 = 2500, 10000, 17500
    assert due == [2500, 10_000, 17_500]
    steps_cfg = OmegaConf.create(dict(target_update_steps=7))
    assert [s for s in range(1, 30) if target_update_due(s, steps_cfg)] == [7, 14, 21, 28]
    with pytest.raises(ValueError, match="agent.target_update_frames"):
        target_update_due(1, cfg, None)


def test_dqn_zoo_options_refused_with_two_hot(cfg_factory):
    with pytest.raises(ConfigError, match="agent.td_error_clip"):
        validate(cfg_factory(["intervention=[two_hot]", "agent.td_error_clip=0.03125"]))
    with pytest.raises(ConfigError, match="agent.target_update_frames"):  # classification has no frames
        validate(cfg_factory(["agent.target_update_steps=null", "agent.target_update_frames=100"]))
    with pytest.raises(ConfigError, match="set exactly one of agent.epsilon_decay_steps"):
        validate(cfg_factory(["agent.epsilon_decay_steps=null"]))


class Recorder(Intervention):
    """Records what each hook receives; its penalty is 10 * w[0, 0] (a gradient we can predict)."""

    name = "recorder"

    def __init__(self):
        super().__init__(None)
        self.seen: list[tuple[str, object]] = []

    def on_build(self, networks):
        self.seen.append(("on_build", networks))

    def loss_penalty(self, networks):
        self.seen.append(("loss_penalty", networks))
        return 10.0 * networks.online.w[0, 0]

    def after_step(self, networks, step):
        self.seen.append(("after_step", networks))

    def on_target_update(self, networks, step):
        self.seen.append(("on_target_update", networks))


def test_hooks_receive_the_networks_not_the_agent():
    """Every hook gets the agent's one ``Networks`` (networks, optimizer, seed, last batch), which has
    no way to act or learn; the agent's parts are the Networks'."""
    cfg = OmegaConf.create(dict(gamma=0.5, double_dqn=False))
    online, target = Table([[1.0, 0.0], [0.0, 2.0]]), Table([[3.0, 0.0], [0.0, 1.0]])
    rec = Recorder()
    agent = DQNAgent(cfg, online, target, torch.optim.SGD(online.parameters(), lr=0.1), [rec], num_actions=2, seed=7)
    agent.learn(BATCH, 1)
    agent.update_target(1)
    assert [h for h, _ in rec.seen] == ["on_build", "loss_penalty", "after_step", "on_target_update"]
    assert all(type(x) is Networks and x is agent.networks for _, x in rec.seen)
    networks = agent.networks
    assert (networks.online, networks.target, networks.seed, networks.last_batch) == (online, target, 7, BATCH)
    assert agent.online is online and agent.optimizer is networks.optimizer and agent.last_batch is BATCH
    assert not any(hasattr(networks, a) for a in ("act", "learn", "update_target", "interventions"))
    # SGD, lr 0.1: the penalty moves w[0,0] by -0.1 * 10; the TD error Q(o, 1) - 2.5 = 0 - 2.5 moves
    # w[1,0] by -0.1 * 2 * (-2.5) * o[0] = +0.5
    assert torch.allclose(online.w.detach(), torch.tensor([[0.0, 0.0], [0.5, 2.0]]), atol=1e-6)
    with pytest.raises(AttributeError):  # the agent's parts change through agent.networks only
        agent.online = Table([[0.0, 0.0], [0.0, 0.0]])


def test_wrap_loss_changes_what_learn_steps_on_and_leaves_loss_alone():
    agent = make_agent(False)
    calls: list[str] = []

    def wrap(loss):
        def wrapped(batch):
            calls.append("wrapped")
            return loss(batch)

        return wrapped

    agent.wrap_loss(wrap)
    assert agent.loss_terms.__func__ is DQNAgent.loss_terms  # the method is not patched
    expected = agent.loss_terms(BATCH).detach()
    assert torch.equal(agent.learn(BATCH, 1), expected) and calls == ["wrapped"]
