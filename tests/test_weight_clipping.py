"""Weight clipping (``interventions/weight_clipping.py``) against hand computations: the bounds s_l
of a tiny network worked out by hand and each clipped weight written out, the optimizer state
untouched; s_l = 1/sqrt(fan_in) for torch's default initialisation (the paper's bound); the
injected head bounded by its fresh draw; a resume that clips as the uninterrupted run does; and a
real pause with the default diagnostics on every architecture."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner import registry
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions.base import Networks
from plasticity_runner.interventions.weight_clipping import WeightClipping, init_bounds
from plasticity_runner.metrics import MetricsWriter, load_arrays, load_run
from plasticity_runner.nets.layers import raw_weight
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill, run_pause

from .conftest import make_cfg
from .test_interventions import ARCH_OVERRIDES, EXTRA, agent_with, rebuild_fresh
from .test_pause_grid import BASE as PAUSE_BASE
from .test_resume import assert_crash_then_restart_equals_uninterrupted

CPU = torch.device("cpu")


class Tiny(nn.Module):
    """3 inputs -> Linear(3, 2) -> layer norm -> Linear(2, 2), plus a shared output bias."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(3, 2), nn.LayerNorm(2), nn.Linear(2, 2)
        self.shared_bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x)))) + self.shared_bias


def set_(param: torch.Tensor, values) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype))


def test_clip_bounds_and_clipped_weights_by_hand():
    """s_l = sqrt(3 * mean(W_0^2)): fc1's W_0 = [[1, 0, 0], [0, -1, 0]] has mean square 2/6, so
    s = 1; fc2's W_0 = [[2, 0], [0, 0]] has mean square 1, so s = sqrt(3). Biases take their
    weight's bound; the norm's gain and offset and the shared bias are not clipped."""
    net = Tiny()
    set_(net.fc1.weight, [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    set_(net.fc2.weight, [[2.0, 0.0], [0.0, 0.0]])
    bounds = init_bounds(net)
    assert set(bounds) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for name, s in [("fc1.weight", 1.0), ("fc1.bias", 1.0), ("fc2.weight", math.sqrt(3)), ("fc2.bias", math.sqrt(3))]:
        assert bounds[name] == pytest.approx(s, rel=1e-15), name

    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    networks = Networks(net, copy.deepcopy(net), optimizer)
    clip = WeightClipping(OmegaConf.create({"kappa": 0.8}))
    clip.on_build(networks)
    net(torch.ones(4, 3)).sum().backward()
    optimizer.step()  # the optimizer has state now
    state = {n: {k: v.clone() for k, v in optimizer.state[p].items()} for n, p in net.named_parameters()}
    set_(net.fc1.weight, [[3.0, -0.2, 0.7], [-2.0, 0.1, 0.9]])
    set_(net.fc1.bias, [2.0, -0.3])
    set_(net.fc2.weight, [[5.0, -5.0], [1.0, -1.0]])
    set_(net.fc2.bias, [-4.0, 0.5])
    set_(net.norm.weight, [5.0, -5.0])
    set_(net.norm.bias, [3.0, 3.0])
    set_(net.shared_bias, [9.0])
    clip.after_step(networks, 1)
    k1, k2 = np.float32(0.8), np.float32(0.8 * math.sqrt(3))  # kappa * s in the tensors' precision
    expected = {
        "fc1.weight": [[k1, -0.2, 0.7], [-k1, 0.1, k1]],
        "fc1.bias": [k1, -0.3],
        "fc2.weight": [[k2, -k2], [1.0, -1.0]],
        "fc2.bias": [-k2, 0.5],
        "norm.weight": [5.0, -5.0],
        "norm.bias": [3.0, 3.0],
        "shared_bias": [9.0],
    }
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), np.array(expected[name], dtype=np.float32), err_msg=name)
        for key, value in optimizer.state[p].items():  # moments and step counts kept
            assert torch.equal(value, state[name][key]), (name, key)
    target = dict(networks.target.named_parameters())
    assert float(target["fc1.weight"].detach()[0, 0]) == 1.0  # the target network is not clipped


def test_the_bound_of_torch_default_init_is_one_over_sqrt_fan_in():
    """The paper's s_l for torch's default U(+-1/sqrt(fan_in)): Linear(512 -> 256) and a 3x3 conv of 64
    channels (fan_in 576), to within the sampling error of the mean square (0.12% and 0.23% here)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(512, 256), nn.Unflatten(1, (4, 8, 8)), nn.Conv2d(4, 64, 3), nn.Conv2d(64, 64, 3))
    bounds = init_bounds(net)
    assert bounds["0.weight"] == pytest.approx(1 / math.sqrt(512), rel=0.01)
    assert bounds["3.weight"] == pytest.approx(1 / math.sqrt(64 * 9), rel=0.01)
    assert bounds["0.bias"] == bounds["0.weight"] and bounds["3.bias"] == bounds["3.weight"]


def test_zero_initialised_weights_are_refused():
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.zero_()
    with pytest.raises(ValueError, match="weight is all zeros"):
        init_bounds(net)


def test_kappa_must_be_positive():
    validate(make_cfg(["intervention=[weight_clipping]"]))
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(["intervention=[weight_clipping]", "intervention.weight_clipping.kappa=0"]))
    assert info.value.key == "intervention.weight_clipping.kappa"


def test_the_injected_head_is_bounded_by_its_fresh_draw_and_the_output_kept():
    """Injection at step 2: the new head (and its frozen copy) take s_l from the fresh draw, rebuilt
    here from the recorded seed, and are clipped alike, so h_new - h_new_frozen stays 0."""
    extra = ["intervention.plasticity_injection.at_step=2", "intervention.weight_clipping.kappa=0.5"]
    state = agent_with(["plasticity_injection", "weight_clipping"], extra=extra, steps=2)
    agent = state.agent
    injection, clip = agent.interventions
    head = agent.online.head
    fresh = rebuild_fresh(state, injection.last_fresh_seed).head
    s = math.sqrt(3 * float(fresh.linear.weight.detach().double().square().mean()))
    for copy_ in (head.new, head.new_frozen):
        assert clip.bound[id(copy_.linear.weight)] == pytest.approx(s, rel=1e-12)
        assert clip.bound[id(copy_.linear.bias)] == pytest.approx(s, rel=1e-12)
    k = np.float32(0.5 * s)
    expected = np.clip(fresh.linear.weight.detach().numpy(), -k, k)
    np.testing.assert_array_equal(head.new_frozen.linear.weight.detach().numpy(), expected)
    np.testing.assert_array_equal(head.new.linear.weight.detach().numpy(), expected)
    assert (np.abs(expected) == k).any()  # the clip acted on the draw


def test_a_resumed_run_clips_as_the_uninterrupted_one(tmp_path, monkeypatch):
    """Crashed after the step-20 checkpoint, with an injection at step 2: the bounds of the injected
    head come back from the checkpoint (a resumed run recomputing them from the trained head would
    clip differently)."""
    names = ["plasticity_injection", "weight_clipping"]
    off = [f"diagnostics.{d}.enabled=false" for d in ("statistics", "curvature", "gradcov")]
    overrides = off + ["probe.steps=4", "probe.num_targets=2", f"intervention=[{','.join(names)}]"]
    overrides += [o for n in names for o in EXTRA[n]]  # injection at step 2, kappa 0.5
    assert_crash_then_restart_equals_uninterrupted(lambda: make_cfg(overrides), tmp_path, monkeypatch, 33)


def assert_within_bounds(net: nn.Module, theta_0: dict[str, np.ndarray], kappa: float) -> int:
    """Every Linear/Conv2d weight and bias of ``net`` within +-kappa * sqrt(3 * mean(W_0^2)) of its
    weight as built (numpy, float64); returns how many sit exactly on a bound."""
    names = {id(p): n for n, p in net.named_parameters()}
    on_bound = 0
    for m in net.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        w = raw_weight(m)
        k = np.float32(kappa * math.sqrt(3 * np.mean(theta_0[names[id(w)]] ** 2)))
        for p in (w, m.bias):
            if p is None:
                continue
            values = np.abs(p.detach().numpy())
            assert values.max() <= k, names[id(p)]
            on_bound += int((values == k).sum())
    return on_bound


@pytest.mark.parametrize("arch", sorted(registry.parts("architecture")))
def test_weight_clipping_through_a_real_pause_on_every_architecture(arch, tmp_path):
    """Three training steps (a target update among them), then a pause with every default
    diagnostic: the weights stay within their bounds (and some sit on them), the pause changes
    none, and every phase writes finite numbers."""
    kappa = 0.5
    overrides = PAUSE_BASE + ARCH_OVERRIDES[arch] + ["intervention=[weight_clipping]"]
    cfg = make_cfg(overrides + [f"intervention.weight_clipping.kappa={kappa}"], tiny=False)
    state = build_train_state(cfg, CPU)
    online = state.agent.online
    theta_0 = {n: p.detach().double().numpy().copy() for n, p in online.named_parameters()}
    prefill(state, int(cfg.agent.learning_starts))
    for _ in range(3):
        learn_step(state, cfg.agent, 0.5)
        finish_step(state, cfg.agent)
    assert assert_within_bounds(online, theta_0, kappa) > 0
    before = {n: p.detach().clone() for n, p in online.named_parameters()}
    writer = MetricsWriter(tmp_path, "clip")
    probe = run_pause(cfg, state, writer)
    writer.flush(state.step)
    assert all(torch.equal(p, before[n]) for n, p in online.named_parameters())
    assert math.isfinite(probe["probe_loss"]) and math.isfinite(probe["plasticity"])
    rows = load_run(tmp_path)
    for phase in ("probe", "stats", "curvature", "gradcov", "dynamics"):
        values = rows.query("phase == @phase").value.to_numpy()
        assert len(values) and not np.isinf(values).any() and np.isfinite(values).any(), phase
    assert np.isfinite(load_arrays(tmp_path)[state.step]["gradcov/matrix"]).all()
