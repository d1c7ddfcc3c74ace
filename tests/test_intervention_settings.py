"""Interventions whose settings carry a consequence, each checked against an oracle: the two-hot
support holds every classification task's Q* and the probe's targets around it; shrink-and-perturb
resets or keeps the optimizer state of what it shrinks, as configured; spectral norm parametrises
the layer it is told to (the first convolution or the first dense layer of the CNN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plasticity_runner.config import ConfigError
from plasticity_runner.envs.classification import NUM_CLASSES
from plasticity_runner.trainer import build_train_state

from .conftest import make_cfg

CPU = torch.device("cpu")
TASKS = ("true_label", "random_label", "sparse_reward")


def q_star(task: str, gamma: float, iterations: int = 5000) -> np.ndarray:
    """Q* [10, 10] of a classification MDP of section 3.2 by value iteration on its latent states
    (``random_label`` has ``true_label``'s latent dynamics: the state is the image's random label)."""
    s, a = np.meshgrid(np.arange(NUM_CLASSES), np.arange(NUM_CLASSES), indexing="ij")
    q = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for _ in range(iterations):
        v = q.max(axis=1)
        if task == "sparse_reward":  # reward 1[a == s == 9]; a == s -> s + 1 (9 wraps to 0), else uniform
            reward = ((a == s) & (s == 9)).astype(float)
            next_v = np.where(a == s, v[(s + 1) % NUM_CLASSES], v.mean())
        else:  # reward 1[a == s]; next state uniform
            reward = (a == s).astype(float)
            next_v = np.full_like(q, v.mean())
        q = reward + gamma * next_v  # never terminates: discount_t = 1
    return q


@pytest.mark.parametrize("task", TASKS)
def test_the_default_two_hot_support_holds_q_star_and_the_probe_targets_around_it(task):
    """The probe fits targets ``a + sin(.)`` in ``[a - 1, a + 1]``, ``a`` the network's mean
    prediction; at a network that has learnt Q*, ``a`` is anywhere in Q*'s range."""
    cfg = make_cfg(["intervention=[two_hot]", f"env.task={task}"])
    support = build_train_state(cfg, CPU).agent.online.head.support
    q = q_star(task, float(cfg.agent.gamma))
    if task != "sparse_reward":  # the right guess every step: 1 / (1 - gamma)
        assert q.max() == pytest.approx(100.0, rel=1e-6)
    assert support[0] <= q.min() - 1 and q.max() + 1 <= support[-1]
    assert (float(support[0]), float(support[-1])) == pytest.approx((-10.0, 110.0))  # [0, 100] widened by 10%
    assert len(support) == 201


def test_explicit_two_hot_ends_are_honoured_and_a_missing_reward_range_is_an_error():
    cfg = make_cfg(
        [
            "intervention=[two_hot]",
            "intervention.two_hot.v_min=-3",
            "intervention.two_hot.v_max=5",
            "intervention.two_hot.num_bins=9",
        ]
    )
    torch.testing.assert_close(build_train_state(cfg, CPU).agent.online.head.support, torch.linspace(-3, 5, 9))
    one_end = make_cfg(["intervention=[two_hot]", "intervention.two_hot.v_max=50"])
    torch.testing.assert_close(build_train_state(one_end, CPU).agent.online.head.support, torch.linspace(-10, 50, 201))
    from plasticity_runner.nets.heads import two_hot_support

    with pytest.raises(ValueError, match="intervention.two_hot.v_min and intervention.two_hot.v_max"):
        two_hot_support(None, None, 0.1, None)  # an env without a reward range (MinAtar)
    with pytest.raises(ConfigError):
        from plasticity_runner.config import validate

        validate(make_cfg(["intervention=[two_hot]", "intervention.two_hot.margin=-1"]))


# ------------------------------------------------------------------------------ shrink and perturb


def optimizer_state_after_a_target_update(reset: bool):
    """Adam's state of every online parameter right before and right after a shrink-and-perturb
    target update (``agent.target_update_steps=3``: the update closes step 3)."""
    from .test_interventions import agent_with

    extra = ["agent.target_update_steps=3", f"intervention.shrink_perturb.reset_optimizer_state={str(reset).lower()}"]
    state = agent_with(["shrink_perturb"], extra=extra, steps=2)
    agent = state.agent
    batch = state.replay.sample(16, state.replay_generator)
    agent.learn(batch, 3)  # the optimizer has state for every parameter now
    before = {
        p: {k: v.clone() if torch.is_tensor(v) else v for k, v in agent.optimizer.state[p].items()}
        for p in agent.online.parameters()
    }
    agent.update_target(3)
    return agent, before


def test_shrink_perturb_keeps_the_optimizer_state_by_default():
    agent, before = optimizer_state_after_a_target_update(reset=False)
    for p, old in before.items():
        new = agent.optimizer.state[p]
        assert set(new) == set(old) and all(torch.equal(torch.as_tensor(new[k]), torch.as_tensor(old[k])) for k in old)


def test_shrink_perturb_can_reset_the_optimizer_state_of_what_it_shrinks():
    agent, before = optimizer_state_after_a_target_update(reset=True)
    assert before and all(p not in agent.optimizer.state or not agent.optimizer.state[p] for p in before)
    # the next step starts those parameters' Adam afresh: its first update is -lr * sign(g) (bias-corrected)
    params = list(agent.online.parameters())
    snapshot = [p.detach().clone() for p in params]
    batch = agent.last_batch
    agent.online.zero_grad(set_to_none=True)
    agent.loss(batch).backward()
    grads = [p.grad.clone() for p in params]
    agent.learn(batch, 4)
    lr = agent.optimizer.param_groups[0]["lr"]
    for p, p0, g in zip(params, snapshot, grads):
        moved = (p.detach() - p0)[g.abs() > 1e-3]  # a fresh Adam's first step: m/sqrt(v) = sign(g)
        torch.testing.assert_close(moved, -lr * torch.sign(g[g.abs() > 1e-3]), rtol=1e-3, atol=1e-7)


# ------------------------------------------------------------------------------ spectral norm


@pytest.mark.parametrize("layer,normalised,plain", [("first", "net.0", "net.5"), ("first_dense", "net.5", "net.0")])
def test_spectral_norm_parametrises_the_layer_it_is_told_to_on_the_cnn(layer, normalised, plain):
    """``first``: the first convolution (the layer reading the observation); ``first_dense``: the
    first fully connected layer after the convolutions. The oracle: numpy's SVD of the layer's
    weight as a matrix ``[out, in * kh * kw]`` is 1 once the power iteration has converged."""
    from torch.nn.utils import parametrize

    from .test_interventions import ARCH_OVERRIDES, BASE

    cfg = make_cfg(
        BASE
        + ARCH_OVERRIDES["cnn"]
        + [
            "intervention=[spectral_norm]",
            f"intervention.spectral_norm.layer={layer}",
            "intervention.spectral_norm.n_power_iterations=200",
        ],
        tiny=False,
    )
    net = build_train_state(cfg, CPU).agent.online
    modules = dict(net.body.named_modules())
    assert isinstance(modules["net.0"], torch.nn.Conv2d) and isinstance(modules["net.5"], torch.nn.Linear)
    assert parametrize.is_parametrized(modules[normalised], "weight")
    assert not parametrize.is_parametrized(modules[plain], "weight")
    net.train()
    with torch.no_grad():
        weight = modules[normalised].weight  # a train-mode read runs the 200 power-iteration steps
    top = np.linalg.svd(weight.detach().flatten(1).numpy(), compute_uv=False)[0]
    assert top == pytest.approx(1.0, rel=1e-3)
    plain_top = np.linalg.svd(modules[plain].weight.detach().flatten(1).numpy(), compute_uv=False)[0]
    assert abs(plain_top - 1.0) > 1e-2  # the other layer is left as initialised


def test_spectral_norm_on_the_first_dense_layer_of_a_body_without_one_is_a_clear_error():
    from .test_interventions import ARCH_OVERRIDES, BASE

    cfg = make_cfg(
        BASE
        + ARCH_OVERRIDES["resnet18"]
        + ["intervention=[spectral_norm]", "intervention.spectral_norm.layer=first_dense"],
        tiny=False,
    )
    with pytest.raises(ValueError, match="intervention.spectral_norm.layer=first_dense: .* has no Linear layer"):
        build_train_state(cfg, CPU)
