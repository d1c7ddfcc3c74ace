"""Figures and an HTML report of a run or multirun directory (``plasticity-report PATH``).

Each figure function takes the frame of ``plasticity_runner.metrics.load_sweep`` and returns a
``FigureResult`` (a matplotlib figure plus the tables of its numbers), or raises ``MissingData``
when the sweep lacks what the figure needs. ``make_report(path)`` draws all of them.
"""

from . import figures
from .builder import Report, build_report, make_report
from .data import NoRunsError, ReportData, load_report_data
from .figures import *  # noqa: F403  (the figures, their tables and helpers: figures.__all__)

# this package's own names, then the figures' (their functions, tables and helpers: figures.__all__)
__all__ = ["NoRunsError", "Report", "ReportData", "build_report", "load_report_data", "make_report"]
__all__ += figures.__all__
