"""The plasticity probe (eq. 5): vectorised fit == one-by-one fit, targets as defined, no side effects."""

from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf

from plasticity_runner.nets import build_network
from plasticity_runner.probes.plasticity import (
    fit_targets_sequential,
    fit_targets_vectorised,
    make_targets,
    plasticity_probe,
)
from plasticity_runner.seeding import probe_target_seeds

ARCH = OmegaConf.create(dict(name="mlp", width=24, num_layers=2))
ADAM = OmegaConf.create(dict(kind="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-9, eps_root=0.0))
SGD = OmegaConf.create(dict(kind="sgd", lr=1e-2, momentum=0.0))


def fresh():
    return build_network(ARCH, (1, 8, 8), 10)


def setup(seed=0, device="cpu"):
    """A network, inputs and targets on ``device`` (drawn on the CPU, so every device sees the same)."""
    torch.manual_seed(seed)
    net = fresh().to(device)
    inputs = torch.rand(96, 1, 8, 8).to(device)
    targets = make_targets(fresh, inputs, [11, 12, 13, 14], offset=0.3, sin_scale=1e5)
    return net, inputs, targets


def test_targets_are_offset_sine_of_fresh_init():
    net, inputs, targets = setup()
    torch.manual_seed(13)
    w0 = fresh()
    with torch.no_grad():
        expected = 0.3 + torch.sin(1e5 * w0(inputs))
    torch.testing.assert_close(targets[2], expected)
    assert targets.shape == (4, 96, 10)


def test_vectorised_fit_equals_one_by_one(device):
    for opt_cfg in (ADAM, SGD):
        net, inputs, targets = setup(device=device)
        assert targets.device.type == device.type
        vec = fit_targets_vectorised(
            net, opt_cfg, inputs, targets, steps=30, batch_size=16, seed=5, curve_every_steps=7
        )
        seq = fit_targets_sequential(
            net, opt_cfg, inputs, targets, steps=30, batch_size=16, seed=5, curve_every_steps=7
        )
        for v, s in zip(vec, seq):
            assert v.device.type == device.type
            torch.testing.assert_close(v, s, rtol=1e-4, atol=1e-5)
        # and the fit did something: the final loss is below the initial one for every target
        assert (vec[1] < vec[0]).all()


def test_probe_has_no_side_effects_and_defines_plasticity():
    net, inputs, _ = setup()
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    cfg = OmegaConf.create(
        dict(num_targets=3, sin_scale=1e5, steps=12, batch_size=16, curve_every_steps=5, vectorised=True)
    )
    result = plasticity_probe(net, fresh, ADAM, inputs, cfg, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    s = result.scalars()
    # offset a = the network's mean prediction; baseline = mean target variance; P = b - E[loss]
    with torch.no_grad():
        assert abs(s["probe_offset"] - net(inputs).mean().item()) < 1e-6
    targets = make_targets(fresh, inputs, probe_target_seeds(3, 3), s["probe_offset"], 1e5)
    assert abs(s["probe_baseline"] - targets.var(dim=(1, 2), unbiased=False).mean().item()) < 1e-6
    assert abs(s["plasticity"] - (s["probe_baseline"] - s["probe_loss"])) < 1e-12
    # the curve: windows of 5, 5 and 2 steps, ending at probe steps 5, 10, 12
    assert result.curve.shape == (3, 3) and result.curve_steps.tolist() == [5, 10, 12]
    assert s["probe_loss"] == result.final_loss.double().mean().item()
