"""The fast path falls back cleanly, with a reason, where it cannot run; compiled == eager."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from plasticity_runner.fastpath import CompiledOrEager
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_trainer import values


def test_cuda_graphs_without_gpu_falls_back_to_eager(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="plasticity_runner"):
        train(make_cfg(["speed.cuda_graphs=true", "total_steps=20", "probe.enabled=false"]), tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "run.json").read_text())
    assert meta["fast_path"]["cuda_graphs"] == "off (CUDA graphs need a CUDA device)"
    assert "CUDA graphs need a CUDA device" in caplog.text
    train(make_cfg(["total_steps=20", "probe.enabled=false"]), tmp_path / "e")
    # the fallback is the eager path itself: identical training metrics
    assert values(tmp_path / "g").query("phase == 'train'").equals(values(tmp_path / "e").query("phase == 'train'"))


def test_compile_failure_switches_to_eager_once(caplog):
    calls = {"compiled": 0}

    def compiled(x):
        calls["compiled"] += 1
        raise RuntimeError("inductor: no C++ compiler")

    notes: dict[str, str] = {}
    fn = CompiledOrEager(lambda x: x + 1, compiled, "loss", notes)
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        assert fn(1) == 2 and fn(2) == 3
    assert calls["compiled"] == 1 and "no C++ compiler" in notes["loss"] and "falling back" in caplog.text


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    train(make_cfg(["speed.compile=true", "probe.enabled=false"]), tmp_path / "c")
    train(make_cfg(["probe.enabled=false"]), tmp_path / "e")
    meta = json.loads((tmp_path / "c" / "run.json").read_text())
    assert meta["fast_path"]["loss"].startswith("torch.compile")
    c = values(tmp_path / "c").query("metric == 'td_loss'").value.to_numpy()
    e = values(tmp_path / "e").query("metric == 'td_loss'").value.to_numpy()
    np.testing.assert_allclose(c, e, rtol=1e-3)


HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


def record_host_reads(monkeypatch) -> list[str]:
    """From now until ``monkeypatch.undo()``: the names of the ``HOST_READS`` that tensors get."""
    import torch

    reads: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # DQN, Adam (fused kernel), MLP
        ["agent=double_dqn", "optimizer=adam_tuned"],  # Adam's _foreach path (eps_root > 0)
        ["optimizer=rmsprop", "env.num_envs=2", "agent.update_every_env_steps=2"],
        ["intervention=[layer_norm,weight_decay,spectral_norm]"],
    ],
)
def test_train_step_reads_nothing_back_to_the_host(monkeypatch, overrides):
    """The hot loop keeps everything on the device: no ``.item()``, ``bool(tensor)`` and the like in
    a training step, ``learn_step`` + ``finish_step`` (on a GPU each would stall the step until the
    device catches up). Every way a tensor's value reaches Python is patched to raise while the steps run."""
    import torch

    from plasticity_runner.trainer import build_train_state, epsilon_at, finish_step, learn_step, prefill

    cfg = make_cfg(overrides)
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    learn_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))  # first step: lazy optimizer state
    finish_step(state, cfg.agent)
    reads = record_host_reads(monkeypatch)
    for _ in range(2 * int(cfg.agent.target_update_steps) + 3):  # target copies included
        learn_step(state, cfg.agent, epsilon_at(state.step, cfg.agent))
        finish_step(state, cfg.agent)
    monkeypatch.undo()
    assert reads == [], f"host reads in a training step: {sorted(set(reads))}"


def _probe_values(run_dir):
    return values(run_dir).query("phase == 'probe'").sort_values(["step", "metric"]).value.to_numpy()


def test_probe_compile_failure_falls_back_to_the_eager_probe(tmp_path, monkeypatch, caplog):
    """A compiler that fails (no C++ compiler, an unsupported op) leaves the probe on the eager
    path with identical metrics, and run.json says why."""
    import torch

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("inductor: no working C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        train(make_cfg(["speed.compile=true"]), tmp_path / "c")
    monkeypatch.undo()
    train(make_cfg([]), tmp_path / "e")
    fast_path = json.loads((tmp_path / "c" / "run.json").read_text())["fast_path"]
    assert fast_path["probe"].startswith("eager (compile failed: RuntimeError: inductor: no working C++ compiler")
    assert "probe: torch.compile failed, falling back to eager" in caplog.text
    np.testing.assert_array_equal(_probe_values(tmp_path / "c"), _probe_values(tmp_path / "e"))


def test_one_by_one_probe_is_not_compiled(tmp_path):
    train(make_cfg(["speed.compile=true", "probe.vectorised=false", "total_steps=20"]), tmp_path / "s")
    assert json.loads((tmp_path / "s" / "run.json").read_text())["fast_path"]["probe"].startswith(
        "eager (probe.vectorised=false"
    )


@pytest.mark.slow
def test_compiled_probe_matches_eager_and_compiles_once_per_run(tmp_path):
    """speed.compile compiles the probe's vectorised minibatch loss once for all pauses of a run
    (the network copy it calls is reused) and gives the eager probe's numbers."""
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # forget what earlier tests compiled
    before = counters["stats"]["unique_graphs"]
    train(make_cfg(["speed.compile=true", "total_steps=60"]), tmp_path / "c")  # pauses at 0, 20, 40, 60
    assert counters["stats"]["unique_graphs"] - before == 2  # the TD loss and the probe loss, once each
    train(make_cfg(["total_steps=60"]), tmp_path / "e")
    assert json.loads((tmp_path / "c" / "run.json").read_text())["fast_path"]["probe"] == "torch.compile(mode=default)"
    np.testing.assert_allclose(_probe_values(tmp_path / "c"), _probe_values(tmp_path / "e"), rtol=1e-4, atol=1e-6)


def test_vectorised_probe_fit_reads_nothing_back_to_the_host(monkeypatch):
    """The probe's vectorised fit, like the training step, runs without a device-to-host read (on a
    GPU a pause is 2000 such steps); the caller reads the results once at the end."""
    import torch

    from plasticity_runner.probes.plasticity import fit_targets_vectorised, make_targets
    from plasticity_runner.trainer import build_train_state, prefill

    cfg = make_cfg([])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    inputs = state.replay.sample_obs(64, torch.Generator().manual_seed(0))
    targets = make_targets(state.build_fresh, inputs, [1, 2, 3], 0.0, 1e5)
    reads = record_host_reads(monkeypatch)
    fit_targets_vectorised(state.agent.online, cfg.optimizer, inputs, targets, 12, 16, 0, 5)
    monkeypatch.undo()
    assert reads == [], f"host reads in the probe's fit: {sorted(set(reads))}"


def test_configure_wraps_the_loss_and_leaves_the_agent_method_alone(monkeypatch):
    """``speed.compile`` wraps the agent's training loss (``agent.wrap_loss``): ``learn`` steps on
    the compiled function, ``agent.loss_terms`` stays the class's method (probes and copies use it)."""
    import torch
    from omegaconf import OmegaConf

    from plasticity_runner import fastpath
    from plasticity_runner.agents.dqn import DQNAgent
    from plasticity_runner.trainer import build_train_state, prefill

    compiled_calls: list[int] = []

    def fake_compile(fn, **kwargs):
        def compiled(*args, **kw):
            compiled_calls.append(1)
            return fn(*args, **kw)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = make_cfg([])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    speed = OmegaConf.create({"tf32": False, "cuda_graphs": False, "compile": True})
    notes = fastpath.configure(speed, state.agent, torch.device("cpu"))
    assert notes["loss"] == "torch.compile(mode=default)"
    assert state.agent.loss_terms.__func__ is DQNAgent.loss_terms
    assert isinstance(state.agent.step_loss, CompiledOrEager) and state.agent.step_loss.eager == state.agent.loss_terms
    state.agent.learn(state.replay.sample(32, state.replay_generator), 1)
    assert compiled_calls == [1]
