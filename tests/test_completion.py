"""Tab completion imports no torch: the schema comes from a snapshot that must match the live one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from plasticity_runner.completion import SNAPSHOT, live_schema

PROBE = """
import atexit, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules, file=sys.stderr))
sys.argv = ["plasticity-run", "-sc", "query=bash"]
from plasticity_runner.cli import main
main()
"""


def test_the_snapshot_is_the_live_schema():
    assert json.loads(SNAPSHOT.read_text()) == live_schema(), (
        "the completion snapshot is out of date: run `python -m plasticity_runner.completion`"
    )


def test_a_tab_completes_keys_and_options_without_importing_torch(tmp_path):
    for line, want in (
        ("plasticity-run probe.st", "probe.steps="),
        ("plasticity-run intervention=lay", "intervention=layer_norm"),
        ("plasticity-run agent.target_up", "agent.target_update_steps="),
    ):
        env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
        res = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert want in res.stdout.split(), (line, res.stdout, res.stderr)
        assert "torch imported: False" in res.stderr, res.stderr
