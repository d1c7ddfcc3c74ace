"""The golden runs (scripts/golden.py): how the check picks its mode and compares, and (slow) that
the runs reproduce the recorded baseline.

The slow test takes about 80 s on an idle 2-core CPU (ten runs through the real CLI). On the machine
that recorded the baseline it checks bit for bit; on any other it checks within the script's
default relative tolerance (the script prints which). Re-record the baseline (``--write``) on
purpose, never to make this pass.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "golden" / "baseline.json"


def _golden():
    spec = importlib.util.spec_from_file_location("golden_script", ROOT / "scripts" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _golden()
HERE = {
    "cpu": "AMD EPYC (cpu family 26, model 2, stepping 1)",
    "cpu_capability": "AVX512",
    "torch": "2.14.1+cu130 (abc)",
    "threads": "1",
}


def test_the_recording_machine_checks_bit_for_bit_and_any_other_within_rtol():
    assert golden.check_mode(dict(HERE), HERE, None, False)[:2] == ("exact", None)
    other = {**HERE, "cpu": "Intel Xeon (cpu family 6, model 85, stepping 7)"}
    mode, rtol, why = golden.check_mode(other, HERE, None, False)
    assert (mode, rtol) == ("rtol", golden.DEFAULT_RTOL) and "Intel Xeon" in why and "cpu " in why
    mode, rtol, why = golden.check_mode({**HERE, "threads": "4"}, HERE, None, False)
    assert (mode, rtol) == ("rtol", golden.DEFAULT_RTOL) and "threads" in why
    # a baseline without the machine's facts, or with some unknown: rtol, and the reason says so
    for recorded in (None, {}, {**HERE, "cpu": "unknown"}):
        mode, rtol, why = golden.check_mode(recorded, HERE, None, False)
        assert (mode, rtol) == ("rtol", golden.DEFAULT_RTOL) and "does not record" in why
    # forced either way
    assert golden.check_mode(None, HERE, None, True)[:2] == ("exact", None)
    assert golden.check_mode(dict(HERE), HERE, 1e-6, False)[:2] == ("rtol", 1e-6)


def test_this_machines_facts_are_all_known():
    here = golden.machine()
    assert set(here) == set(HERE) and all(v and v != golden.UNKNOWN for v in here.values()), here
    assert here["threads"] == "1"  # the golden runs' torch_threads


def _hex(x: float) -> str:
    return golden.exact(x)


def test_compare_exact_fails_on_one_ulp_and_rtol_fails_only_past_the_tolerance(capsys):
    x = 0.123456789
    ulp = float.fromhex(_hex(x)) + 2**-56  # one unit in the last place of x (x lies in [2^-4, 2^-3))
    assert ulp != x
    want = {"r": {"train/q@1": _hex(x), "array:s/a": "aa", "arraystat:s/a/l2": _hex(2.0)}}
    same = {"r": dict(want["r"])}
    moved = {"r": {"train/q@1": _hex(ulp), "array:s/a": "bb", "arraystat:s/a/l2": _hex(2.0 * (1 + 1e-7))}}
    far = {"r": {"train/q@1": _hex(x * (1 + 1e-2)), "array:s/a": "bb", "arraystat:s/a/l2": _hex(2.0)}}
    assert golden.compare(want, same) and golden.compare(want, same, rtol=1e-9)
    assert not golden.compare(want, moved)  # exact: one ulp and a hash are changes
    assert golden.compare(want, moved, rtol=1e-6)  # rtol: within, the hash only counted
    assert "1 of 1 array hashes differ" in capsys.readouterr().out
    assert not golden.compare(want, far, rtol=1e-3)  # 1e-2 relative is past 1e-3
    assert "changed train/q@1" in capsys.readouterr().out
    # NaN equals NaN, a value that vanished fails in both modes, an added one in neither
    assert golden.compare({"r": {"m@1": "nan"}}, {"r": {"m@1": "nan", "new@1": _hex(1.0)}}, rtol=1e-3)
    assert not golden.compare({"r": {"m@1": "nan"}}, {"r": {}}, rtol=1e-3)
    assert not golden.compare({"r": {"m@1": _hex(1.0)}}, {"r": {"m@1": "nan"}}, rtol=1e-3)


def test_the_baseline_records_its_machine_or_says_it_is_unknown():
    recorded = json.loads(BASELINE.read_text())[golden.MACHINE_KEY]
    assert set(recorded) == set(HERE)


def test_the_array_summaries_are_the_arrays_min_max_and_l2_norm(tmp_path):
    import numpy as np
    import pandas as pd

    (tmp_path / "metrics").mkdir()
    (tmp_path / "arrays").mkdir()
    pd.DataFrame(
        {"phase": ["train", "timing"], "metric": ["q", "train_s"], "step": [3, 3], "value": [0.5, 9.0]}
    ).to_parquet(tmp_path / "metrics" / "a.parquet")
    a = np.array([[3.0, -4.0], [0.0, 1.0]], dtype=np.float32)
    np.savez(tmp_path / "arrays" / "step_0000000003.npz", m=a)
    out = golden.record(tmp_path)
    assert out["train/q@3"] == _hex(0.5) and not any(k.startswith("timing") for k in out)
    assert out["arraystat:step_0000000003/m/min"] == _hex(-4.0)
    assert out["arraystat:step_0000000003/m/max"] == _hex(3.0)
    assert out["arraystat:step_0000000003/m/l2"] == _hex(26.0**0.5)  # sqrt(9 + 16 + 0 + 1)


@pytest.mark.slow
def test_golden_runs_reproduce_the_baseline():
    proc = subprocess.run(
        [sys.executable, "scripts/golden.py", "--check", str(BASELINE)], cwd=ROOT, capture_output=True, text=True
    )
    assert "[golden] mode: " in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
