"""``make_report``: draw every figure a sweep has data for, write PNG/PDF files, tables as CSV and
one self-contained HTML page into ``PATH/report/``."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics import MetricsWriteError, atomic_write, atomic_write_text
from .data import ReportData, load_report_data
from .figures import FIGURES
from .html import render_html, runs_table
from .plotting import FigureResult, MissingData
from .provenance import Provenance, provenance, stamp_table

FORMATS = ("png", "pdf", "svg")
REPORT_DIR = "report"
HTML_NAME = "index.html"
PNG_DPI = 110


@dataclass
class Report:
    html: Path
    out: Path
    data: ReportData
    figures: list[FigureResult] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # figure name -> why it is absent
    errors: dict[str, str] = field(default_factory=dict)  # figure name -> exception text
    files: dict[str, list[Path]] = field(default_factory=dict)


def _formats(formats: Iterable[str]) -> list[str]:
    out = []
    for f in formats:
        f = f.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise ValueError(f"unknown figure format {f!r} (choose from {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    return out


def build_report(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    formats: Iterable[str] = ("png", "pdf"),
    figures: Iterable[str] | None = None,
    figure_options: dict[str, dict] | None = None,
) -> Report:
    """Build the report of the run or multirun at ``path``; see ``make_report``.

    ``figure_options`` maps a figure's name to keyword arguments of its function, e.g.
    ``{"figure3_falsification": {"y": "plasticity"}}``.
    """
    figure_options = figure_options or {}
    unknown = set(figure_options) - {name for name, _ in FIGURES}
    if unknown:
        raise ValueError(f"figure_options name no figure: {sorted(unknown)}")
    formats = _formats(formats)
    data = load_report_data(path)
    out = Path(out) if out is not None else Path(path) / REPORT_DIR
    try:
        (out / "tables").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetricsWriteError(f"cannot write {out / 'tables'}: {exc}") from exc
    wanted = None if figures is None else set(figures)
    report = Report(html=out / HTML_NAME, out=out, data=data)
    images: dict[str, bytes] = {}
    for name, fn in FIGURES:
        if wanted is not None and name not in wanted:
            continue
        result = None
        if data.frame.empty:
            report.missing[name] = "no run has metrics yet"
        else:
            try:
                result = fn(data.frame, **figure_options.get(name, {}))
            except MissingData as exc:
                report.missing[name] = str(exc)
            except Exception as exc:  # one broken figure must not cost the others
                report.errors[name] = f"{type(exc).__name__}: {exc}"
                report.missing[name] = f"failed: {type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
        if result is None:
            for f in FORMATS:  # an earlier report's figure would now be stale
                (out / f"{name}.{f}").unlink(missing_ok=True)
            for f in (out / "tables").glob(f"{name}__*.csv"):
                f.unlink()
            continue
        prov = provenance(data.frame, result.runs)
        stamp_figure(result, prov)
        result.tables = {k: stamp_table(t, prov) for k, t in result.tables.items()}
        report.figures.append(result)
        meta = {
            "png": {"Title": result.title, "Description": figure_description(result, prov)},
            "pdf": {"Title": result.title, "Subject": figure_description(result, prov)},
            "svg": {"Title": result.title, "Description": figure_description(result, prov)},
        }
        # The PNG (embedded in the page) runs the constrained layout; the other formats reuse it.
        buf = io.BytesIO()
        result.figure.savefig(buf, format="png", dpi=PNG_DPI, metadata=meta["png"])
        result.figure.set_layout_engine("none")
        images[name] = buf.getvalue()
        written = []
        for f in formats:
            target = out / f"{name}.{f}"
            # every file under a temporary name, renamed into place (MetricsWriteError naming it)
            if f == "png":
                atomic_write(target, lambda tmp, png=images[name]: tmp.write_bytes(png))
            else:
                atomic_write(target, lambda tmp, f=f: result.figure.savefig(tmp, format=f, metadata=meta[f]))
            written.append(target)
        for tname, table in result.tables.items():
            target = out / "tables" / f"{name}__{tname}.csv"
            atomic_write(target, lambda tmp, table=table: table.to_csv(tmp, index=False))
            written.append(target)
        report.files[name] = written
    runs = runs_table(data)
    atomic_write(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
    rel = {name: [str(p.relative_to(out)) for p in paths if p.suffix != ".csv"] for name, paths in report.files.items()}
    page = render_html(data, report.figures, images, rel, report.missing, docs=dict(FIGURES))
    atomic_write_text(report.html, page)
    return report


def figure_description(result: FigureResult, prov: Provenance) -> str:
    """What the figure was run on and what its bands mean: the lines under its title."""
    return "\n".join(x for x in (prov.line(), result.bands) if x)


def stamp_figure(result: FigureResult, prov: Provenance) -> None:
    """Write the title, the provenance line and the meaning of the bands at the top of the figure,
    so the image stands alone (a figure's own suptitle is kept, as the second line)."""
    fig = result.figure
    own = fig.get_suptitle()
    width = max(60, int(fig.get_figwidth() * 15))  # characters per line at the small font
    lines = [result.title, own, *textwrap.wrap(prov.line(), width)]
    if result.bands:
        lines += textwrap.wrap(result.bands, width)
    text = "\n".join(x for x in lines if x)
    fig.suptitle(text, fontsize="small")
    fig.set_figheight(fig.get_figheight() + 0.17 * (text.count("\n") + 1))  # room for the block: the axes keep theirs


def make_report(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    formats: Iterable[str] = ("png", "pdf"),
) -> Path:
    """Write the report of the run or multirun at ``path`` into ``out`` (default ``path/report``).

    Draws each figure whose data is present (``figures.FIGURES``) as PNG and PDF (``formats``),
    writes its tables to ``tables/*.csv``, the run list to ``runs.csv`` and the HTML page
    ``index.html`` (figures embedded, nothing fetched over the network). Returns the HTML path.
    Raises ``NoRunsError`` (a ``FileNotFoundError``) when ``path`` holds no run.
    """
    return build_report(path, out=out, formats=formats).html
