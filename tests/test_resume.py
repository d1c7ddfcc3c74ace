"""Resume is a property of the run directory: a crash anywhere, then the same command, gives the
metrics of an uninterrupted run (bit for bit on a CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from plasticity_runner import checkpoint, trainer
from plasticity_runner.config import ConfigError
from plasticity_runner.trainer import train

from .conftest import TINY, make_cfg
from .test_trainer import values


class Crash(Exception):
    pass


def crash_at(monkeypatch, step: int, where: str = "learn_step") -> None:
    """Make the trainer raise once ``step`` training steps are done (in the step or the pause)."""
    if where == "learn_step":  # after the optimizer step, before the step's hooks and target update
        real = trainer.learn_step

        def crashing(state, agent_cfg, epsilon):
            out = real(state, agent_cfg, epsilon)
            if state.step == step:
                raise Crash(step)
            return out

        monkeypatch.setattr(trainer, "learn_step", crashing)
    else:  # crash in the middle of the pause: after the metrics shard, before the checkpoint
        real = checkpoint.save

        def crashing_save(run_dir, at_step, bundle, keep):
            if at_step == step:
                raise Crash(step)
            return real(run_dir, at_step, bundle, keep)

        monkeypatch.setattr(checkpoint, "save", crashing_save)


def assert_crash_then_restart_equals_uninterrupted(make, tmp_path, monkeypatch, step: int) -> pd.DataFrame:
    """Run ``make()`` straight, then crashed at ``step`` and restarted in another directory; the
    restarted run completes with metrics bit-identical to the straight one (returned)."""
    train(make(), tmp_path / "ref")
    reference = values(tmp_path / "ref")
    with monkeypatch.context() as m:
        crash_at(m, step)
        with pytest.raises(Crash):
            train(make(), tmp_path / "run")
    assert train(make(), tmp_path / "run")["status"] == "complete"
    pd.testing.assert_frame_equal(values(tmp_path / "run"), reference, check_exact=True)
    return reference


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    train(make_cfg(), d)
    return values(d)


@pytest.mark.parametrize("step, where", [(5, "learn_step"), (20, "learn_step"), (33, "learn_step"), (20, "pause")])
def test_crash_then_restart_equals_uninterrupted(tmp_path, monkeypatch, reference, step, where):
    with monkeypatch.context() as m:
        crash_at(m, step, where)
        with pytest.raises(Crash):
            train(make_cfg(), tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "crashed" and meta["error"] == f"Crash: {step}"
    summary = train(make_cfg(), tmp_path)
    assert summary["status"] == "complete"
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)


def test_finished_run_exits_at_once(tmp_path):
    train(make_cfg(), tmp_path)
    shards = sorted((tmp_path / "metrics").iterdir())
    summary = train(make_cfg(), tmp_path)
    assert summary["already_finished"] and summary["status"] == "complete"
    assert sorted((tmp_path / "metrics").iterdir()) == shards


def test_restart_with_another_config_is_refused(tmp_path):
    train(make_cfg(["total_steps=20"]), tmp_path)
    with pytest.raises(ConfigError) as err:
        train(make_cfg(["total_steps=20", "agent.gamma=0.5"]), tmp_path)
    assert "agent.gamma" in str(err.value)


def test_half_written_checkpoint_is_never_loaded(tmp_path, monkeypatch, reference):
    with monkeypatch.context() as m:
        crash_at(m, 33)
        with pytest.raises(Crash):
            train(make_cfg(), tmp_path)
    done = checkpoint.complete_checkpoints(tmp_path)
    assert [s for s, _ in done] == [0, 20]  # keep = 2
    # a checkpoint directory without its COMPLETE marker (cut off while writing) is ignored
    fake = tmp_path / "checkpoints" / "step_0000000030"
    fake.mkdir()
    (fake / "state.pt").write_bytes(b"truncated")
    train(make_cfg(), tmp_path)
    pd.testing.assert_frame_equal(values(tmp_path), reference, check_exact=True)
    assert not fake.exists()


def test_sigkill_then_same_command(tmp_path, reference):
    """The real CLI killed with SIGKILL right after its first checkpoint past step 0, then rerun."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "plasticity_runner", *TINY, f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoints" / "step_0000000020" / "COMPLETE").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    pd.testing.assert_frame_equal(values(out), reference, check_exact=True)


# ------------------------------------------------------------------ every intervention resumes


def _intervention_run(names: list[str]):
    """A tiny run with ``names`` active (each with the options that make its hooks act within the
    first steps, ``test_interventions.EXTRA``), crashed past its step-20 checkpoint."""
    from .test_interventions import EXTRA

    extra = [o for n in names for o in EXTRA.get(n, [])]
    fast = [
        "diagnostics.statistics.enabled=false",
        "diagnostics.curvature.enabled=false",
        "diagnostics.gradcov.enabled=false",
        "probe.steps=4",
        "probe.num_targets=2",
    ]
    return lambda: make_cfg(fast + [f"intervention=[{','.join(names)}]"] + extra)


def _registry_sets() -> list[list[str]]:
    """Every registered intervention in one of two compatible sets (injection excludes the resets
    and perturbations that need the plain head), built from ``REGISTRY``: nothing to extend."""
    from plasticity_runner.interventions import REGISTRY, build_interventions

    sets: list[list[str]] = []
    for name in REGISTRY:
        for s in sets:
            try:
                build_interventions(make_cfg([f"intervention=[{','.join(s + [name])}]"]).intervention)
            except ConfigError:
                continue
            s.append(name)
            break
        else:
            sets.append([name])
    return sets


@pytest.mark.parametrize("names", _registry_sets(), ids=lambda names: "+".join(names))
def test_every_registered_intervention_resumes_bit_identically(names, tmp_path, monkeypatch):
    """Every ``REGISTRY`` entry, composed with the others it is compatible with: crashed at step
    33 (after the checkpoint of step 20), restarted, the metrics equal an uninterrupted run's."""
    assert_crash_then_restart_equals_uninterrupted(_intervention_run(names), tmp_path, monkeypatch, 33)


@pytest.mark.slow
@pytest.mark.parametrize("name", __import__("plasticity_runner.interventions", fromlist=["REGISTRY"]).REGISTRY)
def test_each_registered_intervention_alone_resumes_bit_identically(name, tmp_path, monkeypatch):
    assert_crash_then_restart_equals_uninterrupted(_intervention_run([name]), tmp_path, monkeypatch, 33)
