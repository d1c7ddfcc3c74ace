"""plasticity-report on small synthetic sweeps written with the real metrics writer."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from plasticity_runner.metrics import MetricsWriter, load_sweep, write_run_metadata
from plasticity_runner.report import (
    MissingData,
    atari_table,
    build_report,
    cli,
    falsification_points,
    falsification_table,
    figure1_optimizer_instability,
    figure2_brownian,
    figure3_falsification,
    figure4_probe_curves,
    figure5_width,
    figure6_interventions,
    figure7_atari_layer_norm,
    intervention_table,
    load_report_data,
    make_report,
    optimizer_table,
    plasticity_over_training,
    plasticity_table,
    width_table,
)
from plasticity_runner.report import names as N
from plasticity_runner.report.figures.fig3_falsification import FIG3_MIN_N

# ------------------------------------------------------------------------------ synthetic runs


def config(
    seed,
    env="classification",
    dataset="mnist",
    task="true_label",
    arch="mlp",
    width=512,
    period=1000,
    optimizer="adam",
    interventions="none",
    game=None,
):
    return {
        "seed": seed,
        "env": {"name": env, "dataset": dataset, "task": task, "game": game},
        "architecture": {"name": arch, "width": width},
        "agent": {"target_update_steps": period},
        "optimizer": {"name": optimizer, "lr": 1e-3},
        "interventions": interventions,
    }


def make_run(root, name, cfg, scalars, arrays=None, status=None):
    """A run directory: ``scalars`` {step: {phase: {metric: value}}}, ``arrays`` {step: {key: array}}."""
    run_dir = root / name
    run_id = write_run_metadata(run_dir, cfg, extra={"status": status} if status else None)
    writer = MetricsWriter(run_dir, run_id)
    arrays = arrays or {}
    for step in sorted(set(scalars) | set(arrays)):
        for phase, values in scalars.get(step, {}).items():
            writer.add_many(step, phase, values)
        for key, array in arrays.get(step, {}).items():
            writer.add_array(key, array)
        writer.flush(step)
    return run_dir


def probe_values(loss, baseline=1.0):
    return {"probe_loss": loss, "probe_baseline": baseline, "plasticity": baseline - loss}


def stat_values(norm, frank, wrank, dead):
    return {"param_norm": norm, "feature_srank_delta0.01": frank, "weight_rank_mean": wrank, "dead_frac": dead}


def classification_sweep(root, rng, datasets=("mnist", "cifar10"), seeds=5, tasks=("true_label",)):
    """Runs whose weight norm correlates + with plasticity loss P(T) - P(0) on mnist and - on
    cifar10, and whose dead fraction correlates + with it on true_label and - on other tasks."""
    expected = {}
    for dataset, task in [(d, t) for d in datasets for t in tasks]:
        sgn = 1.0 if dataset == "mnist" else -1.0
        sgn_task = 1.0 if task == "true_label" else -1.0
        for seed in range(seeds):
            losses = rng.uniform(0.1, 0.9, size=3)
            plast_last = 1.0 - losses[-1]
            plast_loss = losses[0] - losses[-1]  # P(T) - P(0), baseline 1 at both pauses
            norm = 10 + sgn * 5 * plast_loss + rng.normal(0, 0.3)
            dead = 0.25 + sgn_task * 0.2 * plast_loss + rng.normal(0, 0.01)
            stats_last = stat_values(norm, rng.uniform(5, 50), rng.uniform(10, 60), dead)
            scalars = {
                0: {"probe": probe_values(losses[0]), "stats": stat_values(10, 50, 60, 0.0)},
                5000: {"probe": probe_values(losses[1]), "stats": stat_values(11, 40, 50, 0.1)},
                10000: {"probe": probe_values(losses[2]), "stats": stats_last},
            }
            name = f"{dataset}_{seed}" if len(tasks) == 1 else f"{dataset}_{task}_{seed}"
            run = make_run(root, name, config(seed, dataset=dataset, task=task), scalars)
            expected[str(run)] = {
                "dataset": dataset,
                "task": task,
                "plasticity_loss": plast_loss,
                "plasticity": plast_last,
                **stats_last,
            }
    return expected


# ------------------------------------------------------------------------------ figure 3


def test_figure3_correlations_equal_numpy(tmp_path):
    rng = np.random.default_rng(0)
    expected = classification_sweep(tmp_path, rng)
    frame = load_sweep(tmp_path)
    result = figure3_falsification(frame)  # y defaults to the plasticity loss P(T) - P(0)
    assert "P(T) - P(0)" in result.figure.axes[0].get_ylabel()
    corr = result.tables["correlations"]
    for stat, (_, metric) in N.STATISTICS.items():
        for dataset in ("mnist", "cifar10"):
            runs = [v for v in expected.values() if v["dataset"] == dataset]
            x = np.array([v[metric] for v in runs])
            y = np.array([v["plasticity_loss"] for v in runs])
            want = np.corrcoef(x, y)[0, 1]
            row = corr[(corr["statistic"] == stat) & (corr["group"] == dataset)]
            assert len(row) == 1 and row["n"].iloc[0] == 5
            assert row["pearson_r"].iloc[0] == pytest.approx(want, abs=1e-12)
            assert row["sign"].iloc[0] == ("+" if want > 0 else "-")
        x = np.array([v[metric] for v in expected.values()])
        y = np.array([v["plasticity_loss"] for v in expected.values()])
        pooled = corr[(corr["statistic"] == stat) & (corr["group"] == "(all)")]["pearson_r"].iloc[0]
        assert pooled == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    summary = result.tables["summary"].set_index("statistic")
    assert summary.loc["weight norm", "sign_flips"] == "yes"  # built to flip: + on mnist, - on cifar10
    assert summary.loc["weight norm", "positive"] == 1 and summary.loc["weight norm", "negative"] == 1
    assert len(result.figure.axes) == 4
    assert sum(len(c.get_offsets()) for c in result.figure.axes[0].collections) == 10  # one point per run


def test_figure3_plasticity_at_the_last_pause_on_request(tmp_path):
    expected = classification_sweep(tmp_path, np.random.default_rng(1), datasets=("mnist",), seeds=FIG3_MIN_N)
    result = figure3_falsification(load_sweep(tmp_path), y="plasticity")
    assert result.figure.axes[0].get_ylabel().startswith("plasticity P(T)")
    row = result.tables["correlations"].query("statistic == 'weight norm' and group == '(all)'")
    x = np.array([v["param_norm"] for v in expected.values()])
    y = np.array([v["plasticity"] for v in expected.values()])
    assert row["pearson_r"].iloc[0] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    with pytest.raises(ValueError, match="plasticity_loss"):
        falsification_points(load_sweep(tmp_path), y="probe_loss")


PAPER_CONTRASTS = {
    ("observation space", "weight norm"),
    ("observation space", "weight rank"),
    ("reward structure", "feature rank"),
    ("reward structure", "dead units"),
}  # fig. 3 caption


def test_figure3_sign_flips_along_observation_spaces_and_reward_structures(tmp_path):
    rng = np.random.default_rng(2)
    expected = classification_sweep(tmp_path, rng, seeds=4, tasks=("true_label", "random_label", "sparse_reward"))
    result = figure3_falsification(load_sweep(tmp_path))
    corr = result.tables["contrast_correlations"]
    summary = result.tables["contrast_summary"].set_index(["contrast", "statistic"])
    for contrast, field, levels in (
        ("observation space", "dataset", ("mnist", "cifar10")),
        ("reward structure", "task", ("true_label", "random_label", "sparse_reward")),
    ):
        for stat, (_, metric) in N.STATISTICS.items():
            for level in levels:  # pooled over the other factor: 12 runs per dataset, 8 per task
                runs = [v for v in expected.values() if v[field] == level]
                want = np.corrcoef([v[metric] for v in runs], [v["plasticity_loss"] for v in runs])[0, 1]
                row = corr[(corr.contrast == contrast) & (corr.statistic == stat) & (corr.level == level)]
                assert len(row) == 1 and row["n"].iloc[0] == len(runs)
                assert row["pearson_r"].iloc[0] == pytest.approx(want, abs=1e-12)
            assert summary.loc[(contrast, stat), "paper"] == ((contrast, stat) in PAPER_CONTRASTS)
    # built to flip: weight norm across observation spaces, dead units across reward structures
    assert summary.loc[("observation space", "weight norm"), "sign_flips"] == "yes"
    assert summary.loc[("reward structure", "dead units"), "sign_flips"] == "yes"
    assert summary.loc[("reward structure", "dead units"), ["positive", "negative"]].tolist() == [1, 2]
    assert summary.loc[("observation space", "dead units"), "levels"] == 2


def test_cli_fig3_y_flag(tmp_path, capsys):
    expected = classification_sweep(tmp_path, np.random.default_rng(3), datasets=("mnist",), seeds=FIG3_MIN_N)
    points_csv = tmp_path / "report" / "tables" / "figure3_falsification__points.csv"
    cases = ((None, "plasticity_loss"), ("plasticity_loss", "plasticity_loss"), ("plasticity", "plasticity"))
    for flag, field in cases:
        args = [str(tmp_path), "--formats", "png"] + (["--fig3-y", flag] if flag else [])
        assert cli.main(args) == 0
        points = pd.read_csv(points_csv)
        got = sorted(points[points.statistic == "weight norm"]["plasticity"])
        assert got == pytest.approx(sorted(v[field] for v in expected.values())), flag
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path), "--fig3-y", "probe_loss"])
    assert exc.value.code == 2 and "--fig3-y" in capsys.readouterr().err


def test_figure3_plasticity_loss_needs_a_probe_at_step_0(tmp_path):
    for seed in range(FIG3_MIN_N + 1):
        first = 0 if seed < FIG3_MIN_N else 5000  # the last run's first probe is not at step 0
        scalars = {
            first: {"probe": probe_values(0.2)},
            10000: {"probe": probe_values(0.3 + 0.1 * seed), "stats": {"param_norm": 1.0 + seed}},
        }
        make_run(tmp_path, "r3" if seed == FIG3_MIN_N else f"ok{seed}", config(seed), scalars)
    # a run still at its first pause: P(T) - P(0) would be an exact 0 that no training produced
    make_run(tmp_path, "r4", config(99), {0: {"probe": probe_values(0.9), "stats": {"param_norm": 9.0}}})
    frame = load_sweep(tmp_path)
    points = falsification_points(frame, {"weight norm": ("stats", "param_norm")})
    assert sorted(points["plasticity"]) == pytest.approx(sorted(-0.1 - 0.1 * s for s in range(FIG3_MIN_N)))
    assert [p.rsplit("/", 1)[-1] for p in points.attrs["no_step0"]] == ["r3"]
    assert [p.rsplit("/", 1)[-1] for p in points.attrs["only_step0"]] == ["r4"]
    result = figure3_falsification(frame, {"weight norm": ("stats", "param_norm")})
    assert any("no probe at step 0" in n and "r3" in n for n in result.notes)
    assert any("step 0 only" in n and "r4" in n for n in result.notes)
    assert len(falsification_points(frame, {"weight norm": ("stats", "param_norm")}, y="plasticity")) == FIG3_MIN_N + 2


def test_figure3_uses_statistic_nearest_last_pause_and_plasticity_loss(tmp_path):
    # stats logged at other steps than the probe: the value nearest the last probe pause is used
    for seed in range(3):
        scalars = {
            0: {"probe": probe_values(0.2)},
            9000: {"stats": {"param_norm": 100.0 + seed}},
            10000: {"probe": probe_values(0.2 + 0.1 * seed)},
            20000: {"stats": {"param_norm": -1.0}},
        }
        make_run(tmp_path, f"r{seed}", config(seed, optimizer=["adam", "sgd", "rmsprop"][seed]), scalars)
    points = falsification_points(load_sweep(tmp_path), {"weight norm": ("stats", "param_norm")}, y="plasticity_loss")
    assert sorted(points["value"]) == [100.0, 101.0, 102.0]
    assert set(points["step"]) == {9000}
    assert sorted(points["plasticity"]) == pytest.approx([-0.2, -0.1, 0.0])
    corr, _ = falsification_table(points)
    assert corr["pearson_r"].iloc[0] == pytest.approx(-1.0)


def test_pearson_needs_three_points():
    points = pd.DataFrame(
        {
            "run_dir": ["a", "b"],
            "statistic": ["s", "s"],
            "step": [1, 1],
            "value": [1.0, 2.0],
            "plasticity": [0.1, 0.3],
            "group": ["g", "g"],
        }
    )
    corr, summary = falsification_table(points)
    assert np.isnan(corr["pearson_r"].iloc[0]) and corr["sign"].iloc[0] == "n/a"
    assert summary["sign_flips"].iloc[0] == "no"


# ------------------------------------------------------------------------------ figure 6 / 8


def test_figure6_cells_are_mean_change_in_probe_loss(tmp_path):
    rng = np.random.default_rng(1)
    changes = {}
    cells = [
        ("mlp", "none"),
        ("mlp", "layer_norm"),
        ("mlp", "layer_norm+two_hot"),
        ("cnn", "none"),
        ("cnn", "layer_norm"),
    ]
    for arch, interv in cells:
        for seed in range(2):
            losses = rng.uniform(0.1, 1.0, size=3)
            scalars = {s: {"probe": probe_values(v)} for s, v in zip((0, 5000, 10000), losses)}
            make_run(tmp_path, f"{arch}_{interv}_{seed}", config(seed, arch=arch, interventions=interv), scalars)
            changes.setdefault((arch, interv), []).append(losses[-1] - losses[0])
    # a run still going (only two pauses) counts with its own last pause; a failed run is skipped
    make_run(
        tmp_path,
        "cnn_none_running",
        config(7, arch="cnn"),
        {0: {"probe": probe_values(0.5)}, 5000: {"probe": probe_values(0.9)}},
        status="running",
    )
    changes[("cnn", "none")].append(0.9 - 0.5)
    make_run(
        tmp_path,
        "cnn_none_failed",
        config(8, arch="cnn"),
        {0: {"probe": probe_values(0.5)}, 5000: {"probe": probe_values(50.0)}},
        status="failed",
    )
    # a run with a single pause has no change to report
    make_run(tmp_path, "cnn_none_one_pause", config(9, arch="cnn"), {0: {"probe": probe_values(0.5)}})

    data = load_report_data(tmp_path)
    assert set(data.skipped["reason"]) == {"status failed"}
    table = intervention_table(data.frame).set_index(["architecture", "intervention"])
    assert len(table) == len(cells)
    for cell, values in changes.items():
        assert table.loc[cell, "runs"] == len(values)
        assert table.loc[cell, "probe_loss_change_mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert table.loc[cell, "probe_loss_change_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert table.loc[("cnn", "none"), "last_step_min"] == 5000

    result = figure6_interventions(data.frame)
    ax = result.figure.axes[0]
    texts = [t.get_text() for t in ax.texts]
    for values in changes.values():  # each cell: its mean, and under it the runs it averages
        assert f"{np.mean(values):.3g}\nn={len(values)}" in texts
    assert texts.count("-") == 1  # cnn x layer_norm+two_hot has no run
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "none"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mlp", "cnn"]
    image = ax.get_images()[0]
    assert image.get_cmap().name == "viridis"  # low (less plasticity loss) is dark


def test_figure6_one_panel_per_dataset(tmp_path):
    for dataset in ("mnist", "cifar10"):
        for interv in ("none", "layer_norm"):
            scalars = {0: {"probe": probe_values(0.1)}, 1000: {"probe": probe_values(0.4)}}
            make_run(tmp_path, f"{dataset}_{interv}", config(0, dataset=dataset, interventions=interv), scalars)
    result = figure6_interventions(load_sweep(tmp_path))
    titles = [ax.get_title() for ax in result.figure.axes if ax.get_title()]
    assert titles == ["cifar10", "mnist"]
    assert result.tables["cells"]["probe_loss_change_mean"].tolist() == pytest.approx([0.3] * 4)


# ------------------------------------------------------------------------------ figure 5


def test_figure5_plasticity_loss_per_width_and_period(tmp_path):
    rng = np.random.default_rng(2)
    expected = {}
    for width in (16, 32, 64):
        for period in (1000, 5000):
            for seed in range(2):
                p0, p1 = rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.5)
                scalars = {
                    0: {"probe": {"plasticity": p0}},
                    4000: {"probe": {"plasticity": 0.7}},
                    8000: {"probe": {"plasticity": p1}},
                }
                make_run(tmp_path, f"w{width}_p{period}_{seed}", config(seed, width=width, period=period), scalars)
                expected.setdefault((period, width), []).append(p1 - p0)
    table = width_table(load_sweep(tmp_path)).set_index(["target_update_steps", "width"])
    assert len(table) == 6
    for key, values in expected.items():
        assert table.loc[key, "plasticity_loss_mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert table.loc[key, "runs"] == 2
    result = figure5_width(load_sweep(tmp_path))
    assert result.figure.axes[0].get_xscale() == "log"


def test_figure5_needs_two_widths(tmp_path):
    classification_sweep(tmp_path, np.random.default_rng(3), datasets=("mnist",), seeds=2)
    with pytest.raises(MissingData, match="two or more"):
        figure5_width(load_sweep(tmp_path))


# ------------------------------------------------------------------------------ figure 7


def test_figure7_human_normalised_improvement_sorted(tmp_path):
    scores = {  # game -> intervention -> per-seed eval curves of human-normalised score
        "pong": {
            "none": [[0, 0.5, 1.0, 1.5, 2.0, 2.0], [0, 0.4, 1.1, 1.4, 2.2, 2.4]],
            "layer_norm": [[0, 1, 2, 3, 3, 3], [0, 1, 2, 2, 3, 4]],
        },
        "freeway": {"none": [[0, 0, 0.1, 0.2, 0.2, 0.3]], "layer_norm": [[0, 0.2, 0.6, 0.8, 0.9, 1.0]]},
        "kangaroo": {"none": [[0, 0.3, 0.5, 0.6, 0.7, 0.8]], "layer_norm": [[0, 0.1, 0.2, 0.2, 0.3, 0.3]]},
        "breakout": {"none": [[0, 1, 2, 3, 4, 5]]},  # no layer-norm run: not in the figure
    }
    for game, by_interv in scores.items():
        for interv, curves in by_interv.items():
            for seed, curve in enumerate(curves):
                scalars = {
                    1000 * (i + 1): {"eval": {"human_normalized_score": v, "episode_return": 10 * v}}
                    for i, v in enumerate(curve)
                }
                make_run(
                    tmp_path,
                    f"{game}_{interv}_{seed}",
                    config(seed, env="atari", arch="nature_cnn", game=game, optimizer="rmsprop", interventions=interv),
                    scalars,
                )
    frame = load_sweep(tmp_path)
    table = atari_table(frame, last_n=5)

    def score(curves):
        return np.mean([np.mean(c[-5:]) for c in curves])

    want = {}
    for game, by_interv in scores.items():
        if "layer_norm" in by_interv:
            hb, hl = score(by_interv["none"]), score(by_interv["layer_norm"])
            want[game] = 100 * (hl - hb) / max(1.0, hb)
    assert table["game"].tolist() == sorted(want, key=want.get)
    for _, row in table.iterrows():
        assert row["improvement_pct"] == pytest.approx(want[row["game"]], abs=1e-9)
    result = figure7_atari_layer_norm(frame)
    ax = result.figure.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(sorted(want.values()))


# ------------------------------------------------------------------------------ figure 1


def test_figure1_final_accuracy_per_optimizer(tmp_path):
    curves = {
        ("adam", 0): [0.9, 0.3, 0.1, 0.1],
        ("adam", 1): [0.95, 0.5, 0.1, 0.12],
        ("adam_tuned", 0): [0.9, 0.92, 0.95, 0.97],
        ("adam_tuned", 1): [0.85, 0.9, 0.93, 0.99],
    }
    for (opt, seed), acc in curves.items():
        scalars = {
            500 * (i + 1): {"eval": {"accuracy": a, "dead_frac": 1 - a, "adam_update_norm": 1 + a}}
            for i, a in enumerate(acc)
        }
        make_run(tmp_path, f"{opt}_{seed}", config(seed, env="memorization", optimizer=opt, width=1024), scalars)
    frame = load_sweep(tmp_path)
    table = optimizer_table(frame).set_index("group")
    assert table.loc["optimizer.name=adam", "final_accuracy_mean"] == pytest.approx(0.11)
    assert table.loc["optimizer.name=adam_tuned", "final_accuracy_mean"] == pytest.approx(0.98)
    assert table.loc["optimizer.name=adam", "final_dead_frac_mean"] == pytest.approx(0.89)
    assert table.loc["optimizer.name=adam", "min_accuracy_mean"] == pytest.approx(0.1)
    assert table.loc["optimizer.name=adam_tuned", "min_accuracy_mean"] == pytest.approx(0.875)
    assert table.loc["optimizer.name=adam", "iterations"] == 4
    result = figure1_optimizer_instability(frame)
    assert len(result.figure.axes) == 3
    xs = result.figure.axes[0].lines[-1].get_xdata()
    assert list(xs) == [1, 2, 3, 4]  # x axis is the iteration
    # per iteration: mean / min / max over the seeds, against the curves above
    its = result.tables["iterations"]
    assert its["group"].tolist() == ["optimizer.name=adam"] * 4 + ["optimizer.name=adam_tuned"] * 4
    for opt in ("adam", "adam_tuned"):
        rows = its[its["group"] == f"optimizer.name={opt}"].set_index("iteration")
        for i in range(4):
            acc = [curves[(opt, seed)][i] for seed in (0, 1)]
            row = rows.loc[i + 1]
            assert row["runs"] == 2
            assert row["accuracy_mean"] == pytest.approx(np.mean(acc))
            assert (row["accuracy_min"], row["accuracy_max"]) == pytest.approx((min(acc), max(acc)))
            assert row["dead_frac_max"] == pytest.approx(1 - min(acc))
            assert row["update_norm_mean"] == pytest.approx(1 + np.mean(acc))


# ------------------------------------------------------------------------------ probe over training


def test_plasticity_table_mean_over_seeds(tmp_path):
    losses = {("mnist", 0): [0.1, 0.3, 0.5], ("mnist", 1): [0.2, 0.2, 0.6], ("cifar10", 0): [0.3, 0.4, 0.9]}
    for (dataset, seed), ls in losses.items():
        scalars = {s: {"probe": probe_values(v, baseline=1.0 + seed)} for s, v in zip((0, 100, 200), ls)}
        make_run(tmp_path, f"{dataset}_{seed}", config(seed, dataset=dataset), scalars)
    frame = load_sweep(tmp_path)
    table = plasticity_table(frame).set_index("group")
    assert table.loc["env.dataset=mnist", "final_probe_loss_mean"] == pytest.approx(0.55)
    assert table.loc["env.dataset=mnist", "final_probe_loss_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert table.loc["env.dataset=mnist", "plasticity_loss_mean"] == pytest.approx(np.mean([-0.4, -0.4]))
    assert table.loc["env.dataset=cifar10", "runs"] == 1
    assert np.isnan(table.loc["env.dataset=cifar10", "final_probe_loss_std"])
    result = plasticity_over_training(frame)
    assert len(result.figure.axes) == 2
    mean_line = [ln for ln in result.figure.axes[1].lines if ln.get_label().startswith("env.dataset=mnist")][0]
    assert list(mean_line.get_ydata()) == pytest.approx([0.0, -0.1, -0.4])


def test_group_labels_name_the_fewest_keys(tmp_path):
    # architecture.channels follows architecture.name, intervention options follow `interventions`,
    # progress/torch_threads/label_seed never separate groups: labels name only arch and intervention
    archs = {"mlp": {"name": "mlp", "width": 512}, "cnn": {"name": "cnn", "channels": 64, "hidden": 256}}
    interventions = {"none": {}, "two_hot": {"two_hot": {"v_min": -100, "v_max": 100}}}
    for arch, arch_cfg in archs.items():
        for interv, interv_cfg in interventions.items():
            for seed in range(2):
                cfg = {
                    **config(seed, interventions=interv),
                    "architecture": arch_cfg,
                    "intervention": interv_cfg,
                    "progress": ["bar", "log"][seed],
                    "torch_threads": seed + 1,
                }
                cfg["env"]["label_seed"] = seed
                make_run(tmp_path, f"{arch}_{interv}_{seed}", cfg, {0: {"probe": probe_values(0.1)}})
    data = load_report_data(tmp_path)
    assert data.group_keys == ["architecture.name", "interventions"]
    groups = data.runs.set_index(data.runs["run_dir"].map(lambda r: r.rsplit("/", 1)[-1]))["group"]
    assert groups["cnn_two_hot_1"] == "architecture.name=cnn, interventions=two_hot"
    assert data.runs["group"].nunique() == 4


# ------------------------------------------------------------------------------ figures 2 and 4 (arrays)


def brownian_run(root, seed=0, steps=(0, 1000, 2000)):
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 10, 50)
    scalars, arrays = {}, {}
    for i, step in enumerate(steps):
        scalars[step] = {
            p: {
                "hessian_top_eig": (i + 1) * (2 if p == "gd" else 1),
                "gradcov_offdiag_mean": 0.1 * i,
                "gradcov_neg_frac": 0.05 * i,
            }
            for p in N.PROCESSES
        }
        arrays[step] = {}
        for p in N.PROCESSES:
            m = np.clip(rng.normal(0, 0.3, (8, 8)), -1, 1)
            np.fill_diagonal(m, 1.0)
            arrays[step][f"{p}/hessian/density"] = np.exp(-((grid - i) ** 2))
            arrays[step][f"{p}/hessian/grid"] = grid
            arrays[step][f"{p}/gradcov/matrix"] = m
    return make_run(root, f"brownian_{seed}", config(seed, env="brownian", optimizer="sgd"), scalars, arrays)


def test_figure2_densities_heatmaps_and_scalars(tmp_path):
    brownian_run(tmp_path, 0)
    brownian_run(tmp_path, 1)
    frame = load_sweep(tmp_path)
    result = figure2_brownian(frame, max_heatmaps=4)
    heatmaps = [ax for ax in result.figure.axes if ax.get_images()]
    assert len(heatmaps) == 2 * 3  # two processes x three pauses
    table = result.tables["scalars"].set_index(["metric", "process"])
    assert table.loc[("hessian_top_eig", "gradient descent"), "last_mean"] == pytest.approx(6.0)
    assert table.loc[("hessian_top_eig", "Brownian motion"), "last_mean"] == pytest.approx(3.0)
    assert table.loc[("hessian_top_eig", "Brownian motion"), "runs"] == 2


def test_figure4_probe_curves_from_arrays(tmp_path):
    k = np.arange(0, 2000, 100)
    finals = {}
    for seed in range(2):
        rng = np.random.default_rng(seed)
        scalars, arrays = {}, {}
        for i, step in enumerate((0, 5000, 10000)):
            curve = np.exp(-k[None, :] / (300.0 * (i + 1))) + rng.uniform(0.01, 0.05, (3, 1))
            scalars[step] = {"probe": probe_values(float(curve[:, -1].mean()))}
            arrays[step] = {"probe/curve_loss": curve, "probe/curve_steps": k}
            finals.setdefault(step, []).append(curve[:, -1])
        make_run(tmp_path, f"cnn_{seed}", config(seed, arch="cnn", dataset="cifar10"), scalars, arrays)
    result = figure4_probe_curves(load_sweep(tmp_path))
    table = result.tables["curves"].set_index("step")
    assert list(table.index) == [0, 5000, 10000]
    for step, vals in finals.items():
        assert table.loc[step, "final_loss"] == pytest.approx(np.mean(np.concatenate(vals)))
        assert table.loc[step, "runs"] == 2 and table.loc[step, "targets"] == 6
    assert len(result.figure.axes[0].lines) == 3


def test_figures_raise_missing_data_without_their_metrics(tmp_path):
    classification_sweep(tmp_path, np.random.default_rng(4), datasets=("mnist",), seeds=2)
    frame = load_sweep(tmp_path)
    for fn in (figure1_optimizer_instability, figure2_brownian, figure4_probe_curves, figure7_atari_layer_norm):
        with pytest.raises(MissingData):
            fn(frame)


# ------------------------------------------------------------------------------ the whole report


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun")
    classification_sweep(root / "fig3", np.random.default_rng(5), seeds=5)  # 10 points: figure 3 is drawn
    brownian_run(root / "fig2", 0)
    for opt in ("adam", "adam_tuned"):
        make_run(
            root / "fig1",
            opt,
            config(0, env="memorization", optimizer=opt),
            {500 * (i + 1): {"eval": {"accuracy": 0.9 - 0.1 * i, "dead_frac": 0.1 * i}} for i in range(3)},
        )
    for game in ("pong", "freeway"):
        for interv in ("none", "layer_norm"):
            make_run(
                root / "fig7",
                f"{game}_{interv}",
                config(0, env="atari", game=game, interventions=interv),
                {1000: {"eval": {"human_normalized_score": 0.5 if interv == "none" else 0.8}}},
                arrays={1000: {"gradcov/matrix": np.eye(4)}},
            )
    for width in (16, 64):
        make_run(
            root / "fig5",
            f"w{width}",
            config(0, width=width, interventions="layer_norm"),
            {0: {"probe": probe_values(0.1)}, 100: {"probe": probe_values(0.2 if width == 64 else 0.5)}},
            arrays={0: {"probe/curve_loss": np.ones((2, 5)), "probe/curve_steps": np.arange(5)}},
        )
    make_run(root / "partial", "running", config(11), {0: {"probe": probe_values(0.3)}}, status="running")
    make_run(root / "partial", "failed", config(12), {0: {"probe": probe_values(0.3)}}, status="failed")
    make_run(root / "partial", "no_metrics", config(13), {})
    (root / "partial" / "corrupt").mkdir(parents=True)
    (root / "partial" / "corrupt" / "run.json").write_text("{not json")
    return root


def test_cli_writes_every_figure_and_a_self_contained_page(mixed_sweep, capsys):
    # PNG only to keep the test fast; PDF output is checked in test_make_report_on_a_single_run
    assert cli.main([str(mixed_sweep), "--formats", "png"]) == 0
    out, err = capsys.readouterr()
    html_path = mixed_sweep / "report" / "index.html"
    assert out.strip().splitlines()[-1] == str(html_path)
    report_dir = mixed_sweep / "report"
    names = [
        "plasticity_over_training",
        "figure1_optimizer_instability",
        "figure2_brownian",
        "figure3_falsification",
        "figure4_probe_curves",
        "figure5_width",
        "figure6_interventions",
        "figure7_atari_layer_norm",
        "interval_estimates",
        "stats_over_training",
        "figure10_11_probe_loss",
        "figure17_18_probe_curves_ln",
        "figure19_20_atari_gradcov",
    ]
    for name in names:
        f = report_dir / f"{name}.png"
        assert f.exists() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
        assert not (report_dir / f"{name}.pdf").exists()
    page = html_path.read_text()
    assert page.count("src='data:image/png;base64,") == len(names)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched over the network
    assert "<script" not in page and "<link" not in page
    for skipped, reason in (("failed", "status failed"), ("no_metrics", "no metrics yet"), ("corrupt", "unreadable")):
        assert skipped in page and reason in page and skipped in err
    assert "still running" in page
    assert "3 skipped" in page and "3 skipped" in err
    runs = pd.read_csv(report_dir / "runs.csv")
    assert runs["used"].value_counts().to_dict() == {"yes": len(runs) - 3, "no": 3}
    corr = pd.read_csv(report_dir / "tables" / "figure3_falsification__correlations.csv")
    assert set(corr["statistic"]) == set(N.STATISTICS)


def test_build_report_on_a_partial_sweep_reports_missing_figures(tmp_path):
    classification_sweep(tmp_path, np.random.default_rng(6), datasets=("mnist",), seeds=3)
    stale = tmp_path / "report" / "figure7_atari_layer_norm.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    report = build_report(tmp_path, formats=["png"])
    assert report.errors == {}
    drawn = {r.name for r in report.figures}
    assert drawn == {
        "plasticity_over_training",
        "figure6_interventions",
        "interval_estimates",
        "stats_over_training",
        "figure10_11_probe_loss",
    }
    # three runs: no correlation is drawn from three points, and the report says why
    assert "n = 3 point(s), fewer than 10" in report.missing["figure3_falsification"]
    assert set(report.missing) == {
        "figure3_falsification",
        "figure1_optimizer_instability",
        "figure2_brownian",
        "figure4_probe_curves",
        "figure5_width",
        "figure7_atari_layer_norm",
        "figure12_13_returns",
        "figure14_sharpness",
        "figure15_16_td_loss",
        "figure17_18_probe_curves_ln",
        "figure19_20_atari_gradcov",
        "figure21_22_atari_hessian",
    }
    assert not stale.exists()
    assert not list((tmp_path / "report").glob("*.pdf"))
    page = report.html.read_text()
    assert "Figures not drawn" in page and "figure5_width" in page


def test_make_report_on_a_single_run_and_out_dir(tmp_path):
    run = make_run(tmp_path, "one", config(0), {0: {"probe": probe_values(0.2)}, 10: {"probe": probe_values(0.4)}})
    html = make_report(run, out=tmp_path / "elsewhere")
    assert html == tmp_path / "elsewhere" / "index.html" and html.exists()
    for name in ("plasticity_over_training", "figure6_interventions"):
        assert (tmp_path / "elsewhere" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "elsewhere" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (run / "report").exists()


def test_cli_errors_name_the_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path)])
    assert exc.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit) as exc:
        cli.main([str(missing)])
    assert exc.value.code == 2 and str(missing) in capsys.readouterr().err
    make_run(tmp_path, "r", config(0), {0: {"probe": probe_values(0.1)}})
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path), "--formats", "png,gif"])
    assert exc.value.code == 2 and "gif" in capsys.readouterr().err


def test_runs_without_metrics_only_still_give_a_page(tmp_path, capsys):
    make_run(tmp_path, "fresh", config(0), {}, status="running")
    assert cli.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "no run has metrics yet" in err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "fresh" in page and "no metrics yet" in page


def test_diverged_runs_are_used_and_their_nan_counted_not_replaced(tmp_path):
    for seed, status in enumerate(("complete", "complete", "diverged")):
        last = float("nan") if status == "diverged" else 0.3 + 0.1 * seed
        make_run(
            tmp_path,
            f"r{seed}",
            config(seed, interventions="none"),
            {0: {"probe": probe_values(0.1)}, 10: {"probe": probe_values(last)}},
            status=status,
        )
    assert json.loads((tmp_path / "r2" / "run.json").read_text())["status"] == "diverged"
    data = load_report_data(tmp_path)
    assert sorted(data.used["status"]) == ["complete", "complete", "diverged"]  # diverged runs are data
    table = plasticity_table(data.frame).iloc[0]
    assert table["runs"] == 3 and table["nonfinite"] == 1
    assert table["final_probe_loss_mean"] == pytest.approx(0.35)  # not the diverged run's earlier 0.1
    cells = intervention_table(data.frame).iloc[0]
    assert cells["runs"] == 3 and cells["nonfinite"] == 1
    assert cells["probe_loss_change_mean"] == pytest.approx(np.mean([0.2, 0.3]))
