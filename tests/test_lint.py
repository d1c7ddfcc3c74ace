"""The tree passes ``ruff check`` and ``ruff format --check`` under the settings of pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
    res = ruff("check", "--output-format", "concise", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_ruff_format_is_clean():
    res = ruff("format", "--check", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
