"""Progress while a pause runs: nested bars on a terminal, a log line per part elsewhere, and no
host sync added to the probe's fit."""

from __future__ import annotations

import logging
import re

import pytest

from plasticity_runner.metrics import load_run
from plasticity_runner.probes import pause
from plasticity_runner.progress import PauseProgress
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_fastpath import record_host_reads


def parts(cfg) -> list[str]:
    """The registered diagnostics on in ``cfg`` (the probe first): the parts of each of its pauses."""
    names = [d.name for d in pause.diagnostics() if d.config(cfg).enabled]
    assert names[:5] == ["probe", "statistics", "curvature", "gradcov", "dynamics"], names  # the defaults, in order
    return names


def test_log_mode_writes_a_line_per_part_of_each_pause_with_its_seconds(tmp_path, caplog):
    cfg = make_cfg(["progress=log"])
    with caplog.at_level(logging.INFO, logger="plasticity_runner"):
        train(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pause at step")]
    parsed = [re.match(r"pause at step (\d+): (\w+) (\d+\.\d{3}) s", line).groups() for line in lines]
    assert [(int(step), part) for step, part, _ in parsed] == [(s, p) for s in (0, 20, 40) for p in parts(cfg)]
    timing = load_run(tmp_path).query("phase == 'timing'").set_index(["step", "metric"]).value
    for step, part, seconds in parsed:  # the same number as the part's timing row
        assert seconds == f"{timing[(int(step), f'{part}_s')]:.3f}"
    assert "(3 targets x 10 steps)" in lines[0]


def test_bar_mode_shows_a_nested_bar_for_the_probe_and_each_diagnostic(tmp_path, capsys):
    cfg = make_cfg(["progress=bar", "total_steps=20"])
    train(cfg, tmp_path)
    err = capsys.readouterr().err
    for step in (0, 20):
        for part in parts(cfg):
            assert f"pause {step}: {part}" in err, (step, part)
    assert re.search(r"pause 20: probe: +\d+%\|.*\| \d+/10 ", err)  # counted in probe steps


def test_none_mode_is_silent(tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="plasticity_runner"):
        train(make_cfg(["progress=none", "total_steps=20"]), tmp_path)
    assert "pause" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.getMessage().startswith("pause at step")]


@pytest.mark.parametrize("vectorised", [True, False])
def test_probe_progress_adds_no_host_read(monkeypatch, vectorised):
    """The fit reports its steps from the loop counter: with a live bar it still reads nothing back."""
    import torch

    from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised, make_targets
    from plasticity_runner.trainer import build_train_state, prefill

    cfg = make_cfg([])
    state = build_train_state(cfg, torch.device("cpu"))
    prefill(state, int(cfg.agent.learning_starts))
    inputs = state.replay.sample_obs(64, torch.Generator().manual_seed(0))
    targets = make_targets(state.build_fresh, inputs, [1, 2, 3], 0.0, 1e5)
    progress = PauseProgress("bar", 0)
    fit = fit_targets_vectorised if vectorised else fit_targets_sequential
    fit(state.agent.online, cfg.optimizer, inputs, targets, 2, 16, 0, 5)  # first steps: lazy optimizer state
    steps = 12 * (1 if vectorised else 3)
    advance = progress.start("probe", steps)
    reads = record_host_reads(monkeypatch)
    fit(state.agent.online, cfg.optimizer, inputs, targets, 12, 16, 0, 5, advance=advance)
    monkeypatch.undo()
    assert progress.bar.n == steps
    progress.end_bar()
    if vectorised:
        assert reads == [], f"host reads in the probe's fit: {sorted(set(reads))}"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_bar_moves_between_log_points_and_shows_the_training_rate_only(monkeypatch):
    from plasticity_runner import progress as P

    clock = FakeClock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    bar = P.Progress("bar", total=100, initial=0)
    bar.tick(7)
    assert bar.bar.n == 0  # within TICK_SECONDS: no redraw
    clock.now += P.TICK_SECONDS + 0.1
    bar.tick(9)
    assert bar.bar.n == 9  # moved to the step reached, before any log point
    bar.update(20, 20, steps_per_s=123.0, td_loss=0.5)
    assert bar.bar.n == 20  # a log point moves it to its step, not 9 + 20
    text = str(bar.bar)
    assert "steps_per_s=123" in text and "step/s" not in text and "it/s" not in text  # one rate: the training's
    bar.close()


def test_log_mode_reports_a_long_probe_fit_as_it_goes(monkeypatch, caplog):
    from plasticity_runner import progress as P

    clock = FakeClock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    pause = P.PauseProgress("log", step=5000)
    with caplog.at_level(logging.INFO, logger="plasticity_runner"):
        advance = pause.start("probe", total=2000)
        for _ in range(3):
            advance(100)
        assert not caplog.records  # under LOG_SECONDS: quiet
        clock.now += P.LOG_SECONDS
        advance(100)
        advance(100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["pause at step 5000: probe 400/2000 steps"]
