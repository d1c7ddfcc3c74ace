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
from plasticity_runner.trainer import build_run

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
    support = build_run(cfg, CPU).agent.online.head.support
    q = q_star(task, float(cfg.agent.gamma))
    if task != "sparse_reward":  # the right guess every step: 1 / (1 - gamma)
        assert q.max() == pytest.approx(100.0, rel=1e-6)
    assert support[0] <= q.min() - 1 and q.max() + 1 <= support[-1]
    assert (float(support[0]), float(support[-1])) == pytest.approx((-10.0, 110.0))  # [0, 100] widened by 10%
    assert len(support) == 201


def test_explicit_two_hot_ends_are_honoured_and_a_missing_reward_range_is_an_error():
    cfg = make_cfg(["intervention=[two_hot]", "intervention.two_hot.v_min=-3", "intervention.two_hot.v_max=5",
                    "intervention.two_hot.num_bins=9"])
    torch.testing.assert_close(build_run(cfg, CPU).agent.online.head.support, torch.linspace(-3, 5, 9))
    one_end = make_cfg(["intervention=[two_hot]", "intervention.two_hot.v_max=50"])
    torch.testing.assert_close(build_run(one_end, CPU).agent.online.head.support, torch.linspace(-10, 50, 201))
    from plasticity_runner.nets.heads import two_hot_support

    with pytest.raises(ValueError, match="intervention.two_hot.v_min and intervention.two_hot.v_max"):
        two_hot_support(None, None, 0.1, None)  # an env without a reward range (MinAtar)
    with pytest.raises(ConfigError):
        from plasticity_runner.config import validate

        validate(make_cfg(["intervention=[two_hot]", "intervention.two_hot.margin=-1"]))
