"""The roofline's FLOP counts (``plasticity_runner.roofline``, the FLOP/s columns of scripts/bench.py)
against hand counts: an MLP training step, the probe's vectorised and one-by-one steps, a
per-sample convolution gradient under vmap (where ``FlopCounterMode`` alone over-counts). And the
harness reports a row that fails instead of stopping."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.flop_counter import FlopCounterMode

from plasticity_runner import roofline
from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.nets import build_network
from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parent.parent


def linear_sizes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def mlp_step_flops(sizes: list[tuple[int, int]], batch: int) -> int:
    """Forward 2B sum(in out); backward: every weight gradient 2B in out, every input gradient but
    the first layer's (the observation needs none) 2B in out."""
    s = sum(i * o for i, o in sizes)
    first = sizes[0][0] * sizes[0][1]
    return 2 * batch * (3 * s - first)


def test_mlp_supervised_step_flops_equal_the_hand_count():
    torch.manual_seed(0)
    cfg = make_cfg(["architecture.width=48"])
    net = build_network(cfg.architecture, (1, 8, 8), 10)
    x, y = torch.randn(37, 1, 8, 8), torch.randn(37, 10)

    def step() -> None:
        ((net(x) - y) ** 2).mean().backward()

    sizes = linear_sizes(net)
    assert sizes == [(64, 48), (48, 48), (48, 10)]
    assert roofline.count_flops(step) == mlp_step_flops(sizes, 37)
    shapes = roofline.gemm_shapes(step)
    assert sum(shapes.values()) == mlp_step_flops(sizes, 37)
    assert roofline.dominant_shape(shapes) == (1, 37, 48, 48)


def test_dqn_train_step_flops_equal_the_hand_count():
    """A DQN training step (``learn_step`` + ``finish_step``): acting (a forward of the envs'
    observations), the target network's forward, the online forward and backward, as the training-step row of bench.py counts it."""
    cfg = make_cfg(["architecture.width=40", "agent.batch_size=24"])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    sizes = linear_sizes(state.agent.online)
    s = sum(i * o for i, o in sizes)
    envs, b = int(cfg.env.num_envs), int(cfg.agent.batch_size)

    def step() -> None:  # one step of the loop: act, store, sample, learn, hooks, target bookkeeping
        learn_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))
        finish_step(state, cfg.agent)

    flops = roofline.count_flops(step)
    assert flops == 2 * envs * s + 2 * b * s + mlp_step_flops(sizes, b)


def probe_setup(width: int = 24, T: int = 3, n: int = 50):
    torch.manual_seed(0)
    cfg = make_cfg([f"architecture.width={width}"])
    net = build_network(cfg.architecture, (1, 8, 8), 5)
    inputs = torch.randn(n, 1, 8, 8)
    targets = torch.randn(T, n, 5)
    return cfg, net, inputs, targets


def test_probe_vectorised_fit_flops_equal_the_hand_count():
    """The vectorised fit (vmap of the T stacked copies): each step is T supervised MLP steps on
    the minibatch (as one bmm per layer); the fixed part is the loss on all of X before and after."""
    cfg, net, inputs, targets = probe_setup()
    T, n, b = targets.shape[0], inputs.shape[0], 16
    sizes = linear_sizes(net)
    s = sum(i * o for i, o in sizes)

    def fit(steps: int):
        return lambda: fit_targets_vectorised(net, cfg.optimizer, inputs, targets, steps, b, 0, 5)

    fixed, two = roofline.measure(fit(0)), roofline.measure(fit(2))
    assert fixed["flops"] == 2 * T * 2 * n * s
    assert (two["flops"] - fixed["flops"]) / 2 == T * mlp_step_flops(sizes, b)
    # counted as batched GEMMs of the T copies
    assert all(shape[0] == T for shape in two["shapes"])
    seq_fixed = roofline.count_flops(lambda: fit_targets_sequential(net, cfg.optimizer, inputs, targets, 0, b, 0, 5))
    seq_two = roofline.count_flops(lambda: fit_targets_sequential(net, cfg.optimizer, inputs, targets, 2, b, 0, 5))
    assert seq_fixed == fixed["flops"] and seq_two == two["flops"]


def test_per_sample_conv_gradients_are_counted_once_not_groups_times():
    """vmap(grad) of a convolution runs grouped convolutions (one group per sample): the weight
    gradient of each sample costs what its forward costs. FlopCounterMode's backward formula
    ignores groups; ``measure`` recounts those ops."""
    conv = nn.Conv2d(8, 6, 3, padding=1)
    params = {k: v.detach() for k, v in conv.named_parameters()}
    x = torch.randn(5, 8, 7, 7)

    def loss(p, xi):
        return functional_call(conv, p, (xi[None],)).pow(2).sum()

    def per_sample() -> None:
        vmap(grad(loss), in_dims=(None, 0))(params, x)

    forward = 2 * 5 * (7 * 7) * (8 * 9) * 6  # 2 x samples x output positions x K x C_out
    counted = roofline.measure(per_sample)
    assert counted["flops"] == 2 * forward  # forward + weight gradient, no input gradient
    with FlopCounterMode(display=False) as raw:
        per_sample()
    assert raw.get_total_flops() > counted["flops"]  # the over-count that is corrected
    assert counted["flop_counter_raw"] == raw.get_total_flops()


def test_conv_net_step_counts_agree_with_flop_counter_mode():
    """Without groups the recorder's GEMM shapes and FlopCounterMode count the same FLOPs."""
    net = nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.Flatten(), nn.Linear(6 * 8 * 8, 7)
    )
    x = torch.randn(3, 1, 8, 8)

    def step() -> None:
        net(x).sum().backward()

    counted = roofline.measure(step)
    assert counted["flops"] == counted["flop_counter_raw"] == sum(counted["shapes"].values())
    k2 = 4 * 3 * 3
    assert counted["shapes"][(1, 3 * 64, k2, 6)] == 3 * 2 * 3 * 64 * k2 * 6  # forward + both gradients
    assert counted["shapes"][(1, 3 * 64, 25, 4)] == 2 * 3 * 64 * 25 * 4 * 2  # forward + weight gradient


def test_matmul_rate_measures_each_block():
    rates = roofline.matmul_rate((2, 8, 16, 4), "fp32", torch.device("cpu"), block_s=0.001, repeats=2)
    assert len(rates) == 2 and all(r > 0 for r in rates)
    peaks = roofline.Peaks(torch.device("cpu"), block_s=0.001, repeats=1)
    assert peaks.rate((1, 8, 8, 8)) > 0 and (((1, 8, 8, 8), "fp32")) in peaks.measured


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_peak_rows_and_a_failed_row_that_does_not_stop_the_harness(tmp_path, monkeypatch):
    bench = load_bench()

    def broken(*args, **kwargs):
        raise RuntimeError("no such device\nsecond line")

    monkeypatch.setattr(bench, "bench_probe", broken)
    out = tmp_path / "b.json"
    bench.main(["--only", "peak,probe", "--quick", "--block-s", "0.01", "--repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["bench"] == "peak" and rows[0]["value"] > 0 and rows[0]["unit"] == "GFLOP/s"
    failed = [r for r in rows if r.get("failed")]
    assert len(failed) == 1 and failed[0]["bench"] == "probe"
    assert failed[0]["note"] == "RuntimeError: no such device"
    meta = json.loads(out.read_text())["meta"]
    assert meta["roofline_goals"]["probe_vectorised"] == 0.7 and meta["matmul_peaks"]


def test_roofline_fields_give_the_fraction_and_the_goal():
    bench = load_bench()
    args = bench.parse_args(["--quick", "--block-s", "0.01", "--repeats", "1"])
    rl = bench.Roofline(torch.device("cpu"), args)
    rl.square = (1, 16, 16, 16)
    counted = {"flops": 10**9, "shapes": {(1, 8, 8, 8): 10**9}}
    f = rl.fields(counted, 0.5, "train")
    assert f["flop_s"] == 2e9
    assert f["frac_peak"] == f["flop_s"] / f["peak_flop_s"]
    assert f["peak_flop_s"] == max(rl.peaks.rate((1, 8, 8, 8)), rl.peaks.rate((1, 16, 16, 16)))
    assert f["roofline_goal"] == 0.5 and f["roofline_goal_met"] == (f["frac_peak"] >= 0.5)
    assert rl.fields(None, 1.0) == {} and "peak_flop_s" not in rl.fields({"flops": 1, "shapes": {}}, 1.0)
