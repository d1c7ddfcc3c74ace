"""scripts/reproduce.py: its dry run lists one multirun and one report per finding, of presets and
figures that exist, and docs/reproduction.md names every finding's command."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from plasticity_runner.report.figures import FIGURES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_a_multirun_and_a_report_per_finding(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    presets = [f.preset for f in load_script().FINDINGS]
    assert presets == ["fig1_quick", "fig2_quick", "fig4_quick", "fig5_quick", "fig6_quick"]
    assert len(lines) == 2 * len(presets)
    for preset, run, report in zip(presets, lines[::2], lines[1::2]):
        assert f"-m plasticity_runner -m experiment={preset} " in run and "torch_threads=1" in run
        assert f"hydra.sweep.dir={tmp_path / preset}" in run
        assert f"plasticity_runner.report.cli {tmp_path / preset} " in report
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_every_finding_names_a_preset_and_figures_that_exist():
    drawn = {name for name, _ in FIGURES}
    for finding in load_script().FINDINGS:
        assert (ROOT / "configs" / "experiment" / f"{finding.preset}.yaml").exists()
        assert set(finding.figures) <= drawn, finding.preset


def test_report_only_runs_no_training():
    script = load_script()
    finding = script.FINDINGS[0]
    cmds = script.commands(finding, Path("runs"), 1, report_only=True)
    assert len(cmds) == 1 and "plasticity_runner.report.cli" in cmds[0]


def test_the_reproduction_note_names_every_finding():
    note = (ROOT / "docs" / "reproduction.md").read_text()
    for finding in load_script().FINDINGS:
        assert f"--only {finding.preset}" in note and f"experiment={finding.preset}" in note
