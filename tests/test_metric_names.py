"""The names the report keys on come from the modules that write them: every metric and array a
figure reads (``report/names.py``) is declared by a producer, so renaming a metric there cannot
silently drop it from the figures."""

from __future__ import annotations

from collections import defaultdict

import pytest

from plasticity_runner import evaluation, registry, trainer
from plasticity_runner.case_studies import brownian, memorization
from plasticity_runner.metrics import load_run
from plasticity_runner.probes import dynamics, statistics
from plasticity_runner.probes.base import undeclared
from plasticity_runner.report import names as N
from plasticity_runner.trainer import train

from .conftest import make_cfg


def declared_scalars() -> dict[str, tuple[str, ...]]:
    """phase -> the name patterns its producers declare: every registered diagnostic, the dynamics'
    log-point metrics, the trainer's own log-point metrics and evaluation, and the case studies."""
    out: dict[str, list[str]] = defaultdict(list)
    for part in registry.parts("diagnostic").values():
        d = part.build()
        out[d.phase].extend(d.scalars)
    out[dynamics.LOG_POINT_PHASE].extend(dynamics.LOG_POINT_SCALARS)
    out[trainer.TRAIN_PHASE].extend(trainer.LOG_POINT_SCALARS)
    out[evaluation.PHASE].extend(evaluation.SCALARS)
    out[memorization.PHASE].extend(memorization.SCALARS)
    for process in brownian.PROCESSES:
        out[process].extend(brownian.SCALARS)
    return {phase: tuple(names) for phase, names in out.items()}


def declared_arrays() -> tuple[str, ...]:
    out = [a for part in registry.parts("diagnostic").values() for a in part.build().arrays]
    return (*out, *(N.process_array(p, a) for p in brownian.PROCESSES for a in brownian.ARRAYS))


def undeclared_figure_metrics() -> list[tuple[str, str]]:
    declared = declared_scalars()
    return sorted(
        (phase, metric)
        for phase, metric in N.figure_metrics()
        if (phase, metric) not in N.TRAINER_METRICS and undeclared(declared.get(phase, ()), [metric])
    )


def test_every_metric_a_figure_reads_is_declared_by_its_producer():
    assert N.figure_metrics() >= set(N.STATISTICS.values()) | {N.PROBE_LOSS, N.HESSIAN_TOP_EIG}
    assert undeclared_figure_metrics() == []


def test_every_array_a_figure_reads_is_declared_by_its_producer():
    assert N.figure_arrays() and not undeclared(declared_arrays(), N.figure_arrays())


def test_the_phases_the_stats_figure_draws_whole_are_diagnostics_phases():
    phases = {part.build().phase for part in registry.parts("diagnostic").values()}
    assert {N.STATS_PHASE, N.DYNAMICS_PHASE} <= phases


def test_a_metric_renamed_by_its_producer_is_caught(monkeypatch):
    """The check can fail: a statistic that stops being declared (renamed in ``statistics.py``
    but not followed by the report) is reported."""
    renamed = tuple(n for n in statistics.Statistics.scalars if n != statistics.PARAM_NORM) + ("param_l2_norm",)
    monkeypatch.setattr(statistics.Statistics, "scalars", renamed)
    assert (N.STATS_PHASE, statistics.PARAM_NORM) in undeclared_figure_metrics()


@pytest.fixture(scope="module")
def run_rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    train(make_cfg([]), d)
    return load_run(d)


def test_what_the_report_reads_from_a_dqn_run_is_in_one(run_rows):
    """A tiny run with the default diagnostics writes every figure metric of its phases (the
    trainer's own log-point metrics included, which it does not declare yet)."""
    written = set(zip(run_rows.phase, run_rows.metric))
    dqn_phases = {part.build().phase for part in registry.parts("diagnostic").values()} | {"train"}
    wanted = {(phase, metric) for phase, metric in N.figure_metrics() if phase in dqn_phases}
    assert set(N.TRAINER_METRICS) <= wanted
    assert wanted <= written, sorted(wanted - written)
