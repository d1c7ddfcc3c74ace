"""Figure 7: human-normalised improvement of layer norm over the baseline DDQN on Atari."""

from __future__ import annotations

import pandas as pd

from .. import names as N
from ..data import (
    load_step_arrays,
    select,
    series,
    steps_with_arrays,
    with_config,
)
from ..plotting import (
    FigureResult,
    MissingData,
    draw_gradcov,
    new_figure,
)


def atari_table(frame: pd.DataFrame, last_n: int = 5) -> pd.DataFrame:
    """Figure 7 numbers: per game, human-normalised score of the baseline and of layer norm and the
    human-normalised improvement of layer norm over the baseline (Wang et al., 2016).

    A run's score is the mean of its last ``last_n`` ``eval/human_normalized_score`` values; a
    method's score on a game is the mean over its runs (seeds). With human-normalised scores
    h = (s - random) / (human - random), the improvement (s_ln - s_base) / (max(human, s_base) -
    random) equals (h_ln - h_base) / max(1, h_base); ``improvement_pct`` is it in percent.
    """
    frame = select(frame, N.ENV, N.ENV_ATARI)
    if N.GAME not in frame.columns:
        return pd.DataFrame()
    s = series(frame, N.HUMAN_NORMALIZED_SCORE)
    if s.empty:
        return pd.DataFrame()
    score = s.groupby("run_dir")["value"].apply(lambda v: float(v.tail(last_n).mean()))  # s is sorted by step
    runs = with_config(score.rename("score").reset_index(), frame, [N.GAME, N.INTERVENTIONS])
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    rows = []
    for game, g in runs.groupby(N.GAME, sort=True):
        base = g[g[N.INTERVENTIONS] == N.NO_INTERVENTION]["score"]
        ln = g[g[N.INTERVENTIONS] == N.LAYER_NORM]["score"]
        if base.empty or ln.empty:
            continue
        hb, hl = float(base.mean()), float(ln.mean())
        rows.append(
            {
                "game": game,
                "baseline_hns": hb,
                "layer_norm_hns": hl,
                "baseline_runs": len(base),
                "layer_norm_runs": len(ln),
                "improvement_pct": 100.0 * (hl - hb) / max(1.0, hb),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("improvement_pct", kind="stable", ignore_index=True)
    return table


def figure7_atari_layer_norm(frame: pd.DataFrame, last_n: int = 5) -> FigureResult:
    """Figure 7: human-normalised improvement of layer norm over the baseline DDQN, per game, sorted.

    Needs ``env.name=atari`` runs with ``env.game`` and ``eval/human_normalized_score``, on each
    game both with ``interventions=none`` and ``interventions=layer_norm``. When those runs also
    stored ``gradcov/matrix`` arrays, a second row shows the last gradient covariance of the
    baseline and layer-norm runs of the games with the largest and smallest improvement (the
    paper's bottom row: Freeway and Kangaroo).
    """
    table = atari_table(frame, last_n=last_n)
    if table.empty:
        raise MissingData(
            f"needs atari runs with {N.GAME} and eval/human_normalized_score for both "
            f"interventions={N.NO_INTERVENTION} and {N.LAYER_NORM} on a game"
        )
    frame = select(frame, N.ENV, N.ENV_ATARI)
    runs = with_config(pd.DataFrame({"run_dir": sorted(frame["run_dir"].unique())}), frame, [N.GAME, N.INTERVENTIONS])
    runs[N.INTERVENTIONS] = runs[N.INTERVENTIONS].fillna(N.NO_INTERVENTION)
    # gradient covariance of the games with the largest and smallest improvement, when stored
    cov = []
    games = list(dict.fromkeys([table["game"].iloc[-1], table["game"].iloc[0]]))
    for game in games:
        for interv in (N.NO_INTERVENTION, N.LAYER_NORM):
            sel = runs[(runs[N.GAME] == game) & (runs[N.INTERVENTIONS] == interv)]
            for r in sel["run_dir"]:
                steps = steps_with_arrays(r, [N.GRADCOV_MATRIX])
                if steps:
                    cov.append((game, interv, r, steps[-1]))
                    break
    n = len(table)
    fig = new_figure(max(6.0, 0.28 * n + 2), 3.8 + (3.0 if cov else 0))
    if cov:
        top, bottom = fig.subfigures(2, 1, height_ratios=[3.8, 3.0])
    else:
        top, bottom = fig, None
    ax = top.subplots()
    colors = ["tab:green" if v >= 0 else "tab:red" for v in table["improvement_pct"]]
    ax.bar(range(n), table["improvement_pct"], color=colors)
    ax.set_xticks(range(n), table["game"], rotation=90 if n > 8 else 30, fontsize="small" if n < 30 else "x-small")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("human-normalised improvement (%)")
    ax.set_xlabel("game")
    ax.set_title("layer norm over baseline")
    if table["improvement_pct"].abs().max() > 1000:
        ax.set_yscale("symlog", linthresh=100)
    notes = [f"A run's score is the mean of its last {last_n} human-normalised evaluation scores."]
    if cov:
        axes = bottom.subplots(1, len(cov), squeeze=False)[0]
        im = None
        for a, (game, interv, r, step) in zip(axes, cov):
            mat = load_step_arrays(r, step, [N.GRADCOV_MATRIX])[N.GRADCOV_MATRIX]
            im = draw_gradcov(a, mat, f"{game}: {interv}\nstep {step}")
        bottom.colorbar(im, ax=list(axes), label="gradient covariance")
        notes.append("Gradient covariance from the first run (by directory) of each game and method.")
    return FigureResult(
        name="figure7_atari_layer_norm",
        title="Figure 7: layer normalisation in double DQN on Atari",
        caption="Human-normalised improvement (Wang et al., 2016) of adding layer normalisation "
        "over the baseline agent, per game, sorted.",
        figure=fig,
        tables={"games": table},
        notes=notes,
        bands="bar (from 0): per game, the improvement of layer norm's mean score over the baseline's, each the "
        f"mean over seeds of a run's last {last_n} evaluations; seeds per game and method in the table",
        runs=sorted(frame["run_dir"].unique()),
    )
