"""The activation statistics against oracles: numpy SVD for the stable rank, hand-computed
norms, and loops over units for active and duplicate units."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf

from plasticity_runner.nets import build_network
from plasticity_runner.probes.statistics import (
    active_mask,
    duplicate_mask,
    feature_statistics,
    network_statistics,
    stable_rank,
    unit_activity,
)

CFG = SimpleNamespace(
    srank_delta=0.01, weight_rank_rtol=1e-3, dormant_tau=0.025, active_min_frac=0.25, duplicate_rtol=0.01
)


def test_stable_rank_and_feature_norm_match_numpy():
    rng = np.random.default_rng(0)
    for rows, cols in [(40, 12), (7, 30), (50, 50)]:
        phi = rng.standard_normal((rows, cols)) * np.geomspace(1.0, 1e-3, cols)
        s = np.linalg.svd(phi, compute_uv=False)
        out = feature_statistics(torch.from_numpy(phi))
        assert abs(out["feature_stable_rank"] - (s**2).sum() / s.max() ** 2) < 1e-9
        # ||Phi||_F^2 / ||Phi||_2^2 written with numpy's own norms
        assert abs(out["feature_stable_rank"] - np.linalg.norm(phi, "fro") ** 2 / np.linalg.norm(phi, 2) ** 2) < 1e-9
        assert abs(out["feature_norm_mean"] - np.mean([np.sqrt((r**2).sum()) for r in phi])) < 1e-12
    # a rank-1 matrix has stable rank 1; k orthogonal equal directions give k; zero gives 0
    assert abs(stable_rank(torch.linalg.svdvals(torch.ones(5, 4, dtype=torch.float64))) - 1.0) < 1e-12
    assert abs(stable_rank(torch.tensor([2.0, 2.0, 2.0])) - 3.0) < 1e-12
    assert stable_rank(torch.zeros(3)) == 0.0
    # hand value: sigma = (3, 1) -> (9 + 1) / 9
    assert abs(stable_rank(torch.tensor([3.0, 1.0])) - 10 / 9) < 1e-12


def loop_duplicates(h: np.ndarray, rtol: float) -> list[bool]:
    """Per unit (column of h [M, U]): not dead and within rtol * max norm of another unit not dead."""
    alive = [(h[:, u] > 0).any() for u in range(h.shape[1])]
    out = []
    for u in range(h.shape[1]):
        found = False
        for v in range(h.shape[1]):
            if u == v or not alive[u] or not alive[v]:
                continue
            bound = rtol * max(np.linalg.norm(h[:, u]), np.linalg.norm(h[:, v]))
            if np.linalg.norm(h[:, u] - h[:, v]) <= bound:
                found = True
        out.append(found)
    return out


def test_active_and_duplicate_units_on_hand_built_activations():
    # 6 units over 8 inputs
    rng = np.random.default_rng(1)
    h = np.maximum(rng.standard_normal((8, 6)), 0.0)
    h[:, 0] = 0.0  # dead
    h[:, 1] = 0.0
    h[0, 1] = 1.0  # positive on 1 of 8 inputs
    h[:, 3] = h[:, 2] * 1.005  # within 1% of unit 2: duplicates of each other
    h[:, 5] = h[:, 4] * 1.05  # 5% apart: not duplicates at rtol 0.01, duplicates at rtol 0.1
    h[:, 4] += 1e-3  # keep 4 strictly alive everywhere it was
    activity = unit_activity(torch.from_numpy(h))
    positive_frac = [(h[:, u] > 0).mean() for u in range(6)]
    assert np.allclose(activity.positive_frac.numpy(), positive_frac)
    assert active_mask(activity, 0.125).tolist() == [f >= 0.125 for f in positive_frac]
    assert active_mask(activity, 0.2).tolist()[:2] == [False, False]
    for rtol in (0.0, 0.01, 0.1):
        assert duplicate_mask(activity, rtol).tolist() == loop_duplicates(h, rtol), rtol
    assert duplicate_mask(activity, 0.01).tolist() == [False, False, True, True, False, False]
    assert duplicate_mask(activity, 0.1).tolist() == [False, False, True, True, True, True]
    # two dead units are identical (zero) but are not counted as duplicates: they are dead
    assert not duplicate_mask(unit_activity(torch.zeros(4, 3)), 0.01).any()
    # conv output [N, C, H, W]: a channel is a unit over inputs and positions
    conv = torch.rand(3, 2, 4, 4)
    conv[:, 1] = conv[:, 0]
    conv_activity = unit_activity(conv)
    assert duplicate_mask(conv_activity, 0.0).tolist() == [True, True]
    assert torch.allclose(conv_activity.positive_frac, (conv > 0).double().mean(dim=(0, 2, 3)))


def test_network_statistics_writes_the_new_names_with_loop_oracles():
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(dict(name="mlp", width=6, num_layers=1)), (2,), 3)
    first = net.body.net[1]
    with torch.no_grad():
        first.weight[0], first.bias[0] = torch.tensor([1.0, 1.0]), 1.0  # alive on every input
        first.weight[1], first.bias[1] = first.weight[0], first.bias[0]  # unit 1 copies unit 0: duplicates
        first.weight[2], first.bias[2] = 0.0, -1.0  # dead
    inputs = torch.rand(30, 2) - 0.5
    out = network_statistics(net, inputs, CFG)
    with torch.no_grad():
        h = torch.relu(first(inputs.reshape(30, -1))).double().numpy()
        phi = net.features(inputs).double().numpy()
    act = "body.net.2"
    assert set(out) >= {f"active_frac_p0.25/{act}", f"activation_rate_mean/{act}", f"duplicate_frac_rtol0.01/{act}"}
    rates = [(h[:, u] > 0).mean() for u in range(6)]
    assert abs(out[f"activation_rate_mean/{act}"] - np.mean(rates)) < 1e-12
    assert abs(out[f"active_frac_p0.25/{act}"] - np.mean([r >= 0.25 for r in rates])) < 1e-12
    assert abs(out[f"duplicate_frac_rtol0.01/{act}"] - np.mean(loop_duplicates(h, 0.01))) < 1e-12
    assert out[f"duplicate_frac_rtol0.01/{act}"] >= 2 / 6
    s = np.linalg.svd(phi, compute_uv=False)
    assert abs(out["feature_stable_rank"] - (s**2).sum() / s.max() ** 2) < 1e-9
    assert abs(out["feature_norm_mean"] - np.linalg.norm(phi, axis=1).mean()) < 1e-9
    assert out["active_frac_p0.25"] == out[f"active_frac_p0.25/{act}"]  # one activation layer: total = layer


def test_duplicate_units_can_be_switched_off():
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(dict(name="mlp", width=4, num_layers=2)), (3,), 2)
    off = SimpleNamespace(**{**vars(CFG), "duplicate_rtol": None})
    out = network_statistics(net, torch.rand(20, 3), off)
    assert not any(k.startswith("duplicate_frac") for k in out) and "active_frac_p0.25" in out
