"""The report on a full disk, on copied runs, on symlinked runs and on a corrupt shard."""

from __future__ import annotations

import errno
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from plasticity_runner.metrics import DuplicateRunWarning
from plasticity_runner.report import cli
from plasticity_runner.report.data import load_report_data

from .test_report import classification_sweep


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    classification_sweep(root, np.random.default_rng(0), datasets=("mnist",), seeds=3)
    return root


def test_full_disk_at_a_table_exits_3_naming_it_and_leaves_no_partial_file(sweep, monkeypatch, capsys):
    real = pd.DataFrame.to_csv

    def full(self, path, *a, **k):
        if str(path).startswith(str(sweep / "report" / "runs.csv")):
            with open(path, "w") as f:
                f.write("run_dir,")  # half a table, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(sweep), "--formats", "png"])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert str(sweep / "report" / "runs.csv") in err and "No space left" in err
    assert not (sweep / "report" / "runs.csv").exists() and not list((sweep / "report").rglob("*.tmp"))


def test_full_disk_at_a_figure_leaves_no_partial_file(sweep, monkeypatch, capsys):
    from matplotlib.figure import Figure

    real = Figure.savefig

    def full(self, fname, *a, **k):
        if not hasattr(fname, "write"):  # a file (the PDF), not the in-memory PNG
            with open(fname, "wb") as f:
                f.write(b"%PDF-1.4 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fname, *a, **k)

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(sweep), "--formats", "pdf"])
    assert exit_.value.code == 3
    assert ".pdf" in capsys.readouterr().err
    assert not list((sweep / "report").glob("*.pdf")) and not list((sweep / "report").rglob("*.tmp"))


def test_a_copied_run_is_used_once(sweep):
    original = sorted(p for p in sweep.iterdir() if (p / "run.json").exists())[0]
    for i in range(3):
        shutil.copytree(original, sweep / f"zz_copy{i}")
    with pytest.warns(DuplicateRunWarning):
        data = load_report_data(sweep)
    assert len(data.runs) == 6 and len(data.used) == 3
    copies = data.runs[data.runs["run_dir"].str.contains("zz_copy")]
    assert (~copies["used"]).all() and copies["reason"].str.contains(str(original)).all()


def test_symlinked_runs_are_reported(sweep, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    for p in sorted(sweep.iterdir()):
        (links / p.name).symlink_to(p, target_is_directory=True)
    (links / "loop").symlink_to(links, target_is_directory=True)
    data = load_report_data(links)
    assert len(data.used) == 3


def test_a_corrupt_shard_costs_only_its_run(sweep):
    run = sorted(p for p in sweep.iterdir() if (p / "run.json").exists())[1]
    shard = sorted((run / "metrics").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x10
    shard.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DuplicateRunWarning)
        report = load_report_data(sweep)
    row = report.runs.set_index("run_dir").loc[str(run)]
    assert not row["used"] and str(shard) in row["reason"]
    assert len(report.used) == 2
