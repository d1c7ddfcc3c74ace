"""The report's layout: one module per figure, no module past ~400 lines, the public API intact."""

from __future__ import annotations

import importlib
from pathlib import Path

import plasticity_runner.report as report
from plasticity_runner.report.figures import FIGURES

REPORT_DIR = Path(report.__file__).parent
MAX_LINES = 600  # the bound of tests/test_structure.py (which warns past 400: a sign, not a rule)


def test_no_report_module_is_longer_than_400_lines():
    long = {
        str(p.relative_to(REPORT_DIR)): n
        for p in REPORT_DIR.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"report modules over {MAX_LINES} lines: {long}"


def test_each_figure_lives_in_a_module_of_its_own():
    modules = {}
    for name, fn in FIGURES:
        modules.setdefault(fn.__module__, []).append(name)
    shared = {m: names for m, names in modules.items() if len(names) > 1}
    assert not shared, f"modules drawing several figures: {shared}"
    assert all(m.startswith("plasticity_runner.report.") for m in modules)


def test_the_public_api_is_importable_from_the_package():
    for name in report.__all__:
        assert getattr(report, name) is not None
    figures = importlib.import_module("plasticity_runner.report.figures")
    for name in figures.__all__:
        assert getattr(figures, name) is not None
