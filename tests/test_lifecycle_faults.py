"""Faults around a run's start: temporaries a killed start left behind, a stop signal during the
step-0 pause."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

from plasticity_runner.trainer import train

from .conftest import make_cfg

FAST = ["total_steps=20", "diagnostics.curvature.enabled=false", "diagnostics.gradcov.enabled=false"]


def test_stale_temporaries_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    (run / "arrays").mkdir()
    stale = [
        run / "run.json.4242-7.tmp",
        run / "metrics" / "step_0000000020.parquet.4242-8.tmp",
        run / "arrays" / "step_0000000020.npz.4242-9.tmp",
    ]
    for f in stale:
        f.write_text("{half a file")  # as a SIGKILL mid-write leaves them
    train(make_cfg(FAST), run)
    assert not [f for f in stale if f.exists()] and not list(run.rglob("*.tmp"))
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


SIGTERM_AT_STEP_0 = """
import os, signal, sys
from tests.conftest import make_cfg  # first: the CLI's imports, in their order
from plasticity_runner import trainer
real = trainer.run_pause
def pause(cfg, state, writer):
    if state.step == 0:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the step-0 pause
    return real(cfg, state, writer)
trainer.run_pause = pause
trainer.train(make_cfg(sys.argv[2:]), sys.argv[1])
"""


def test_sigterm_during_the_step_0_pause_records_interrupted(tmp_path):
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_AT_STEP_0), str(run), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == -signal.SIGTERM, res.stderr[-3000:]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM", meta
    assert (run / "checkpoints" / "step_0000000000" / "COMPLETE").exists()  # stopped after its checkpoint
    summary = train(make_cfg(FAST), run)  # and resumes from it
    assert summary["status"] == "complete"
    assert json.loads((run / "run.json").read_text())["resumed_from_step"] == 0
