"""The self-contained HTML page of a report: figures embedded as base64 PNG, tables inline, no
external resource (style sheet, script, font, image) so it opens offline."""

from __future__ import annotations

import base64
import html
import inspect
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from .data import ReportData
from .plotting import FigureResult
from .provenance import COLUMNS

LONG_TABLE = 25  # rows above which a table is folded into a <details> element

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
img.fig { max-width: 100%; height: auto; border: 1px solid #eee; }
table.t { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
table.t th, table.t td { padding: 0.2em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; }
table.t th { background: #f4f4f4; }
table.t td:first-child, table.t th:first-child { text-align: left; }
.skipped { color: #a33; } .note { color: #555; font-style: italic; }
details { margin: 0.5em 0; } summary { cursor: pointer; color: #345; }
pre.doc { white-space: pre-wrap; font-size: 0.85em; background: #f8f8f8; padding: 0.6em; }
"""


def _fmt_float(x: float) -> str:
    return f"{x:.4g}"


def table_html(df: pd.DataFrame, name: str = "") -> str:
    if df is None or df.empty:
        return f"<p class='note'>{html.escape(name)}: no rows.</p>"
    body = df.to_html(index=False, float_format=_fmt_float, na_rep="–", border=0, classes="t", escape=True)
    label = html.escape(name.replace("_", " "))
    if len(df) > LONG_TABLE:
        return f"<details><summary>table: {label} ({len(df)} rows)</summary>{body}</details>"
    return f"<h4>{label}</h4>{body}" if name else body


def _relative(run_dir: str, root: Path) -> str:
    try:
        rel = Path(run_dir).relative_to(root)
        return str(rel) if str(rel) != "." else Path(run_dir).name
    except ValueError:
        return run_dir


def page_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A table as the page shows it: the provenance columns (``provenance.COLUMNS``) that hold one
    value are left out, since the figure's header names it; the CSV files keep every column."""
    constant = [c for c in COLUMNS if c in df.columns and df[c].nunique(dropna=False) <= 1]
    return df.drop(columns=constant)


def runs_table(data: ReportData) -> pd.DataFrame:
    runs = data.runs.copy()
    runs.insert(0, "run", runs["run_dir"].map(lambda r: _relative(r, data.path)))
    runs["used"] = runs["used"].map({True: "yes", False: "no"})
    cols = ["run", "used", "reason", "status", "seed", "group", "rows", "first_step", "last_step", "missing_steps"]
    return runs[[c for c in cols if c in runs.columns]]


def render_html(
    data: ReportData,
    results: Sequence[FigureResult],
    images: Mapping[str, bytes],
    files: Mapping[str, Sequence[str]],
    missing: Mapping[str, str],
    docs: Mapping[str, object] | None = None,
) -> str:
    """The report page. ``images``: figure name -> PNG bytes; ``files``: figure name -> relative
    paths of its written files; ``missing``: figure name -> why it was not drawn; ``docs``:
    figure name -> the function that draws it (its docstring is shown)."""
    docs = docs or {}
    used, skipped = data.used, data.skipped
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>Plasticity report: {html.escape(str(data.path))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Plasticity report</h1>",
        f"<p class='meta'>Source: <code>{html.escape(str(data.path))}</code> &middot; generated {now} "
        f"&middot; plasticity-runner {html.escape(__version__)}</p>",
        f"<p>{len(data.runs)} run(s) found: <b>{len(used)} used</b>, "
        f"<span class='skipped'><b>{len(skipped)} skipped</b></span>. "
        f"Groups (equal config except the seed) are told apart by: "
        f"{html.escape(', '.join(data.group_keys) or 'nothing (one group)')}.</p>",
    ]
    if len(skipped):
        out.append("<ul class='skipped'>")
        for _, r in skipped.iterrows():
            out.append(f"<li>{html.escape(_relative(r['run_dir'], data.path))}: {html.escape(str(r['reason']))}</li>")
        out.append("</ul>")
    if "status" in used.columns:
        running = used[used["status"].isin(["running"])]
        if len(running):
            out.append(
                f"<p class='note'>{len(running)} used run(s) are still running; their numbers "
                "stop at their last pause (see last_step below).</p>"
            )
    out.append("<h2>Contents</h2><ul>")
    for r in results:
        out.append(f"<li><a href='#{r.name}'>{html.escape(r.title)}</a></li>")
    if missing:
        out.append("<li><a href='#not-drawn'>Figures not drawn</a></li>")
    out.append("<li><a href='#runs'>Runs</a></li></ul>")
    for r in results:
        out.append(f"<h2 id='{r.name}'>{html.escape(r.title)}</h2>")
        out.append(f"<p>{html.escape(r.caption)}</p>")
        for note in r.notes:
            out.append(f"<p class='note'>{html.escape(note)}</p>")
        if r.name in images:
            b64 = base64.b64encode(images[r.name]).decode("ascii")
            out.append(f"<img class='fig' alt='{html.escape(r.title)}' src='data:image/png;base64,{b64}'>")
        if files.get(r.name):
            links = " ".join(f"<a href='{html.escape(f)}'>{html.escape(f)}</a>" for f in files[r.name])
            out.append(f"<p class='meta'>Files: {links}</p>")
        for tname, df in r.tables.items():
            out.append(table_html(page_columns(df), tname))
        fn = docs.get(r.name)
        if fn is not None and inspect.getdoc(fn):
            out.append(
                f"<details><summary>what this figure shows and needs</summary>"
                f"<pre class='doc'>{html.escape(inspect.getdoc(fn))}</pre></details>"
            )
    if missing:
        out.append("<h2 id='not-drawn'>Figures not drawn</h2><ul>")
        for name, why in missing.items():
            out.append(f"<li><b>{html.escape(name)}</b>: {html.escape(why)}</li>")
        out.append("</ul>")
    out.append("<h2 id='runs'>Runs</h2>")
    out.append(runs_table(data).to_html(index=False, na_rep="–", border=0, classes="t", escape=True))
    out.append("</body></html>")
    return "\n".join(out)
