"""Run the laptop-scale presets (``configs/experiment/*_quick.yaml``) and redraw every figure of
docs/reproduction.md from them, in one command.

    python scripts/reproduce.py                 # every finding: runs, reports, figures into docs/
    python scripts/reproduce.py --only fig1_quick fig4_quick
    python scripts/reproduce.py --report-only   # redraw from the runs already on disk
    python scripts/reproduce.py --dry-run       # print the commands, run nothing

Each finding is one Hydra multirun of its preset (1 torch thread by default, runs one after the
other) into ``<runs-dir>/<preset>/``, then ``plasticity-report`` on that directory, then its
figures and their CSV tables copied to ``<docs-dir>/<preset>/``, then the tables of
docs/reproduction.md rewritten from those CSVs (``reproduction_tables.py``: no number of the doc is
typed by hand). A run resumes from its directory, so an interrupted reproduction continues where it
stopped when started again.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduction_tables  # noqa: E402  (the doc's tables, beside this script)


@dataclass(frozen=True)
class Finding:
    preset: str  # configs/experiment/<preset>.yaml
    figures: tuple[str, ...]  # report figures (file stems) that docs/reproduction.md shows
    claim: str  # the paper's claim, one line


FINDINGS = (
    Finding(
        "fig1_quick",
        ("figure1_optimizer_instability",),
        "Figure 1: under label re-randomisation default Adam loses units and accuracy; a tuned Adam does not.",
    ),
    Finding(
        "fig2_quick",
        ("figure2_brownian",),
        "Figure 2: gradient descent, unlike a random walk of the same step sizes, sharpens the Hessian "
        "and makes gradients interfere.",
    ),
    Finding(
        "fig4_quick",
        ("figure4_probe_curves", "plasticity_over_training"),
        "Figure 4: later checkpoints fit new targets more slowly (flatter curves), not to higher plateaus.",
    ),
    Finding(
        "fig5_quick",
        ("figure5_width", "interval_estimates"),
        "Figure 5: wider networks lose less plasticity, but none loses none.",
    ),
    Finding(
        "fig6_quick",
        ("figure6_interventions", "figure10_11_probe_loss", "interval_estimates", "figure12_13_returns"),
        "Figure 6: layer norm, resetting the last layer and the two-hot head reduce plasticity loss; "
        "shrink and perturb, weight decay and resetting the optimizer do not.",
    ),
)


def commands(finding: Finding, runs_dir: Path, threads: int, report_only: bool) -> list[list[str]]:
    """The run and the report command of one finding."""
    sweep = runs_dir / finding.preset
    run = [
        sys.executable,
        "-m",
        "plasticity_runner",
        "-m",
        f"experiment={finding.preset}",
        f"torch_threads={threads}",
        "device=cpu",
        "progress=log",
        f"hydra.sweep.dir={sweep}",
    ]
    report = [
        sys.executable,
        "-m",
        "plasticity_runner.report.cli",
        str(sweep),
        "--formats",
        "png",
        "--out",
        str(sweep / "report"),
    ]
    return ([] if report_only else [run]) + [report]


def copy_figures(finding: Finding, runs_dir: Path, docs_dir: Path) -> list[str]:
    """Copy the finding's PNGs and tables into ``docs_dir/<preset>/``; returns the figures missing."""
    src, dst = runs_dir / finding.preset / "report", docs_dir / finding.preset
    dst.mkdir(parents=True, exist_ok=True)
    missing = []
    for name in finding.figures:
        png = src / f"{name}.png"
        if png.exists():
            shutil.copy2(png, dst / png.name)
            for table in (src / "tables").glob(f"{name}__*.csv"):
                shutil.copy2(table, dst / table.name)
        else:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        nargs="+",
        metavar="PRESET",
        choices=[f.preset for f in FINDINGS],
        help="these findings only (default: all)",
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "multirun" / "reproduce",
        help="where the sweeps go (default: multirun/reproduce, git-ignored)",
    )
    p.add_argument(
        "--docs-dir",
        type=Path,
        default=ROOT / "docs" / "reproduction",
        help="where the figures of docs/reproduction.md go (default: docs/reproduction)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument(
        "--doc",
        type=Path,
        default=reproduction_tables.DOC,
        help="the page whose tables are rewritten from the CSVs (default: docs/reproduction.md)",
    )
    p.add_argument("--report-only", action="store_true", help="redraw from the runs on disk; run nothing")
    p.add_argument(
        "--tables-only",
        action="store_true",
        help="only rewrite the doc's tables from the CSVs under --docs-dir; run and draw nothing",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands and the figures, run nothing")
    args = p.parse_args(argv)
    findings = [f for f in FINDINGS if not args.only or f.preset in args.only]
    failed = []
    if args.tables_only:
        findings = []
    for finding in findings:
        cmds = commands(finding, args.runs_dir, args.threads, args.report_only)
        if args.dry_run:
            print(f"# {finding.claim}")
            for cmd in cmds:
                print(shlex.join(cmd))
            print(f"# then copy {', '.join(finding.figures)} to {args.docs_dir / finding.preset}/")
            continue
        for cmd in cmds:
            print("+", shlex.join(cmd), flush=True)
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            if rc != 0:  # a failed run fails alone (the summary sweeper): draw what the others gave
                print(f"reproduce: {finding.preset}: exit status {rc}", file=sys.stderr)
                failed.append(finding.preset)
        missing = copy_figures(finding, args.runs_dir, args.docs_dir)
        if missing:
            print(f"reproduce: {finding.preset}: not drawn: {', '.join(missing)}", file=sys.stderr)
    if args.dry_run:
        print(f"# then rewrite the tables of {args.doc} from {args.docs_dir}/*/*.csv")
        return 0
    try:
        changed = reproduction_tables.write_doc(args.doc, args.docs_dir)
    except reproduction_tables.TableError as exc:
        print(f"reproduce: the tables of {args.doc} were not rewritten: {exc}", file=sys.stderr)
        return 1
    print(f"reproduce: tables of {args.doc} {'rewritten' if changed else 'unchanged'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
