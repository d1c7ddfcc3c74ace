"""What matters on a GPU and cannot be seen on a CPU: the run's generators and ``fork_rng`` on the
cuda device, no host sync in the hot loop, resume cuda -> cuda bit for bit, and a cuda run's
checkpoint refused on the CPU with a clear error. Each test skips with "no CUDA device" on a
machine without one; ``scripts/cuda_check.sh`` runs them (``-m cuda``) on the first GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner import lifecycle
from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.config import ConfigError
from plasticity_runner.probes.plasticity import make_targets, plasticity_probe
from plasticity_runner.train_state import DeviceMismatchError
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill, train

from .conftest import TINY, make_cfg
from .test_resume import Crash, crash_at
from .test_trainer import values

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

CUDA = ["device=cuda"]


def cuda_run():
    cfg = make_cfg(CUDA)
    state = build_train_state(cfg, torch.device("cuda"))
    prefill(state, int(cfg.agent.learning_starts))
    return cfg, state


def test_generators_and_fork_rng_are_on_the_cuda_device():
    cfg, state = cuda_run()
    assert state.act_generator.device.type == "cuda" and state.replay_generator.device.type == "cuda"
    assert state.obs.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in state.agent.online.parameters())
    # the probe forks the cuda RNG too: its fresh initialisations and minibatches leave both untouched
    inputs = state.replay.sample(64, state.replay_generator).o_tm1
    cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state()
    targets = make_targets(state.build_fresh, inputs, [1, 2], offset=0.0, sin_scale=1e5)
    probe_cfg = OmegaConf.create(
        {"num_targets": 2, "sin_scale": 1e5, "steps": 5, "batch_size": 16, "curve_every_steps": 5, "vectorised": True}
    )
    result = plasticity_probe(state.agent.online, state.build_fresh, cfg.optimizer, inputs, probe_cfg, seed=3)
    assert targets.device.type == "cuda" and result.final_loss.device.type == "cuda"
    assert torch.equal(torch.get_rng_state(), cpu_rng) and torch.equal(torch.cuda.get_rng_state(), cuda_rng)


def test_no_host_sync_in_the_hot_loop():
    """A training step (``learn_step`` + ``finish_step``) between log points (act, store, sample,
    learn, hooks, target update) never reads a device value back: torch raises on any synchronising call in sync-debug mode "error"."""
    cfg, state = cuda_run()
    agent_cfg = plain(cfg.agent)
    loss_sum = torch.zeros(len(state.agent.loss_names), device="cuda")
    for _ in range(3):  # warm up: lazy optimizer state, cuBLAS handles, first kernels
        loss_sum += learn_step(state, agent_cfg, epsilon_at(state.step, agent_cfg, state.clock))[0]
        finish_step(state, agent_cfg)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2 * int(cfg.agent.target_update_steps)):  # crosses target updates
            loss, _reward, _ = learn_step(state, agent_cfg, epsilon_at(state.step, agent_cfg, state.clock))
            finish_step(state, agent_cfg)
            loss_sum += loss
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss_sum).all().item()


def test_crash_then_restart_on_cuda_equals_uninterrupted(tmp_path, monkeypatch):
    train(make_cfg(CUDA), tmp_path / "reference")
    with monkeypatch.context() as m:
        crash_at(m, 25)
        with pytest.raises(Crash):
            train(make_cfg(CUDA), tmp_path / "resumed")
    assert train(make_cfg(CUDA), tmp_path / "resumed")["status"] == "complete"
    meta = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert meta["device"].startswith("cuda") and meta["resumed_from_step"] == 20
    pd.testing.assert_frame_equal(values(tmp_path / "resumed"), values(tmp_path / "reference"), check_exact=True)


def test_a_cuda_run_resumed_on_the_cpu_is_refused_with_a_clear_error(tmp_path, monkeypatch):
    """Decided: refused, not continued. The checkpoint loads on the CPU (``map_location``), but a
    cuda run's random streams (Philox generators) have no CPU equivalent, so a CPU continuation
    would be a different run that looks like the same one."""
    with monkeypatch.context() as m:
        crash_at(m, 25)
        with pytest.raises(Crash):
            train(make_cfg(CUDA), tmp_path)
    with pytest.raises(ConfigError, match="device"):  # device=cpu: a different config, refused at start
        train(make_cfg(["device=cpu"]), tmp_path)
    # the same config where device=auto resolves to the CPU (a job landing on a CPU node)
    auto = tmp_path / "auto"
    with monkeypatch.context() as m:
        crash_at(m, 25)
        with pytest.raises(Crash):
            train(make_cfg(["device=auto"]), auto)
    monkeypatch.setattr(lifecycle, "resolve_device", lambda name: torch.device("cpu"))
    with pytest.raises(DeviceMismatchError, match="run on cuda and cannot be resumed on cpu"):
        train(make_cfg(["device=auto"]), auto)
    assert json.loads((auto / "run.json").read_text())["status"] == "crashed"
    # from the CLI, on a node without a GPU (CUDA_VISIBLE_DEVICES=""): exit 3 and the message
    proc = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, "device=auto", f"hydra.run.dir={auto}"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "run on cuda and cannot be resumed on cpu" in proc.stderr


def test_generator_state_read_back_on_the_gpu_is_accepted():
    """A checkpoint loaded with map_location=cuda carries the generators' states on the GPU; the
    first GPU run failed every resume with "RNG state must be a torch.ByteTensor" there."""
    from plasticity_runner.seeding import set_generator_state

    gen = torch.Generator("cuda").manual_seed(3)
    state = gen.get_state().to("cuda")
    want = torch.rand(4, device="cuda", generator=gen)
    set_generator_state(gen, state)
    assert torch.equal(torch.rand(4, device="cuda", generator=gen), want)
