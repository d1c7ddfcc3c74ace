"""The run's scalar objective for a Hydra sweeper (``objective=<phase>/<metric>@<reduction>``).

``plasticity-run`` returns it from its task function, so ``hydra/sweeper=optuna`` can optimise it
(docs/sweeps.md, "Optuna sweeps"). The spec names a metric of the run's parquet shards and how to reduce
its values over the steps it was recorded at:

- ``@last``: the value at the last step it was recorded (the default when ``@`` is left out);
- ``@mean``, ``@min``, ``@max``: over all recorded steps;
- ``@change``: the value at the last recorded step minus the value at the first; for
  ``probe/plasticity`` this is the plasticity loss P(T) - P(0) of eq. (5) (< 0: plasticity lost),
  the report's ``plasticity_loss``;
- ``@N`` (a number, e.g. ``@5000``): the value at training step N.

e.g. ``probe/plasticity@last``, ``probe/plasticity@change``, ``eval/human_normalized_score@last``.
A step written twice (a resumed run) counts once, the mean of its rows.

A diverged run (``run.json`` status ``diverged``) and a non-finite value in the reduced steps give
NaN, never an earlier finite value. A sweeper with a ``direction`` (Optuna) is handed the worst
value instead (``for_sweeper``: -inf when maximising, +inf when minimising), with a warning: the
trial is complete and ranked last, so the sampler learns to avoid it and a diverged configuration
is never the best unless every trial diverged, and then the best value is an infinity, not a
plausible number. (Optuna 2.10 refuses a NaN value, and hydra-optuna-sweeper 1.3 then stops the
whole study.) A spec naming a metric the run did not record, or a step
it did not reach, raises ``ObjectiveError`` with the names it has (the sweeper then fails that
trial, and the sweep by its ``max_failure_rate``).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics

log = logging.getLogger("plasticity_runner")

REDUCTIONS = ("last", "mean", "min", "max", "change")
_SPEC = re.compile(r"^(?P<phase>[A-Za-z0-9_.\-]+)/(?P<metric>[^@\s=]+)(?:@(?:(?P<step>\d+)|(?P<how>[A-Za-z_]+)))?$")


class ObjectiveError(ValueError):
    """The objective spec is malformed, or names a metric or step the run does not have."""


@dataclass(frozen=True)
class Objective:
    phase: str
    metric: str
    reduction: str = "last"  # one of REDUCTIONS, or "step"
    step: int | None = None  # the training step of ``@N``

    def __str__(self) -> str:
        at = str(self.step) if self.reduction == "step" else self.reduction
        return f"{self.phase}/{self.metric}@{at}"


def parse_objective(spec: str) -> Objective:
    """``"probe/plasticity@last"`` -> ``Objective("probe", "plasticity", "last")``; ``ObjectiveError``
    saying the expected form when ``spec`` is not ``<phase>/<metric>[@last|mean|min|max|change|N]``."""
    form = "<phase>/<metric>[@last|@mean|@min|@max|@change|@<step>], e.g. probe/plasticity@last"
    m = _SPEC.match(str(spec).strip())
    if not m:
        raise ObjectiveError(f"cannot parse {spec!r}: expected {form}")
    if m["step"] is not None:
        return Objective(m["phase"], m["metric"], "step", int(m["step"]))
    how = m["how"] or "last"
    if how not in REDUCTIONS:
        raise ObjectiveError(f"cannot parse {spec!r}: unknown reduction @{how}; expected {form}")
    return Objective(m["phase"], m["metric"], how)


def objective_value(run_dir: str | Path, spec: str | Objective) -> float:
    """The objective ``spec`` of the run in ``run_dir``, from its metric shards (see the module)."""
    obj = spec if isinstance(spec, Objective) else parse_objective(spec)
    run_dir = Path(run_dir)
    frame = metrics.load_run(run_dir)
    rows = frame[(frame["phase"] == obj.phase) & (frame["metric"] == obj.metric)]
    if rows.empty:
        have = sorted({f"{p}/{m}" for p, m in zip(frame["phase"], frame["metric"])})
        raise ObjectiveError(
            f"objective {obj}: the run in {run_dir} recorded no {obj.phase}/{obj.metric}; "
            f"it has {', '.join(have) if have else 'no metrics'}"
        )
    if metrics.load_run_metadata(run_dir).get("status") == "diverged":
        return math.nan
    per_step = rows.groupby("step", sort=True)["value"].mean()
    if obj.reduction == "step":
        if obj.step not in per_step.index:
            raise ObjectiveError(
                f"objective {obj}: the run in {run_dir} recorded {obj.phase}/{obj.metric} "
                f"at steps {per_step.index.tolist()}, not at {obj.step}"
            )
        values = per_step.loc[[obj.step]].to_numpy(float)
    elif obj.reduction == "last":
        values = per_step.iloc[-1:].to_numpy(float)
    elif obj.reduction == "change":
        if len(per_step) < 2:
            raise ObjectiveError(
                f"objective {obj}: the run in {run_dir} recorded {obj.phase}/{obj.metric} "
                f"at one step only ({per_step.index.tolist()}); @change needs two"
            )
        values = per_step.iloc[[0, -1]].to_numpy(float)
    else:
        values = per_step.to_numpy(float)
    if not np.isfinite(values).all():
        return math.nan
    return float(
        {
            "last": values[-1],
            "step": values[-1],
            "mean": values.mean(),
            "min": values.min(),
            "max": values.max(),
            "change": values[-1] - values[0],
        }[obj.reduction]
    )


def for_sweeper(value: float, direction: object | None) -> float:
    """The value handed to a sweeper optimising in ``direction`` (``maximize``/``minimize``, an
    Optuna ``Direction``, a one-element list of either, or None for a sweeper without one): a NaN
    becomes the worst value of the direction, -inf or +inf (see the module); otherwise unchanged."""
    if not math.isnan(value) or direction is None:
        return value
    if isinstance(direction, (list, tuple)) or type(direction).__name__ == "ListConfig":
        if len(direction) != 1:
            raise ObjectiveError(f"the run returns one objective, but the sweeper has {len(direction)} directions")
        direction = direction[0]
    name = str(getattr(direction, "name", direction)).lower()
    if name not in ("maximize", "minimize"):
        raise ObjectiveError(f"unknown sweeper direction {direction!r} (expected maximize or minimize)")
    worst = -math.inf if name == "maximize" else math.inf
    log.warning(
        "objective is NaN (the run diverged or its value is not finite): the sweeper gets %s, "
        "the worst value when it is to %s",
        worst,
        name,
    )
    return worst
