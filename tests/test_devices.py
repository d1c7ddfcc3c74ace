"""Random streams on the run's device: each generator lives where its draws are used, and one
seed gives the same draws twice (on a GPU machine the ``device`` fixture adds the cuda cases)."""

from __future__ import annotations

import torch

from plasticity_runner import seeding
from plasticity_runner.trainer import build_train_state, prefill

from .conftest import make_cfg, on_device


def test_stream_generators_live_on_the_device_and_repeat(device):
    a = seeding.generator(device, 7, "replay")
    b = seeding.generator(device, 7, "replay")
    other = seeding.generator(device, 7, "act")
    assert a.device.type == device.type
    draw = lambda g: torch.randint(1000, (64,), generator=g, device=device)
    x, y, z = draw(a), draw(b), draw(other)
    assert x.device.type == device.type
    assert torch.equal(x, y) and not torch.equal(x, z)


def test_the_runs_generators_and_tensors_are_on_its_device(device):
    state = build_train_state(make_cfg(on_device(device)), device)
    prefill(state, 64)
    assert state.act_generator.device.type == device.type
    assert state.replay_generator.device.type == device.type
    assert state.obs.device.type == device.type
    batch = state.replay.sample(16, state.replay_generator)
    assert batch.o_tm1.device.type == device.type
    assert all(p.device.type == device.type for p in state.agent.online.parameters())


def test_a_checkpoint_of_another_device_type_is_refused_naming_the_file(tmp_path, monkeypatch):
    """A cuda run's checkpoint (faked here: its recorded device says cuda) loaded into a CPU run:
    a clear error naming the file and both devices, not a run on different random streams."""
    import pytest

    from plasticity_runner import checkpoint
    from plasticity_runner.train_state import DeviceMismatchError

    state = build_train_state(make_cfg(), torch.device("cpu"))
    prefill(state, 64)
    d = checkpoint.save(tmp_path, state.step, {**state.state_dict(), "device": "cuda"}, keep=1)
    again = build_train_state(make_cfg(), torch.device("cpu"))
    with pytest.raises(DeviceMismatchError, match=r"run on cuda and cannot be resumed on cpu") as err:
        checkpoint.load_latest(tmp_path, again.load_state_dict, again.device)
    assert str(d / checkpoint.STATE_FILE) in str(err.value) and "device=cuda" in str(err.value)
    assert again.step == 0  # nothing was loaded
    # a checkpoint of the same device type loads
    again.load_state_dict(state.state_dict())
    assert again.step == state.step
