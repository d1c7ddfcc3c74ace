"""Figure 3: plasticity loss against four network statistics; sign flips falsify them as causes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .. import names as N
from ..data import (
    first_row,
    last_row,
    natural_key,
    select,
    series,
)
from ..plotting import (
    FigureResult,
    MissingData,
    new_figure,
    palette,
    pearson,
    run_name,
    sign,
)

FIG3_COLOR_KEYS = (N.ENV, N.DATASET, N.TASK)
FIG3_CONFIG_KEYS = (N.DATASET, N.TASK, N.ARCH, N.OPTIMIZER)  # config columns copied onto each point
FIG3_Y = {  # y axis of figure 3: name -> axis label
    "plasticity_loss": "plasticity loss P(T) - P(0)\n(squared Q units; < 0: plasticity lost)",
    "plasticity": "plasticity P(T) = b - probe loss\n(squared Q units)",
}
FIG3_UNITS = {
    "weight norm": "L2 norm of all parameters",
    "feature rank": "count of dimensions",
    "weight rank": "count of singular values, mean over layers",
    "dead units": "fraction",
}
# Fewest points a Pearson r of the figure is read at: below it, a correlation and any sign flip
# built on it is flagged (``reliable`` = False), and the figure is not drawn when no correlation
# reaches it. With n = 10, |r| must exceed 0.63 for p < 0.05; with n = 3 a random |r| > 0.9 has
# probability 0.29, so signs from three points are noise.
FIG3_MIN_N = 10
# The two contrasts of section 5.2 / the caption of figure 3: name -> (the config key whose values
# are the groups, the statistics the paper says flip sign along it). Every statistic is tested along
# both; ``paper`` marks the pairs the paper names.
FIG3_CONTRASTS = {
    "observation space": (N.DATASET, ("weight norm", "weight rank")),
    "reward structure": (N.TASK, ("feature rank", "dead units")),
}


def falsification_points(
    frame: pd.DataFrame,
    statistics: Mapping[str, tuple[str, str]] | None = None,
    y: str = "plasticity_loss",
    color_keys: Iterable[str] = FIG3_COLOR_KEYS,
) -> pd.DataFrame:
    """Figure 3 points: one per run and statistic.

    ``plasticity`` is the run's plasticity loss ``P(T) - P(0)`` (``y="plasticity_loss"``, the
    default; section 2.2, with ``P = probe/plasticity = b - probe loss`` of eq. 5, so a negative
    value is plasticity lost) with ``T`` its last probe pause, or ``P(T)`` itself
    (``y="plasticity"``). ``value`` is the statistic at the step nearest ``T`` (the earlier one on a
    tie). A run whose first probe pause is not step 0 has no ``P(0)``, and one probed at step 0
    only has no ``T > 0``: for ``plasticity_loss`` they are left out and listed in
    ``points.attrs["no_step0"]`` and ``points.attrs["only_step0"]``. A non-finite plasticity (diverged run)
    is kept here and left out of the correlations. ``group`` labels environment and observation
    space (the ``color_keys`` that vary among the points); the columns of ``FIG3_CONFIG_KEYS`` that
    the sweep has hold each run's config values.
    """
    if y not in FIG3_Y:
        raise ValueError(f"y must be one of {', '.join(map(repr, FIG3_Y))}, not {y!r}")
    statistics = dict(N.STATISTICS if statistics is None else statistics)
    frame = select(frame, N.ENV, N.ENV_CLASSIFICATION)
    plast = series(frame, N.PLASTICITY, finite=False)
    if plast.empty:
        return pd.DataFrame(columns=["run_dir", "statistic", "step", "value", "plasticity", "group"])
    last = last_row(plast)
    no_step0: list[str] = []
    only_step0: list[str] = []
    if y == "plasticity_loss":
        first = first_row(plast)
        no_step0 = sorted(first.index[first["step"] != 0])
        only_step0 = sorted(last.index[last["step"] == 0])  # no later pause yet: T = 0, no loss to show
        last = last.drop(index=no_step0 + only_step0)
        last["value"] = last["value"] - first.loc[last.index, "value"]
    rows = []
    for stat, metric in statistics.items():
        s = series(frame, metric)
        for run_dir, rs in s.groupby("run_dir"):
            if run_dir not in last.index:
                continue
            target = last.loc[run_dir, "step"]
            i = int(np.argmin(np.abs(rs["step"].to_numpy() - target)))
            rows.append(
                {
                    "run_dir": run_dir,
                    "statistic": stat,
                    "step": int(rs["step"].iloc[i]),
                    "value": float(rs["value"].iloc[i]),
                    "plasticity": float(last.loc[run_dir, "value"]),
                }
            )
    points = pd.DataFrame(rows, columns=["run_dir", "statistic", "step", "value", "plasticity"])
    keys = [k for k in color_keys if k in frame.columns]
    cfg = frame.groupby("run_dir")[keys].first() if keys else pd.DataFrame(index=frame["run_dir"].unique())
    cfg = cfg.loc[cfg.index.isin(points["run_dir"])]
    varying = [k for k in keys if cfg[k].astype(str).nunique() > 1]
    labels = (
        cfg.apply(lambda r: ", ".join(str(r[k]) for k in varying) or "all runs", axis=1)
        if len(cfg)
        else pd.Series(dtype=str)
    )
    points["group"] = points["run_dir"].map(labels)
    config_keys = [k for k in FIG3_CONFIG_KEYS if k in frame.columns]
    if config_keys:
        values = frame.groupby("run_dir")[config_keys].first()
        for k in config_keys:
            points[k] = points["run_dir"].map(values[k])
    points.attrs["no_step0"] = no_step0
    points.attrs["only_step0"] = only_step0
    return points


def falsification_table(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3 tables from ``falsification_points``.

    ``correlations``: per statistic and group (and ``(all)``): points and Pearson r of plasticity
    against the statistic (``np.corrcoef``; NaN below 3 points or without variance) and its sign.
    ``summary``: per statistic, how many groups correlate positively / negatively and whether
    the sign flips between groups (the paper's falsification criterion). Every r carries its n;
    ``reliable`` is False below ``FIG3_MIN_N`` points (for a sign flip: in its smallest group).
    """
    corr_rows, summary_rows = [], []
    for stat, ps in points.groupby("statistic", sort=False):
        signs, ns = [], []
        for g, pg in ps.groupby("group", sort=True):
            r = pearson(pg["value"], pg["plasticity"])
            signs.append(sign(r))
            ns.append(len(pg))
            corr_rows.append(
                {
                    "statistic": stat,
                    "group": g,
                    "n": len(pg),
                    "pearson_r": r,
                    "sign": sign(r),
                    "reliable": len(pg) >= FIG3_MIN_N,
                }
            )
        r_all = pearson(ps["value"], ps["plasticity"])
        corr_rows.append(
            {
                "statistic": stat,
                "group": "(all)",
                "n": len(ps),
                "pearson_r": r_all,
                "sign": sign(r_all),
                "reliable": len(ps) >= FIG3_MIN_N,
            }
        )
        summary_rows.append(
            {
                "statistic": stat,
                "groups": len(signs),
                "positive": signs.count("+"),
                "negative": signs.count("-"),
                "sign_flips": "yes" if "+" in signs and "-" in signs else "no",
                "min_n": min(ns),
                "reliable": min(ns) >= FIG3_MIN_N,
                "pooled_r": r_all,
                "pooled_n": len(ps),
            }
        )
    cols = ["statistic", "group", "n", "pearson_r", "sign", "reliable"]
    return pd.DataFrame(corr_rows, columns=cols), pd.DataFrame(summary_rows)


def falsification_contrasts(
    points: pd.DataFrame, contrasts: Mapping[str, tuple[str, Iterable[str]]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sign flips of figure 3 along the contrasts of section 5.2 (``FIG3_CONTRASTS``).

    For each contrast (its config key, e.g. ``env.dataset`` for the observation space) and each
    statistic: the runs of each value of the key, pooled over everything else (tasks, optimizers,
    architectures, seeds), give a Pearson r of plasticity (the points' y) against the statistic.
    ``contrast_correlations``: contrast, key, statistic, paper (the paper names this pair), level
    (the key's value), n, pearson_r, sign. ``contrast_summary``: per contrast and statistic, the
    levels with a finite r, how many are positive / negative, and ``sign_flips`` (yes when one
    level is positive and another negative). A contrast whose key the points lack is left out.
    """
    contrasts = dict(FIG3_CONTRASTS if contrasts is None else contrasts)
    rows, summary = [], []
    for name, (key, paper_stats) in contrasts.items():
        if key not in points.columns:
            continue
        for stat, ps in points.groupby("statistic", sort=False):
            signs, ns = [], []
            for level, pl in ps.groupby(ps[key].astype(str), sort=True):
                r = pearson(pl["value"], pl["plasticity"])
                signs.append(sign(r))
                if np.isfinite(r):
                    ns.append(len(pl))
                rows.append(
                    {
                        "contrast": name,
                        "key": key,
                        "statistic": stat,
                        "paper": stat in paper_stats,
                        "level": level,
                        "n": len(pl),
                        "pearson_r": r,
                        "sign": sign(r),
                        "reliable": len(pl) >= FIG3_MIN_N,
                    }
                )
            finite = [s for s in signs if s != "n/a"]
            summary.append(
                {
                    "contrast": name,
                    "key": key,
                    "statistic": stat,
                    "paper": stat in paper_stats,
                    "levels": len(finite),
                    "positive": finite.count("+"),
                    "negative": finite.count("-"),
                    "sign_flips": "yes" if "+" in finite and "-" in finite else "no",
                    "min_n": min(ns) if ns else 0,
                    "reliable": bool(ns) and min(ns) >= FIG3_MIN_N,
                }
            )
    cols = ["contrast", "key", "statistic", "paper", "level", "n", "pearson_r", "sign", "reliable"]
    scols = [
        "contrast",
        "key",
        "statistic",
        "paper",
        "levels",
        "positive",
        "negative",
        "sign_flips",
        "min_n",
        "reliable",
    ]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(summary, columns=scols)


def figure3_falsification(
    frame: pd.DataFrame,
    statistics: Mapping[str, tuple[str, str]] | None = None,
    y: str = "plasticity_loss",
) -> FigureResult:
    """Figure 3: the falsification scatter of plasticity loss against four network statistics.

    Needs ``env.name=classification`` runs (all runs if the config lacks ``env.name``) with
    ``probe/plasticity`` and any of the statistics in ``names.STATISTICS`` (weight norm
    ``stats/param_norm``, feature rank ``stats/feature_srank_delta0.01``, weight rank
    ``stats/weight_rank_mean``, dead units ``stats/dead_frac``). One point per run: its
    plasticity loss ``P(T) - P(0)`` (``y="plasticity_loss"``) or plasticity ``P(T)``
    (``y="plasticity"``) at its last probe pause ``T`` against the statistic at that pause,
    coloured by environment (task) and observation space (dataset); the tables give each group's
    Pearson correlation and its sign, whether the sign flips between groups, and the sign flips
    along the paper's two contrasts (``falsification_contrasts``).
    """
    statistics = dict(N.STATISTICS if statistics is None else statistics)
    points = falsification_points(frame, statistics, y=y)
    if points.empty:
        raise MissingData(
            "no classification run with probe/plasticity and a statistic ("
            + ", ".join(f"{p}/{m}" for p, m in statistics.values())
            + ")"
        )
    corr, summary = falsification_table(points)
    contrast_corr, contrast_summary = falsification_contrasts(points)
    largest = int(corr["n"].max()) if len(corr) else 0
    if largest < FIG3_MIN_N:
        raise MissingData(
            f"too few runs for a correlation: the largest group has n = {largest} point(s), "
            f"fewer than {FIG3_MIN_N} (a Pearson r or its sign from so few points is noise); "
            f"run at least {FIG3_MIN_N} runs per group (seeds or settings)"
        )
    stats = [s for s in statistics if s in set(points["statistic"])]
    groups = sorted(points["group"].unique(), key=natural_key)
    colors = dict(zip(groups, palette(len(groups))))
    arch = frame.groupby("run_dir")[N.ARCH].first() if N.ARCH in frame.columns else None
    archs = sorted(arch[arch.index.isin(points["run_dir"])].astype(str).unique()) if arch is not None else []
    markers = dict(zip(archs, "osD^vP*X"))
    fig = new_figure(3.6 * len(stats), 3.9)
    axes = fig.subplots(1, len(stats), squeeze=False)[0]
    for ax, stat in zip(axes, stats):
        ps = points[points["statistic"] == stat]
        for g in groups:
            pg = ps[ps["group"] == g]
            if pg.empty:
                continue
            r = corr[(corr["statistic"] == stat) & (corr["group"] == g)]["pearson_r"].iloc[0]
            n = len(pg)
            flag = f" < {FIG3_MIN_N}: unreliable" if n < FIG3_MIN_N else ""
            label = f"{g} (r={r:+.2f}, n={n}{flag})" if np.isfinite(r) else f"{g} (r=n/a, n={n})"
            pg_arch = pg["run_dir"].map(arch).astype(str) if arch is not None else pd.Series("", index=pg.index)
            for a, pa_ in pg.groupby(pg_arch, sort=True):
                ax.scatter(
                    pa_["value"],
                    pa_["plasticity"],
                    color=colors[g],
                    marker=markers.get(a, "o"),
                    s=22,
                    alpha=0.8,
                    label=label,
                )
                label = None  # one legend entry per group
        phase, metric = statistics[stat]
        ax.set_xlabel(f"{stat} ({metric})\n{FIG3_UNITS.get(stat, 'unitless')}", fontsize="small")
        ax.set_title(stat)
        ax.legend(fontsize="xx-small", frameon=False)
    axes[0].set_ylabel(FIG3_Y[y])
    notes = []
    if points.attrs.get("no_step0"):
        skipped = points.attrs["no_step0"]
        notes.append(
            f"Left out, no probe at step 0 (no P(0)): {len(skipped)} run(s): "
            + ", ".join(run_name(r) for r in skipped[:10])
            + (" ..." if len(skipped) > 10 else "")
            + "."
        )
    if points.attrs.get("only_step0"):
        skipped = points.attrs["only_step0"]
        notes.append(
            f"Left out, probed at step 0 only (no P(T) with T > 0 yet): {len(skipped)} run(s): "
            + ", ".join(run_name(r) for r in skipped[:10])
            + (" ..." if len(skipped) > 10 else "")
            + "."
        )
    if len(archs) > 1:
        notes.append("Marker shape is the architecture: " + ", ".join(f"{a} {markers[a]}" for a in archs) + ".")
    points_out = points.assign(run=points["run_dir"].map(run_name)).drop(columns="run_dir")
    return FigureResult(
        name="figure3_falsification",
        title="Figure 3: falsification of candidate explanations of plasticity loss",
        caption=f"One point per run: {' '.join(FIG3_Y[y].split())} at its last probe pause T against a statistic of "
        "the network at that pause. A statistic whose correlation with plasticity changes sign "
        "between groups (across observation spaces, across reward structures) cannot be a "
        "consistent cause of plasticity loss.",
        figure=fig,
        tables={
            "correlations": corr,
            "summary": summary,
            "contrast_correlations": contrast_corr,
            "contrast_summary": contrast_summary,
            "points": points_out,
        },
        notes=notes,
        bands=f"one point per run; r = Pearson correlation of the group's points, n = its points "
        f"(flagged unreliable below n = {FIG3_MIN_N})",
        runs=sorted(points["run_dir"].unique()),
    )
