"""Weight magnitude (``probes/weight_magnitude.py``): the mean |theta| of all parameters and of each
layer, against a hand computation and numpy, and through a real run with the default diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import load_run
from plasticity_runner.nets import build_network
from plasticity_runner.probes.weight_magnitude import weight_magnitude
from plasticity_runner.trainer import build_train_state, train

from .conftest import make_cfg


def test_by_hand_on_two_linear_layers():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -0.5]))
        net[2].weight.copy_(torch.tensor([[-6.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([3.0]))
    out = weight_magnitude(net)
    assert out == {
        "weight_magnitude/0": 11.0 / 6,  # (1 + 2 + 3 + 4 + 0.5 + 0.5) / 6
        "weight_magnitude/2": 9.0 / 3,  # (6 + 0 + 3) / 3
        "weight_magnitude": 20.0 / 9,  # every parameter: not the mean of the layers' means (11/12 + 3/2)
    }


def numpy_oracle(net: nn.Module) -> dict[str, float]:
    """Mean |theta| from each module's own parameters, in numpy float64 (no shared code)."""
    out, every = {}, []
    for name, module in net.named_modules():
        own = [p.detach().cpu().numpy().astype(np.float64).ravel() for p in module.parameters(recurse=False)]
        if own:
            flat = np.abs(np.concatenate(own))
            out[f"weight_magnitude/{name}"] = flat.mean()
            every.append(flat)
    out["weight_magnitude"] = np.concatenate(every).mean()
    return out


@pytest.mark.parametrize(
    "arch",
    [
        dict(name="mlp", width=24, num_layers=2),
        dict(name="cnn", channels=3, hidden=8, conv_stride=1),
    ],
)
def test_equals_numpy_on_a_tiny_network(arch):
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(arch), (1, 8, 8), 3)
    out, expected = weight_magnitude(net), numpy_oracle(net)
    assert set(out) == set(expected) and len(out) > 2
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-12, abs=0), k


def test_a_run_with_the_default_diagnostics_writes_it_at_every_pause_and_changes_nothing_else(tmp_path):
    cfg = make_cfg([])
    assert cfg.diagnostics.weight_magnitude.enabled  # on by default, at every pause
    train(cfg, tmp_path / "on")
    rows = load_run(tmp_path / "on")
    mine = rows[(rows.phase == "stats") & rows.metric.str.startswith("weight_magnitude")]
    total = mine[mine.metric == "weight_magnitude"].set_index("step").value
    assert sorted(total.index) == [0, 20, 40]
    timing = rows[(rows.phase == "timing") & (rows.metric == "weight_magnitude_s")]
    assert sorted(timing.step) == [0, 20, 40]
    # the pause at step 0 sees the network as built (prefill trains nothing): the numpy oracle on it
    initial = numpy_oracle(build_train_state(cfg, torch.device("cpu")).agent.online)
    at_0 = mine[mine.step == 0].set_index("metric").value
    assert set(at_0.index) == set(initial)
    for k, v in initial.items():
        assert at_0[k] == pytest.approx(v, rel=1e-12, abs=0), k
    assert total[40] != total[0]  # training moved the weights

    # switched off, the run writes the same numbers otherwise (it reads the parameters, nothing else)
    train(make_cfg(["diagnostics.weight_magnitude.enabled=false"]), tmp_path / "off")
    off = load_run(tmp_path / "off")

    def kept(frame):
        frame = frame[(frame.phase != "timing") & ~frame.metric.str.startswith("weight_magnitude")]
        return (
            frame[["step", "phase", "metric", "value"]].sort_values(["step", "phase", "metric"]).reset_index(drop=True)
        )

    pd.testing.assert_frame_equal(kept(rows), kept(off), check_exact=True)
    assert not off.metric.str.startswith("weight_magnitude").any()


def test_its_cadence_is_a_multiple_of_the_pause_interval():
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["diagnostics.weight_magnitude.every_steps=30"]))
    assert err.value.key == "diagnostics.weight_magnitude.every_steps"
    assert make_cfg(["diagnostics.weight_magnitude.every_steps=40"]).diagnostics.weight_magnitude.every_steps == 40
