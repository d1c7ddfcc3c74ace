"""Interval estimates across seeds (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical
Precipice", the ``rliable`` package): IQM and mean with stratified-bootstrap confidence intervals,
performance profiles and the probability of improvement.

The statistics are rliable's own functions (``rliable.metrics``: ``aggregate_iqm``,
``aggregate_mean``, ``probability_of_improvement``), applied to each bootstrap resample. The
resampling is not rliable's: ``rliable.library`` does not import on the current stack (rliable
1.2.0 pins ``arch<8``, pip resolves arch 7.2, and arch 7.2 does not import under pandas 3), and
it draws its resamples from the global ``np.random`` whatever seed it is given. The intervals come
from ``scipy.stats.bootstrap``: each task's runs are one sample, resampled with replacement
independently of the other tasks' (rliable's stratified bootstrap), the percentile interval
(rliable's default), 95 %, 2000 resamples, from a fixed seed. The performance profile's
fraction of runs above tau is written here (rliable's lives in ``rliable.library``).

Small n (``MIN_INTERVAL_N``, ``MIN_IQM_N``): a percentile bootstrap interval of n runs covers the
truth less often than it claims when n is small (normal scores, 95 % nominal: about 76 % at n = 3,
83 % at n = 5, 90 % at n = 10); with n <= 3 every resample lies between the smallest and largest
score, so the "interval" is the range of the data. Below ``MIN_INTERVAL_N`` runs the tables and
the figure show the range of the runs' scores (min, max) and say so (``interval`` column:
``n = 3: range shown``); the fraction-above and probability-of-improvement intervals are refused
(NaN) with the reason. The IQM trims floor(n / 4) runs from each end, nothing below
``MIN_IQM_N`` = 4, where it is the mean: it is refused (NaN) there.

A score matrix here is a list of per-task 1-D arrays of run scores (seeds); tasks may have
different numbers of runs. Atari: tasks are games, scores human-normalised; classification: one
task, the scores are each run's change in probe loss (figure 6) or plasticity loss P(T) - P(0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from rliable import metrics as rly  # numpy / scipy only; rliable.library (arch) is never imported
from scipy import stats

from . import names as N
from .data import natural_key, series, with_config
from .plotting import (
    PROBE_LOSS_UNIT,
    FigureResult,
    MissingData,
    local_groups,
    new_figure,
    palette,
    plasticity_loss,
    probe_loss_change,
)

REPS = 2000  # bootstrap resamples (rliable's default)
CONFIDENCE = 0.95  # coverage of the intervals
BOOTSTRAP_SEED = 0  # seed of the resampling: the report's numbers do not change between builds
PROFILE_TAUS = np.linspace(0.0, 2.0, 21)  # human-normalised score thresholds of the profile
ATARI_LAST_N = 5  # a run's Atari score: the mean of its last 5 human-normalised evaluations (figure 7)
MIN_INTERVAL_N = 10  # fewest runs (over all tasks) for a bootstrap interval; below: the range, said so
MIN_IQM_N = 4  # fewest runs for an IQM: below, the 25 % trimmed mean trims nothing (it is the mean)

Tasks = Sequence[np.ndarray]


# ------------------------------------------------------------------------------ statistics


def iqm(tasks: Tasks) -> float:
    """Interquartile mean over all run-task scores: the mean of the middle 50 % after pooling
    every task's runs (rliable ``aggregate_iqm``, on the pooled scores)."""
    return float(rly.aggregate_iqm(np.concatenate([np.asarray(t, float) for t in tasks])))


def mean(tasks: Tasks) -> float:
    """Mean over tasks of each task's mean over runs (rliable ``aggregate_mean`` per task: its
    score matrix must be rectangular, and tasks here may have different numbers of runs)."""
    return float(np.mean([rly.aggregate_mean(np.asarray(t, float)[:, None]) for t in tasks]))


def fraction_above(tau: float) -> Callable[..., float]:
    """Performance profile at ``tau``: the fraction of all run-task scores above ``tau``
    (rliable's run-score distribution, ``rliable.library``, which does not import: see above)."""

    def statistic(tasks: Tasks) -> float:
        return float(np.mean(np.concatenate([np.asarray(t, float) for t in tasks]) > tau))

    return statistic


def probability_of_improvement(x: Tasks, y: Tasks) -> float:
    """P(X > Y): per task, the probability that a run of X scores above a run of Y (ties count
    one half; the Mann-Whitney U statistic over n_x n_y), averaged over tasks (rliable
    ``probability_of_improvement`` per task, as rliable averages them)."""
    return float(
        np.mean(
            [
                rly.probability_of_improvement(np.asarray(xt, float)[:, None], np.asarray(yt, float)[:, None])
                for xt, yt in zip(x, y, strict=True)
            ]
        )
    )


def _finite(tasks: Tasks) -> list[np.ndarray]:
    out = [np.asarray(t, float) for t in tasks]
    bad = sum(int((~np.isfinite(t)).sum()) for t in out)
    if bad:
        raise ValueError(f"{bad} non-finite score(s): leave diverged runs out before bootstrapping")
    if not out or any(len(t) == 0 for t in out):
        raise ValueError("every task needs at least one run")
    return out


def interval(
    statistic: Callable[..., float],
    *samples: Tasks,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic`` of the score matrices ``samples`` and its percentile
    stratified-bootstrap interval (each task's runs of each matrix resampled independently).
    No small-n rule here: the tables apply it (``small_n``)."""
    groups = [_finite(s) for s in samples]
    sizes = [len(g) for g in groups]
    flat = [t for g in groups for t in g]
    point = float(statistic(*groups))

    # A task with one run is the same under every resample (scipy needs two or more to resample):
    # it is held fixed.
    moving = [i for i, t in enumerate(flat) if len(t) > 1]
    if not moving:  # nothing to resample: the interval is the point
        return point, point, point

    def stat(*resampled):
        full = list(flat)
        for i, r in zip(moving, resampled):
            full[i] = r
        parts, i = [], 0
        for n in sizes:
            parts.append(full[i : i + n])
            i += n
        return statistic(*parts)

    res = stats.bootstrap(
        [flat[i] for i in moving],
        stat,
        n_resamples=reps,
        vectorized=False,
        paired=False,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def small_n(n: int) -> str:
    """The ``interval`` column of a table row of ``n`` runs: what its low / high are."""
    if n >= MIN_INTERVAL_N:
        return f"n = {n}: {int(CONFIDENCE * 100)}% percentile stratified bootstrap"
    text = f"n = {n}: range shown (fewer than {MIN_INTERVAL_N} runs: no bootstrap interval)"
    if n < MIN_IQM_N:
        text += f"; IQM refused (fewer than {MIN_IQM_N} runs: it would be the mean)"
    return text


def aggregate_row(tasks: Tasks, **kw) -> dict[str, float]:
    """IQM and mean of one score matrix with their intervals, its run count and what the
    intervals are: the bootstrap from ``MIN_INTERVAL_N`` runs up, below it the range of the
    runs' scores (both statistics lie in it); the IQM is NaN below ``MIN_IQM_N`` runs."""
    tasks = _finite(tasks)
    n = int(sum(len(t) for t in tasks))
    if n >= MIN_INTERVAL_N:
        i, il, ih = interval(iqm, tasks, **kw)
        m, ml, mh = interval(mean, tasks, **kw)
    else:
        pooled = np.concatenate(tasks)
        lo, hi = float(pooled.min()), float(pooled.max())
        i, il, ih = iqm(tasks), lo, hi
        m, ml, mh = mean(tasks), lo, hi
    if n < MIN_IQM_N:
        i, il, ih = np.nan, np.nan, np.nan
    return {
        "runs": n,
        "tasks": len(tasks),
        "iqm": i,
        "iqm_low": il,
        "iqm_high": ih,
        "mean": m,
        "mean_low": ml,
        "mean_high": mh,
        "interval": small_n(n),
    }


# ------------------------------------------------------------------------------ tables


def _per_run_rows(values: pd.DataFrame, keys: list[str]) -> list[dict]:
    """Rows of ``aggregate_row`` per combination of ``keys`` over one-task per-run ``value``s; runs
    with a non-finite value are counted (``nonfinite``) and left out of the estimates."""
    rows = []
    for combo, g in values.groupby(keys, sort=True, dropna=False):
        combo = combo if isinstance(combo, tuple) else (combo,)
        v = g["value"].to_numpy(float)
        ok = v[np.isfinite(v)]
        row = dict(zip(keys, combo))
        row.update({"runs": len(ok), "tasks": 1} if not len(ok) else aggregate_row([ok]))
        row["nonfinite"] = int(len(v) - len(ok))
        rows.append(row)
    return rows


def plasticity_loss_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Per report group: IQM and mean over seeds of the plasticity loss P(T) - P(0) (eq. 5) with
    stratified-bootstrap 95 % intervals (one task: the seeds are the runs)."""
    frame = frame if "group" in frame.columns else local_groups(frame)
    ploss = plasticity_loss(frame)
    if ploss.empty:
        return pd.DataFrame()
    ploss = with_config(ploss, frame, [])
    rows = _per_run_rows(ploss, ["group"])
    return pd.DataFrame(sorted(rows, key=lambda r: natural_key(r["group"])))


def probe_loss_change_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 6 with intervals: per dataset, architecture and intervention, IQM and mean over seeds
    of probe_loss(last pause) - probe_loss(first pause), with stratified-bootstrap 95 % intervals."""
    frame = frame[frame[N.ENV] == N.ENV_CLASSIFICATION] if N.ENV in frame.columns else frame
    if N.ARCH not in frame.columns:
        return pd.DataFrame()
    ch = with_config(probe_loss_change(frame), frame, [N.DATASET, N.ARCH, N.INTERVENTIONS])
    if ch.empty:
        return pd.DataFrame()
    ch[N.INTERVENTIONS] = ch[N.INTERVENTIONS].fillna(N.NO_INTERVENTION).astype(str)
    ch[N.DATASET] = ch[N.DATASET].astype(str)
    rows = _per_run_rows(ch, [N.DATASET, N.ARCH, N.INTERVENTIONS])
    return pd.DataFrame(rows).rename(
        columns={N.DATASET: "dataset", N.ARCH: "architecture", N.INTERVENTIONS: "intervention"}
    )


def atari_scores(frame: pd.DataFrame, last_n: int = ATARI_LAST_N) -> dict[str, dict[str, np.ndarray]]:
    """``{intervention: {game: run scores}}``: a run's score is the mean of its last ``last_n``
    finite ``eval/human_normalized_score`` values (as figure 7)."""
    if N.ENV in frame.columns:
        frame = frame[frame[N.ENV] == N.ENV_ATARI]
    if N.GAME not in frame.columns:
        return {}
    s = series(frame, N.HUMAN_NORMALIZED_SCORE)
    if s.empty:
        return {}
    score = s.groupby("run_dir")["value"].apply(lambda v: float(v.tail(last_n).mean()))
    runs = with_config(score.rename("score").reset_index(), frame, [N.GAME, N.INTERVENTIONS])
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION).astype(str)
    out: dict[str, dict[str, np.ndarray]] = {}
    for (interv, game), g in runs.groupby([N.INTERVENTIONS, N.GAME], sort=True):
        out.setdefault(interv, {})[str(game)] = g["score"].to_numpy(float)
    return out


def atari_intervals(scores: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per intervention: IQM and mean human-normalised score over games and seeds, with
    stratified-bootstrap 95 % intervals (runs resampled within each game)."""
    rows = []
    for interv, games in scores.items():
        row = {"intervention": interv, "games": ", ".join(sorted(games, key=natural_key))}
        row.update(aggregate_row(list(games.values())))
        rows.append(row)
    return pd.DataFrame(rows)


def performance_profiles(scores: dict[str, dict[str, np.ndarray]], taus: np.ndarray = PROFILE_TAUS) -> pd.DataFrame:
    """Per intervention and threshold tau: the fraction of runs (over games and seeds) whose
    human-normalised score is above tau, with its stratified-bootstrap 95 % interval."""
    rows = []
    for interv, games in scores.items():
        tasks = list(games.values())
        n = int(sum(len(t) for t in tasks))
        for tau in taus:
            if n >= MIN_INTERVAL_N:
                p, lo, hi = interval(fraction_above(float(tau)), tasks)
            else:  # no interval below MIN_INTERVAL_N: a range of a fraction means nothing
                p, lo, hi = fraction_above(float(tau))(tasks), np.nan, np.nan
            rows.append(
                {
                    "intervention": interv,
                    "tau": float(tau),
                    "fraction_above": p,
                    "low": lo,
                    "high": hi,
                    "runs": n,
                    "interval": small_n(n)
                    if n >= MIN_INTERVAL_N
                    else f"n = {n}: refused (fewer than {MIN_INTERVAL_N} runs)",
                }
            )
    return pd.DataFrame(rows)


def improvement_table(
    scores: dict[str, dict[str, np.ndarray]], x: str = N.LAYER_NORM, y: str = N.NO_INTERVENTION
) -> pd.DataFrame:
    """Figure 7 pair: P(``x`` > ``y``) over the games both have, with its stratified-bootstrap 95 %
    interval (each method's runs resampled independently within each game)."""
    if x not in scores or y not in scores:
        return pd.DataFrame()
    games = sorted(set(scores[x]) & set(scores[y]), key=natural_key)
    if not games:
        return pd.DataFrame()
    tx, ty = [scores[x][g] for g in games], [scores[y][g] for g in games]
    n = min(sum(len(t) for t in tx), sum(len(t) for t in ty))
    if n >= MIN_INTERVAL_N:
        p, lo, hi = interval(probability_of_improvement, tx, ty)
        why = small_n(n)
    else:
        p, lo, hi = probability_of_improvement(tx, ty), np.nan, np.nan
        why = f"n = {n}: refused (fewer than {MIN_INTERVAL_N} runs of each method)"
    return pd.DataFrame(
        [
            {
                "x": x,
                "y": y,
                "games": len(games),
                "runs_x": sum(len(t) for t in tx),
                "runs_y": sum(len(t) for t in ty),
                "probability_of_improvement": p,
                "low": lo,
                "high": hi,
                "interval": why,
            }
        ]
    )


# ------------------------------------------------------------------------------ figure


def _interval_panel(ax, table: pd.DataFrame, label_cols: list[str], title: str, xlabel: str) -> None:
    t = table[table["runs"] > 0].reset_index(drop=True)
    small = (t["runs"] < MIN_INTERVAL_N).to_numpy()
    labels = [
        ", ".join(str(r[c]) for c in label_cols)
        + f"\n(n = {int(r['runs'])}"
        + (": range shown)" if r["runs"] < MIN_INTERVAL_N else ")")
        for _, r in t.iterrows()
    ]
    y = np.arange(len(t))
    for k, (col, color) in enumerate((("iqm", "tab:blue"), ("mean", "tab:orange"))):
        off = 0.18 * (1 - 2 * k)
        for rows, style in ((~small, "-"), (small, ":")):  # a range is dotted, a bootstrap interval solid
            if not rows.any():
                continue
            tr = t[rows]
            bars = ax.errorbar(
                tr[col],
                y[rows] + off,
                xerr=[tr[col] - tr[f"{col}_low"], tr[f"{col}_high"] - tr[col]],
                fmt="o",
                color=color,
                capsize=3,
                label=(col.upper() if col == "iqm" else "mean") + (" (range)" if style == ":" else ""),
            )
            bars[-1][0].set_linestyle(style)
    ax.set_yticks(y, labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_title(title, fontsize="small")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="x-small", frameon=False)


def figure_interval_estimates(frame: pd.DataFrame) -> FigureResult:
    """IQM and mean with 95 % stratified-bootstrap intervals across seeds (Agarwal et al., 2021):
    the plasticity loss per group, the figure-6 change in probe loss, and on Atari the aggregate
    human-normalised score, its performance profile and P(layer norm > none)."""
    tables: dict[str, pd.DataFrame] = {}
    for name, fn in (
        ("plasticity_loss", plasticity_loss_intervals),
        ("probe_loss_change", probe_loss_change_intervals),
    ):
        t = fn(frame)
        if len(t):
            tables[name] = t
    scores = atari_scores(frame)
    if scores:
        tables["atari_hns"] = atari_intervals(scores)
        tables["performance_profile"] = performance_profiles(scores)
        pi = improvement_table(scores)
        if len(pi):
            tables["probability_of_improvement"] = pi
    if not tables:
        raise MissingData(
            "needs probe/plasticity or probe/probe_loss at two or more pauses, or atari runs "
            "with env.game and eval/human_normalized_score"
        )
    panels = [k for k in ("plasticity_loss", "probe_loss_change", "atari_hns", "performance_profile") if k in tables]
    rows = max([len(tables[k]) for k in panels if k != "performance_profile"] or [4])
    fig = new_figure(4.8 * len(panels), 0.3 * rows + 2.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels):
        t = tables[key]
        if key == "plasticity_loss":
            _interval_panel(
                ax, t, ["group"], "plasticity loss P(T) - P(0) across seeds", f"P(T) - P(0) ({PROBE_LOSS_UNIT})"
            )
        elif key == "probe_loss_change":
            _interval_panel(
                ax,
                t,
                ["dataset", "architecture", "intervention"],
                "figure 6: change in probe loss across seeds",
                f"probe loss, last - first pause ({PROBE_LOSS_UNIT})",
            )
        elif key == "atari_hns":
            _interval_panel(
                ax, t, ["intervention"], "Atari: human-normalised score", "human-normalised score (1 = human)"
            )
        else:
            interventions = list(dict.fromkeys(t["intervention"]))
            for color, interv in zip(palette(len(interventions)), interventions):
                s = t[t["intervention"] == interv]
                ax.plot(s["tau"], s["fraction_above"], color=color, label=interv)
                ax.fill_between(s["tau"], s["low"], s["high"], color=color, alpha=0.2, lw=0)  # NaN (small n): none
            ax.set_xlabel("human-normalised score tau")
            ax.set_ylabel("fraction of runs with score > tau")
            ax.set_title("performance profile", fontsize="small")
            ax.legend(fontsize="x-small", frameon=False)
    notes = [
        f"Intervals: percentile stratified bootstrap, {REPS} resamples, {int(CONFIDENCE * 100)} %, "
        f"seed {BOOTSTRAP_SEED} (scipy.stats.bootstrap over rliable.metrics' statistics), from "
        f"{MIN_INTERVAL_N} runs up. Below {MIN_INTERVAL_N} runs a row shows the range of its runs (min, max) "
        f"instead, dotted, and says so in its `interval` column; below {MIN_IQM_N} runs the IQM is refused "
        "(it would be the mean). Runs with a non-finite value are counted in `nonfinite` and left out."
    ]
    if "probability_of_improvement" in tables:
        r = tables["probability_of_improvement"].iloc[0]
        notes.append(
            f"P({r['x']} > {r['y']}) = {r['probability_of_improvement']:.3f} "
            f"[{r['low']:.3f}, {r['high']:.3f}] over {int(r['games'])} game(s) ({r['interval']})."
        )
    return FigureResult(
        name="interval_estimates",
        title="Interval estimates across seeds (IQM, mean, performance profile, probability of improvement)",
        caption="Interquartile mean and mean with 95 % stratified-bootstrap confidence intervals across "
        "seeds (Agarwal et al., 2021).",
        figure=fig,
        tables=tables,
        notes=notes,
        bands=f"whisker: {int(CONFIDENCE * 100)}% percentile stratified-bootstrap interval from n = {MIN_INTERVAL_N} "
        f"runs up; below, dotted: the range (min-max) of the runs; n per row on the axis",
    )
