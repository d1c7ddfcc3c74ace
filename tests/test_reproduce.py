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
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
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


# ------------------------------------------------------------------ docs/reproduction.md's numbers

import re  # noqa: E402
import shutil  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

DOC = ROOT / "docs" / "reproduction.md"
DATA = ROOT / "docs" / "reproduction"


def load_tables():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import reproduction_tables
    finally:
        sys.path.pop(0)
    reproduction_tables.read_csv.cache_clear()
    return reproduction_tables


def doc_tables(text: str) -> dict[str, list[list[str]]]:
    """Each table block of the doc as rows of cell texts (the header and the rule row dropped)."""
    out = {}
    for m in re.finditer(r"<!-- table (\S+) [^>]*-->\n(.*?)<!-- end table \1 -->", text, re.S):
        lines = [line for line in m.group(2).splitlines() if line.startswith("|")]
        out[m.group(1)] = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[2:]]
    return out


def csv_value(data_dir: Path, num) -> float:
    """An oracle apart from the renderer: pandas reads the CSV, the row is found by its columns."""
    rt = load_tables()
    if isinstance(num, rt.Ratio):
        return csv_value(data_dir, num.num) / csv_value(data_dir, num.den)
    df = pd.read_csv(data_dir / num.csv, dtype=str)
    for key, value in num.where:
        df = df[df[key] == value]
    assert len(df) == 1, (num.csv, num.where)
    return float(df[num.column].iloc[0])


def check_numbers(text: str, data_dir: Path) -> None:
    """Every number of every table cell of ``text`` is its CSV value at the precision shown."""
    rt = load_tables()
    tables = doc_tables(text)
    assert set(tables) == set(rt.TABLES_BY_NAME)
    for name, rows in tables.items():
        spec = rt.TABLES_BY_NAME[name].cells()
        assert len(rows) == len(spec), name
        for doc_row, spec_row in zip(rows, spec):
            for doc_cell, spec_cell in zip(doc_row, spec_row, strict=True):
                if spec_cell.absent is not None and doc_cell == spec_cell.absent:
                    continue
                # the cell's words as the spec has them, each {} a number of the doc
                pattern = "".join(
                    r"(-?\d+(?:\.\d+)?)" if part == "{}" else re.escape(part)
                    for part in re.split(r"(\{\})", spec_cell.template)
                )
                m = re.fullmatch(pattern, doc_cell)
                assert m, (name, doc_cell, spec_cell.template)
                for text_value, num in zip(m.groups(), spec_cell.values, strict=True):
                    decimals = len(text_value.split(".")[1]) if "." in text_value else 0
                    assert abs(float(text_value) - csv_value(data_dir, num)) <= 0.5 * 10**-decimals + 1e-12, (
                        name,
                        doc_cell,
                        num,
                    )


def test_each_number_of_the_doc_is_its_csv_value():
    check_numbers(DOC.read_text(), DATA)


def test_the_doc_tables_are_what_the_csvs_write():
    rt = load_tables()
    text = DOC.read_text()
    assert rt.render_doc(text, DATA) == text, "run: python scripts/reproduce.py --tables-only"


# the sections on other papers' protocols, whose tables scripts/continual_tables.py prints from runs (not
# from CSVs under docs/reproduction/): outside this check
OTHER_PAPERS = "## Continual supervised protocols"


def test_no_number_typed_by_hand_outside_the_tables():
    text = DOC.read_text().split(OTHER_PAPERS)[0]
    text = re.sub(r"<!-- table (\S+) .*?<!-- end table \1 -->", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)  # code and file names
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"sections? \d\.\d( and \d\.\d)?", "", text)  # the paper's section numbers
    text = re.sub(r"^    .*$", "", text, flags=re.M)  # indented commands
    assert not load_tables().DECIMAL.findall(text)


def test_a_csv_value_that_moves_shows_in_the_doc_and_fails_the_check(tmp_path):
    rt = load_tables()
    data = tmp_path / "reproduction"
    shutil.copytree(DATA, data)
    csv_path = data / "fig6_quick" / "figure6_interventions__cells.csv"
    df = pd.read_csv(csv_path)
    df.loc[df["intervention"] == "layer_norm", "probe_loss_change_mean"] = 0.5
    df.to_csv(csv_path, index=False)
    old = DOC.read_text()
    with pytest.raises(AssertionError):
        check_numbers(old, data)  # the doc's number is no longer the CSV's
    rt.read_csv.cache_clear()
    new = rt.render_doc(old, data)
    assert new != old and "change 0.500 against" in new
    check_numbers(new, data)


def test_a_block_must_name_a_table_and_every_table_needs_a_block():
    rt = load_tables()
    text = DOC.read_text()
    with pytest.raises(rt.TableError, match="does not define"):
        rt.render_doc("<!-- table nowhere/x (x) -->\n<!-- end table nowhere/x -->\n" + text, DATA)
    first = next(iter(rt.TABLES_BY_NAME))
    dropped = re.sub(rf"<!-- table {re.escape(first)} .*?<!-- end table {re.escape(first)} -->", "", text, flags=re.S)
    with pytest.raises(rt.TableError, match="no block"):
        rt.render_doc(dropped, DATA)
    with pytest.raises(rt.TableError, match="typed by hand"):
        rt.Cell("halves it (0.5)").text(DATA)
