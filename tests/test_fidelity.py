"""Measurements the paper's way: a pause probes the network as trained, random streams are
independent across names and seeds, probe targets never see TF32, and the two-hot probe objective
is a named choice whose both options are checked against a one-by-one reference."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from plasticity_runner import seeding
from plasticity_runner.interventions.reset_last_layer import ResetLastLayer
from plasticity_runner.nets import build_network
from plasticity_runner.nets.heads import two_hot
from plasticity_runner.probes import plasticity
from plasticity_runner.probes.plasticity import make_targets
from plasticity_runner.probes.plasticity_fit import fit_loss, fit_targets_sequential, fit_targets_vectorised
from plasticity_runner.seeding import diagnostic_seed, probe_minibatch_seed, probe_seed, probe_target_seeds
from plasticity_runner.trainer import build_train_state, train

from .conftest import make_cfg
from .test_trainer import values

CPU = torch.device("cpu")

# ------------------------------------------------------------------ the network as trained


def probed_and_trained_heads(monkeypatch, tmp_path, at: str):
    """Run with reset_last_layer, a pause on a target update (step 20); return the head the probe
    saw at step 20 and the head the reset replaced at step 20."""
    seen, replaced = {}, {}
    real_probe, real_reset = plasticity.plasticity_probe, ResetLastLayer.on_target_update

    def recording_probe(net, *args, **kwargs):
        seen[len(seen)] = copy.deepcopy(net.head.state_dict())
        return real_probe(net, *args, **kwargs)

    def recording_reset(self, agent, step):
        replaced[step] = copy.deepcopy(agent.online.head.state_dict())
        real_reset(self, agent, step)
        replaced[f"fresh{step}"] = copy.deepcopy(agent.online.head.state_dict())

    monkeypatch.setattr(plasticity, "plasticity_probe", recording_probe)
    monkeypatch.setattr(ResetLastLayer, "on_target_update", recording_reset)
    train(make_cfg(["intervention=[reset_last_layer]", f"probe.at={at}", "total_steps=20"]), tmp_path)
    return seen[1], replaced[20], replaced["fresh20"]  # pause 0 is step 0; pause 1 is step 20


def assert_same(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_pause_probes_the_head_as_trained_not_a_fresh_draw(monkeypatch, tmp_path):
    probed, trained, fresh = probed_and_trained_heads(monkeypatch, tmp_path / "before", "before_interventions")
    assert_same(probed, trained)
    assert not torch.equal(probed["linear.weight"], fresh["linear.weight"])


def test_after_interventions_probes_the_reset_head(monkeypatch, tmp_path):
    probed, trained, fresh = probed_and_trained_heads(monkeypatch, tmp_path / "after", "after_interventions")
    assert_same(probed, fresh)
    assert not torch.equal(probed["linear.weight"], trained["linear.weight"])


def test_probe_at_changes_the_pause_only_never_the_training(tmp_path):
    runs = {}
    for at in ("before_interventions", "after_interventions"):
        train(make_cfg(["intervention=[shrink_perturb]", f"probe.at={at}"]), tmp_path / at)
        runs[at] = values(tmp_path / at)
    train_rows = [r.query("phase == 'train'").reset_index(drop=True) for r in runs.values()]
    import pandas as pd

    pd.testing.assert_frame_equal(*train_rows)
    probe_rows = [r.query("phase == 'probe' and step == 20").value.to_numpy() for r in runs.values()]
    assert not np.array_equal(*probe_rows)  # the pause at a target update saw different networks
    step0 = [r.query("phase == 'probe' and step == 0").value.to_numpy() for r in runs.values()]
    np.testing.assert_array_equal(*step0)  # no hook runs before the step-0 pause


# --------------------------------------------------------------------------- random streams


def run_streams(seed: int) -> dict[str, torch.Generator]:
    """Every generator a run seeds, built through the run's own code."""
    state = build_train_state(make_cfg([f"seed={seed}"]), CPU)
    global_gen = torch.Generator().manual_seed(torch.initial_seed())  # the global stream (network init)
    streams = {
        "global": global_gen,
        "env": state.env.generator,
        "act": state.act_generator,
        "replay": state.replay_generator,
    }
    for step in (0, 20):
        probe = probe_seed(seed, step)
        streams[f"probe/inputs@{step}"] = seeding.generator(CPU, seed, "probe/inputs", step)
        streams[f"probe/minibatches@{step}"] = torch.Generator().manual_seed(probe_minibatch_seed(probe))
        for j, s in enumerate(probe_target_seeds(probe, 3)):
            streams[f"probe/targets{j}@{step}"] = torch.Generator().manual_seed(s)
        for part in ("batch", "curvature", "gradcov", "dynamics"):
            streams[f"diagnostics/{part}@{step}"] = torch.Generator().manual_seed(diagnostic_seed(seed, part, step))
        streams[f"eval@{step}"] = seeding.generator(CPU, seed, "eval", step)
    # the policy-churn reference batch (probes/dynamics.py): drawn once per run
    streams["diagnostics/churn_reference"] = torch.Generator().manual_seed(seeding.churn_reference_seed(seed))
    return streams


def test_no_two_streams_of_seeds_0_to_9_start_alike():
    first = {}
    for seed in range(10):
        for name, gen in run_streams(seed).items():
            first[(seed, name)] = tuple(torch.randint(2**62, (4,), generator=gen).tolist())
    starts = list(first.values())
    assert len(set(starts)) == len(starts), "two streams start alike"
    # the old offsets made seed s's action stream equal seed s+1's environment stream
    for s in range(9):
        assert first[(s, "act")] != first[(s + 1, "env")]


def test_any_integer_seed_gives_a_valid_stream():
    for seed in (-1, -(2**70), 0, 20_000_000_000, 2**80):
        s = seeding.stream_seed(seed, "probe", 5)
        assert 0 <= s < 2**63
        torch.manual_seed(s)
    assert seeding.stream_seed(-1, "x") != seeding.stream_seed(1, "x")
    with pytest.raises(TypeError):
        seeding.stream_seed(1.5, "x")


@pytest.mark.parametrize("seed", [-1, 20_000_000_000])
def test_runs_with_negative_and_huge_seeds_complete(seed, tmp_path):
    summary = train(make_cfg([f"seed={seed}", "total_steps=20"]), tmp_path)
    assert summary["status"] == "complete" and np.isfinite(summary["probe"]["probe_loss"])


# ------------------------------------------------------------------ targets in full fp32


def test_targets_are_built_in_full_fp32_whatever_tf32_says():
    arch = OmegaConf.create(dict(name="mlp", width=8, num_layers=1))
    seen = []

    def fresh():
        net = build_network(arch, (1, 8, 8), 3)
        real = net.forward

        def forward(x):
            seen.append(
                (
                    torch.backends.cuda.matmul.allow_tf32,
                    torch.backends.cudnn.allow_tf32,
                    torch.get_float32_matmul_precision(),
                )
            )
            return real(x)

        net.forward = forward
        return net

    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:  # what speed.tf32 sets on a GPU
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        make_targets(fresh, torch.rand(4, 1, 8, 8), [1, 2], offset=0.0, sin_scale=1e5)
        assert seen == [(False, False, "highest")] * 2
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def test_full_fp32_where_torch_refuses_to_report_the_matmul_precision(monkeypatch):
    """torch 2.11 on CUDA raises from ``get_float32_matmul_precision`` once the legacy
    ``allow_tf32`` flags were set (what ``speed.tf32`` and the test fixture do): seen on the first
    GPU run, where every pause crashed. The block then sets and restores the legacy flags alone."""
    from plasticity_runner.probes.plasticity import full_fp32

    def refuse():
        raise RuntimeError("PyTorch is checking the matmul precision without a specific backend name")

    calls = []
    monkeypatch.setattr(torch, "get_float32_matmul_precision", refuse)
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda p: calls.append(p))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with full_fp32():
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        assert calls == []
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------- the two-hot probe

ADAM = OmegaConf.create(dict(kind="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-9, eps_root=0.0))
ARCH = OmegaConf.create(dict(name="mlp", width=16, num_layers=1))
TWO_HOT = dict(v_min=-2.0, v_max=2.0, num_bins=9)


def two_hot_net():
    return build_network(ARCH, (1, 8, 8), 3, head="two_hot", head_options=TWO_HOT)


def test_two_hot_cross_entropy_objective_by_hand():
    logits = torch.randn(5, 3, 9)
    y = torch.rand(5, 3) * 4 - 2
    support = torch.linspace(-2, 2, 9)
    expected = torch.zeros(())
    for b, a in itertools.product(range(5), range(3)):
        p = two_hot(y[b, a], support)
        expected += -(p * F.log_softmax(logits[b, a], -1)).sum()
    torch.testing.assert_close(fit_loss(logits, y, support), expected / 15)
    torch.testing.assert_close(fit_loss(y + 1, y, None), torch.tensor(1.0))


@pytest.mark.parametrize("two_hot_fit", [False, True])
def test_two_hot_probe_vectorised_equals_one_by_one(two_hot_fit):
    torch.manual_seed(0)
    net = two_hot_net()
    inputs = torch.rand(64, 1, 8, 8)
    targets = make_targets(two_hot_net, inputs, [3, 4, 5], offset=0.1, sin_scale=1e5)
    args = (net, ADAM, inputs, targets, 20, 16, 7, 5)
    vec = fit_targets_vectorised(*args, two_hot_fit=two_hot_fit)
    seq = fit_targets_sequential(*args, two_hot_fit=two_hot_fit)
    for v, s in zip(vec, seq):
        torch.testing.assert_close(v, s, rtol=1e-4, atol=1e-5)
    # initial and final are the squared errors of the expected Q in both modes
    with torch.no_grad():
        torch.testing.assert_close(vec[0], ((net(inputs) - targets) ** 2).mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    # and the curve is the objective fitted: cross-entropy (>= entropy > 0) or squared error
    assert (vec[1] < vec[0]).all()


def test_the_two_objectives_fit_differently_and_scalar_heads_ignore_the_option():
    torch.manual_seed(0)
    net = two_hot_net()
    inputs = torch.rand(64, 1, 8, 8)
    targets = make_targets(two_hot_net, inputs, [3, 4], offset=0.1, sin_scale=1e5)
    mse = fit_targets_vectorised(net, ADAM, inputs, targets, 10, 16, 7, 5, two_hot_fit=False)
    ce = fit_targets_vectorised(net, ADAM, inputs, targets, 10, 16, 7, 5, two_hot_fit=True)
    torch.testing.assert_close(mse[0], ce[0])  # same start, same quantity
    assert not torch.allclose(mse[1], ce[1])
    scalar = build_network(ARCH, (1, 8, 8), 3)
    a = fit_targets_vectorised(scalar, ADAM, inputs, targets, 5, 16, 7, 5, two_hot_fit=False)
    b = fit_targets_vectorised(scalar, ADAM, inputs, targets, 5, 16, 7, 5, two_hot_fit=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_the_two_hot_fit_option_reaches_the_probe_of_a_run(monkeypatch, tmp_path):
    calls = []
    real = plasticity.fit_targets_vectorised

    def recording(*args, **kwargs):
        calls.append(kwargs["two_hot_fit"])
        return real(*args, **kwargs)

    monkeypatch.setattr(plasticity, "fit_targets_vectorised", recording)
    cfg = make_cfg(["intervention=[two_hot]", "probe.two_hot_fit=cross_entropy", "total_steps=0"])
    summary = train(cfg, tmp_path)
    assert calls == [True] and np.isfinite(summary["probe"]["probe_loss"])
