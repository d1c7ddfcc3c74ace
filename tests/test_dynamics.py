"""Training dynamics against oracles: per-layer gradient norms by a loop over layers,
norms of parameter differences by hand in numpy, the greedy-action change by counting argmax changes; their
state survives a checkpoint bit for bit and they never change training."""

from __future__ import annotations

import copy
import dataclasses
import io
import math

import numpy as np
import pandas as pd
import torch

from plasticity_runner.agents.dqn import DQNAgent
from plasticity_runner.probes.dynamics import eval_gradient_norms, greedy_actions
from plasticity_runner.seeding import stream_seed
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill, train

from .conftest import TINY, make_cfg
from .test_interventions import ARCH_OVERRIDES
from .test_trainer import values

CPU = torch.device("cpu")


def built(overrides=(), steps: int = 2):
    cfg = make_cfg(list(overrides))
    state = build_train_state(cfg, CPU)
    prefill(state, int(cfg.agent.learning_starts))
    for _ in range(steps):
        learn_step(state, cfg.agent, 0.5)
        finish_step(state, cfg.agent)
    return cfg, state


def layer(name: str) -> str:
    return name.rsplit(".", 1)[0]


def np_params(net) -> dict[str, np.ndarray]:
    return {n: p.detach().double().numpy().copy() for n, p in net.named_parameters()}


def by_layer_norms(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """{layer: sqrt(sum of squares of its arrays)} and {"": total}, summed in a plain loop."""
    sq: dict[str, float] = {}
    for name, a in arrays.items():
        for key in (layer(name), ""):
            sq[key] = sq.get(key, 0.0) + float((a**2).sum())
    return {k: math.sqrt(v) for k, v in sq.items()}


def metric(prefix: str, key: str) -> str:
    return prefix if key == "" else f"{prefix}/{key}"


def test_log_point_gradient_norms_and_effective_lr_match_a_loop():
    cfg, state = built()
    net = state.agent.online
    state.dynamics.log_point(net)  # empty the window of the setup steps
    state.dynamics.end_window(net)
    theta_prev = np_params(net)
    per_step: list[dict[str, float]] = []
    for _ in range(5):
        learn_step(state, cfg.agent, 0.5)
        per_step.append(by_layer_norms({n: p.grad.double().numpy() for n, p in net.named_parameters()}))
        finish_step(state, cfg.agent)
    out = state.dynamics.log_point(net)
    for key in per_step[0]:
        expected = np.mean([s[key] for s in per_step])  # the mean of the steps' norms
        assert abs(out[metric("grad_norm_window_mean", key)] - expected) < 1e-6 * expected, key
    theta = np_params(net)
    diff = by_layer_norms({n: theta[n] - theta_prev[n] for n in theta})
    norm = by_layer_norms(theta)
    for key in diff:
        assert abs(out[metric("rel_param_change_window", key)] - diff[key] / norm[key]) < 1e-12, key
    assert {k for k in out if k.startswith("rel_param_change_window/")} == {
        f"rel_param_change_window/{k}" for k in diff if k
    }
    assert "grad_norm_window_mean" not in state.dynamics.log_point(net)  # read once, then the window restarts


def test_pause_gradient_norm_matches_one_gradient_per_layer():
    cfg, state = built(["intervention=[weight_decay]"])  # the penalty is part of the training loss
    batch = state.replay.sample(64, torch.Generator().manual_seed(1))
    online = state.agent.online
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in online.named_parameters()}
    out = eval_gradient_norms(state.agent, batch, seed=0)
    for n, p in online.named_parameters():  # the real network and its gradients are untouched
        assert torch.equal(p, before[n][0]) and torch.equal(p.grad, before[n][1])
    layers = sorted({layer(n) for n, _ in online.named_parameters()})
    squares = 0.0
    for name in layers:  # oracle: a fresh copy and one autograd call per layer, norms in numpy
        copies = dataclasses.replace(
            state.agent.networks, online=copy.deepcopy(online), target=copy.deepcopy(state.agent.target)
        )
        params = [p for n, p in copies.online.named_parameters() if layer(n) == name]
        grads = torch.autograd.grad(DQNAgent.loss(state.agent, batch, copies), params)
        sq = sum(float((g.double().numpy() ** 2).sum()) for g in grads)
        assert abs(out[name] - math.sqrt(sq)) < 1e-9 * max(1.0, math.sqrt(sq)), name
        squares += sq
    assert abs(out[None] - math.sqrt(squares)) < 1e-9 * math.sqrt(squares)


def test_weight_change_from_init_and_its_state_survive_a_checkpoint():
    cfg = make_cfg([])
    state = build_train_state(cfg, CPU)
    theta_0 = np_params(state.agent.online)
    prefill(state, int(cfg.agent.learning_starts))
    for _ in range(4):
        learn_step(state, cfg.agent, 0.5)
        finish_step(state, cfg.agent)
    batch = state.replay.sample(64, torch.Generator().manual_seed(0))
    out = state.dynamics.pause(state.agent, state.replay, batch, cfg.diagnostics.dynamics, cfg.seed, state.step)
    theta = np_params(state.agent.online)
    diff = by_layer_norms({n: theta[n] - theta_0[n] for n in theta})
    init = by_layer_norms(theta_0)
    for key in diff:
        assert abs(out[metric("weight_change_from_init", key)] - diff[key]) < 1e-12, key
        assert abs(out[metric("weight_change_from_init_rel", key)] - diff[key] / init[key]) < 1e-12, key
    assert "greedy_action_change_between_pauses" not in out  # the first measurement has nothing to compare with

    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    other = build_train_state(make_cfg(["seed=5"]), CPU)  # another theta_0, to be overwritten
    prefill(other, int(cfg.agent.learning_starts))
    other.load_state_dict(torch.load(buffer, weights_only=False))
    for name, value in state.dynamics.theta_0.items():
        assert torch.equal(other.dynamics.theta_0[name], value)
        assert np.array_equal(value.double().numpy(), theta_0[name])
    for name, value in state.dynamics.theta_prev.items():
        assert torch.equal(other.dynamics.theta_prev[name], value)
    assert torch.equal(other.dynamics.reference, state.dynamics.reference)
    assert torch.equal(other.dynamics.previous_actions, state.dynamics.previous_actions)


def test_greedy_action_change_counts_changed_greedy_actions_on_a_fixed_reference_batch():
    cfg, state = built()
    tracker, net = state.dynamics, state.agent.online
    assert tracker.greedy_action_change(net, state.replay, 128, seed=3) == {}
    generator = torch.Generator().manual_seed(stream_seed(3, "diagnostics/churn_reference"))
    assert torch.equal(tracker.reference, state.replay.sample_obs(128, generator))  # its own named stream
    before = net(tracker.reference).argmax(1).numpy()
    with torch.no_grad():  # move the greedy action of about half the inputs: raise action 0's output bias
        q = net(tracker.reference)
        net.head.linear.bias[0] += (q.max(1).values - q[:, 0]).median() + 1e-6
    after = net(tracker.reference).argmax(1).numpy()
    expected = sum(int(a != b) for a, b in zip(before, after)) / 128
    assert 0 < expected < 1
    assert (
        tracker.greedy_action_change(net, state.replay, 128, seed=3)["greedy_action_change_between_pauses"] == expected
    )
    assert (
        tracker.greedy_action_change(net, state.replay, 128, seed=3)["greedy_action_change_between_pauses"] == 0.0
    )  # nothing changed since
    assert torch.equal(greedy_actions(net, tracker.reference), torch.from_numpy(after))


def test_dynamics_leave_training_and_the_probe_unchanged_with_dropout(tmp_path):
    """A ViT (dropout draws from the global RNG while training): the train-mode gradient norm at
    the pause forks the RNG, so the run with the dynamics trains and probes as the run without."""
    base = (
        ARCH_OVERRIDES["vit"]
        + ["total_steps=20", "probe.every_steps=10", "log_every_steps=5"]
        + [f"diagnostics.{d}.enabled=false" for d in ("statistics", "curvature", "gradcov")]
    )
    tiny = [o for o in TINY if not o.startswith("architecture.")]
    train(make_cfg(tiny + base, tiny=False), tmp_path / "on")
    train(make_cfg(tiny + base + ["diagnostics.dynamics.enabled=false"], tiny=False), tmp_path / "off")
    on, off = values(tmp_path / "on"), values(tmp_path / "off")
    assert set(on[on.phase == "dynamics"].metric) >= {
        "grad_norm_eval",
        "weight_change_from_init",
        "greedy_action_change_between_pauses",
    }
    assert "rel_param_change_window" in set(on.metric) and "grad_norm_window_mean" in set(on.metric)
    assert not off.metric.str.startswith(("rel_param_change_window", "grad_norm_window_mean")).any()

    def kept(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[frame.phase.isin(["train", "probe"])]
        frame = frame[~frame.metric.str.startswith(("rel_param_change_window", "grad_norm_window_mean"))]
        return frame.reset_index(drop=True)

    pd.testing.assert_frame_equal(kept(on), kept(off), check_exact=True)


def test_dynamics_cadence_and_thresholds_are_checked_at_start():
    from plasticity_runner.config import ConfigError, validate

    for override, key in [
        ("diagnostics.dynamics.every_steps=30", "diagnostics.dynamics.every_steps"),
        ("diagnostics.dynamics.reference_inputs=0", "diagnostics.dynamics.reference_inputs"),
        ("diagnostics.statistics.active_min_frac=1.5", "diagnostics.statistics.active_min_frac"),
        ("diagnostics.statistics.duplicate_rtol=-0.1", "diagnostics.statistics.duplicate_rtol"),
    ]:
        try:
            validate(make_cfg([override]))
        except ConfigError as err:
            assert err.key == key, (override, err.key)
        else:
            raise AssertionError(f"{override} was accepted")


def test_parameters_without_a_previous_value_are_left_out():
    """A parameter created since (plasticity injection's new head) or reshaped has no previous value:
    it is in no norm, and its layer gets no row."""
    from plasticity_runner.probes.dynamics import difference_norms

    now = {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(3), "c.weight": torch.ones(2)}
    then = {"a.weight": torch.zeros(2, 2), "c.weight": torch.zeros(3)}
    diff, cur, old = difference_norms(now, then)
    assert diff == {"a": 2.0, None: 2.0} and cur == {"a": 2.0, None: 2.0} and old == {"a": 0.0, None: 0.0}
