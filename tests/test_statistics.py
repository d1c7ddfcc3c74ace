"""Statistics of section 5.2 against oracles: numpy SVD for ranks, hand-built activations for dead/dormant."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

from plasticity_runner.nets import build_network
from plasticity_runner.probes.statistics import (
    dead_fraction,
    dormant_mask,
    effective_rank,
    network_statistics,
    numerical_rank,
    parameter_statistics,
    srank,
    unit_activity,
)

CFG = SimpleNamespace(srank_delta=0.01, weight_rank_rtol=1e-3, dormant_tau=0.025)


def np_srank(m: np.ndarray, delta: float) -> int:
    s = np.linalg.svd(m, compute_uv=False)
    for k in range(1, len(s) + 1):
        if s[:k].sum() >= (1 - delta) * s.sum():
            return k
    return len(s)


def np_effective_rank(m: np.ndarray) -> float:
    s = np.linalg.svd(m, compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def low_rank(rows: int, cols: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 1e-2, rank)
    return (rng.standard_normal((rows, rank)) * scales) @ rng.standard_normal((rank, cols))


def test_ranks_match_numpy_svd():
    for seed, (rows, cols, rank) in enumerate([(40, 30, 7), (25, 60, 25), (50, 50, 1)]):
        m = low_rank(rows, cols, rank, seed)
        sv = torch.linalg.svdvals(torch.from_numpy(m))
        s_max = np.linalg.svd(m, compute_uv=False).max()
        assert numerical_rank(sv, 1e-3) == np.linalg.matrix_rank(m, tol=1e-3 * s_max)
        assert numerical_rank(sv, 1e-12) == rank
        for delta in (0.01, 0.1, 0.5):
            assert srank(sv, delta) == np_srank(m, delta)
        assert abs(effective_rank(sv) - np_effective_rank(m)) < 1e-9
    assert srank(torch.zeros(5), 0.01) == 0 and effective_rank(torch.zeros(5)) == 0.0


def test_parameter_norms_and_weight_ranks_match_numpy():
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(dict(name="cnn", channels=4, hidden=12, conv_stride=1)), (1, 6, 6), 5)
    with torch.no_grad():  # plant a rank-3 fully-connected weight
        w = net.body.net[5].weight
        w.copy_(torch.from_numpy(low_rank(w.shape[0], w.shape[1], 3, seed=1)).float())
    out = parameter_statistics(net, rank_rtol=1e-3)
    state = {k: v.double().numpy() for k, v in net.state_dict().items()}
    assert abs(out["param_norm"] - np.sqrt(sum((v**2).sum() for v in state.values()))) < 1e-9
    for module in ("body.net.0", "body.net.5", "head.linear"):
        expected = np.sqrt((state[f"{module}.weight"] ** 2).sum() + (state[f"{module}.bias"] ** 2).sum())
        assert abs(out[f"param_norm/{module}"] - expected) < 1e-9
    ranks = []
    for layer in ("body.net.0", "body.net.2", "body.net.5", "body.net.7", "head.linear"):
        m = state[f"{layer}.weight"].reshape(state[f"{layer}.weight"].shape[0], -1)
        expected = np.linalg.matrix_rank(m, tol=1e-3 * np.linalg.svd(m, compute_uv=False).max())
        assert out[f"weight_rank_rtol0.001/{layer}"] == expected
        ranks.append(expected)
    assert out["weight_rank_rtol0.001/body.net.5"] == 3
    assert len([k for k in out if k.startswith("weight_rank_rtol")]) == 5
    assert out["weight_rank_mean"] == np.mean(ranks)


def test_dead_and_dormant_on_hand_built_activations():
    # 4 units over 3 inputs: unit 0 never positive, unit 1 tiny, units 2 and 3 active
    acts = torch.tensor([[0.0, 0.001, 1.0, 2.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.002, 2.0, 1.0]])
    activity = unit_activity(acts)
    assert dead_fraction(activity) == 0.25
    # mean |h| = [0, 0.001, 2, 1]; layer mean = 0.75025; scores = [0, 0.00133, 2.67, 1.33]
    assert dormant_mask(activity, 0.025).tolist() == [True, True, False, False]
    assert dormant_mask(activity, 0.0).tolist() == [True, False, False, False]  # tau = 0: dormant == dead
    assert dormant_mask(activity, 1.5).tolist() == [True, True, False, True]
    # conv output [N, C, H, W]: a unit is a channel; channel 1 is positive at a single position
    conv = torch.zeros(2, 3, 2, 2)
    conv[:, 0] = 1.0
    conv[1, 1, 0, 1] = 5.0
    conv[:, 2] = -1.0  # GELU-style negative outputs: never positive, so dead
    activity = unit_activity(conv)
    assert activity.ever_positive.tolist() == [True, True, False]
    assert torch.allclose(activity.mean_abs, torch.tensor([1.0, 5.0 / 8, 1.0], dtype=torch.float64))
    # tokens [N, T, D]: a unit is a feature of the last dimension
    assert unit_activity(torch.ones(2, 7, 5)).mean_abs.shape == (5,)
    # an all-zero layer: every unit dead and dormant
    zero = unit_activity(torch.zeros(4, 6))
    assert dead_fraction(zero) == 1.0 and bool(dormant_mask(zero, 0.025).all())


def test_network_statistics_on_a_hand_built_network():
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(dict(name="mlp", width=8, num_layers=2)), (3,), 2)
    first, second = net.body.net[1], net.body.net[3]
    with torch.no_grad():
        first.weight[0], first.bias[0] = 0.0, -1.0  # unit 0: dead for every input
        first.weight[1], first.bias[1] = 0.0, 1e-4  # unit 1: alive but dormant
        first.weight[2:] = torch.eye(3).repeat(2, 1)
        first.bias[2:] = 1.0  # units 2..7 = x + 1 > 0 on inputs in [0, 1)
        second.weight[:4], second.bias[:4] = 0.0, -1.0  # units 0..3 of layer 2: dead
    inputs = torch.rand(50, 3)
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    out = network_statistics(net, inputs, CFG)
    assert torch.equal(torch.get_rng_state(), rng) and net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert out["dead_frac/body.net.2"] == 1 / 8 and out["dead_frac/body.net.4"] >= 4 / 8
    assert out["dormant_frac_tau0.025/body.net.2"] == 2 / 8
    dead_second = out["dead_frac/body.net.4"] * 8
    assert out["dead_frac"] == (1 + dead_second) / 16
    with torch.no_grad():
        features = net.features(inputs).double().numpy()
    assert out["feature_srank_delta0.01"] == np_srank(features, 0.01)
    assert abs(out["feature_effective_rank"] - np_effective_rank(features)) < 1e-6
    for name in ("param_norm", "weight_rank_mean", "dead_frac", "dormant_frac_tau0.025"):
        assert name in out
