"""A job killed under the local launcher (submitit) fails alone: the sweep's summary names it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object

from .test_cli_reliability import FAST

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, cwd):
    """The CLI in a fresh process that can import this module (the callback's ``_target_``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "plasticity_runner", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


class KillJobZero(Callback):
    """Hydra callback: job 0 of a sweep SIGKILLs itself as it starts (as the OOM killer would)."""

    def on_job_start(self, config, **kwargs) -> None:
        if config.hydra.job.num == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_job_under_the_local_launcher_gets_a_summary_line(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(
        [
            "-m",
            *FAST,
            "hydra/launcher=local",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            f"+hydra.callbacks.killer._target_={__name__}.KillJobZero",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "UncompletedJobError" not in res.stderr.split("runs failed")[-1] and "Traceback" not in res.stderr
    assert "1 of 2 runs failed" in res.stderr
    assert "#0 seed=0" in res.stderr and "JobKilled" in res.stderr and f"run directory: {sweep / '0'}" in res.stderr
    assert json.loads((sweep / "1" / "run.json").read_text())["status"] == "complete"  # job 1 ran to its end
