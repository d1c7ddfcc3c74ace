"""``plasticity-report PATH``: the report of a run or multirun directory (see docs/report.md)."""

from __future__ import annotations

import argparse
import sys

from ..metrics import MetricsWriteError
from .builder import FORMATS, REPORT_DIR, build_report
from .data import NoRunsError
from .figures import FIG3_Y


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plasticity-report",
        description="Draw the figures of Lyle et al. (2023) from a run or multirun directory and "
        f"write them, their tables and one self-contained HTML page into PATH/{REPORT_DIR}/.",
    )
    p.add_argument("path", metavar="PATH", help="a run directory or a multirun directory holding runs")
    p.add_argument("--out", metavar="DIR", default=None, help=f"output directory (default: PATH/{REPORT_DIR})")
    p.add_argument(
        "--formats",
        default="png,pdf",
        help=f"comma-separated figure file formats among {','.join(FORMATS)} (default: png,pdf); "
        "the HTML page always embeds PNG",
    )
    p.add_argument(
        "--fig3-y",
        choices=list(FIG3_Y),
        default="plasticity_loss",
        help="y axis of figure 3: plasticity_loss = P(T) - P(0) per run, the paper's "
        "quantity (default), or plasticity = P(T) at the last probe pause",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    prog = "plasticity-report"
    try:
        report = build_report(
            args.path,
            out=args.out,
            formats=args.formats.split(","),
            figure_options={"figure3_falsification": {"y": args.fig3_y}},
        )
    except NoRunsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except MetricsWriteError as exc:  # the report's files cannot be written (full disk, permission)
        print(f"{prog}: error writing the report: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    data = report.data
    err = sys.stderr
    print(f"{prog}: {len(data.runs)} run(s) found, {len(data.used)} used, {len(data.skipped)} skipped", file=err)
    for _, r in data.skipped.iterrows():
        print(f"  skipped {r['run_dir']}: {r['reason']}", file=err)
    if data.frame.empty:
        print(f"{prog}: warning: no run has metrics yet; the report lists the runs only", file=err)
    for fig in report.figures:
        print(f"  drew {fig.name}", file=err)
    for name, why in report.missing.items():
        print(f"  not drawn {name}: {why}", file=err)
    print(report.html)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
