"""The golden runs (scripts/golden.py) reproduce the recorded baseline bit for bit.

Slow (about 80 s on an idle 2-core CPU, ten runs through the real CLI) and machine-specific: the
baseline was recorded on the 2-core x86-64 CPU machine this project is developed and tested on,
with torch 2.14.1 and one thread; re-record it (``--write``) on purpose, never to make this pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_golden_runs_are_bit_identical_to_the_baseline():
    proc = subprocess.run([sys.executable, "scripts/golden.py", "--check", "tests/golden/baseline.json"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
