"""The appendix figures (10-22), the statistics figure and figure 5's width multiplier, on
hand-made metrics written with the real metrics writer (``tests/test_report.py``'s helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from plasticity_runner.metrics import load_sweep
from plasticity_runner.report import names as N
from plasticity_runner.report.figures import (
    MissingData,
    figure5_width,
    figure10_11_probe_loss,
    figure12_13_returns,
    figure14_sharpness,
    figure15_16_td_loss,
    figure17_18_probe_curves_ln,
    figure19_20_atari_gradcov,
    figure21_22_atari_hessian,
    stats_over_training,
    width_table,
)

from .test_report import config, make_run, probe_values

STEPS = (0, 1000, 2000)


def intervention_sweep(
    root,
    rng,
    metrics,
    archs=("mlp", "cnn"),
    intervs=("none", "layer_norm"),
    datasets=("mnist",),
    tasks=("true_label",),
    seeds=2,
    arrays=None,
):
    """Classification runs; ``metrics`` {(phase, metric): f(rng) -> value per step}; returns
    {(dataset, task, arch, interventions): {run_dir: {step: {(phase, metric): value}}}}."""
    expected = {}
    for d in datasets:
        for t in tasks:
            for a in archs:
                for i in intervs:
                    for seed in range(seeds):
                        values = {s: {m: float(f(rng)) for m, f in metrics.items()} for s in STEPS}
                        scalars = {s: {} for s in STEPS}
                        for s, vs in values.items():
                            for (phase, metric), v in vs.items():
                                scalars[s].setdefault(phase, {})[metric] = v
                        cfg = config(seed, dataset=d, task=t, arch=a, interventions=i)
                        run = make_run(
                            root, f"{d}_{t}_{a}_{i}_{seed}", cfg, scalars, arrays=arrays(rng) if arrays else None
                        )
                        expected.setdefault((d, t, a, i), {})[str(run)] = values
    return expected


def test_figure10_11_initial_and_final_probe_loss_per_intervention(tmp_path):
    rng = np.random.default_rng(0)
    expected = intervention_sweep(
        tmp_path,
        rng,
        {N.PROBE_LOSS: lambda r: r.uniform(0.1, 1.0)},
        datasets=("mnist", "cifar10"),
        intervs=("none", "layer_norm", "layer_norm+two_hot"),
    )
    result = figure10_11_probe_loss(load_sweep(tmp_path))
    cells = result.tables["cells"].set_index(["facet", "architecture", "intervention"])
    assert len(cells) == 2 * 2 * 3
    for (d, _, a, i), runs in expected.items():
        initial = [v[0][N.PROBE_LOSS] for v in runs.values()]
        final = [v[2000][N.PROBE_LOSS] for v in runs.values()]
        row = cells.loc[(d, a, i)]
        assert row["runs"] == 2
        assert row["initial_mean"] == pytest.approx(np.mean(initial), abs=1e-12)
        assert row["initial_std"] == pytest.approx(np.std(initial, ddof=1), abs=1e-12)
        assert row["final_mean"] == pytest.approx(np.mean(final), abs=1e-12)
    axes = [ax for ax in result.figure.axes if ax.get_title()]
    assert len(axes) == 4  # 2 datasets x 2 architectures
    assert [t.get_text() for t in axes[0].get_xticklabels()] == [
        "none (n=2)",
        "layer_norm (n=2)",
        "layer_norm+two_hot (n=2)",
    ]
    # points with whiskers, not bars: a bar on the log axis would start at an arbitrary cut-off
    assert axes[0].get_yscale() == "log" and not axes[0].patches
    means = sorted(y for line in axes[0].lines for y in line.get_ydata() if line.get_marker() == "o")
    want = [
        cells.loc[("cifar10" if axes[0].get_title().startswith("cifar10") else "mnist", a, i), c]
        for (d, _, a, i) in expected
        for c in ("initial_mean", "final_mean")
        if f"{d}, {a}" == axes[0].get_title()
    ]
    assert means == pytest.approx(sorted(want), abs=1e-12)
    assert "squared Q units" in axes[0].get_ylabel()


@pytest.mark.parametrize("fn,metric", [(figure12_13_returns, N.REWARD_MEAN), (figure15_16_td_loss, N.TD_LOSS)])
def test_figures_12_13_and_15_16_curves_per_task_architecture_and_intervention(tmp_path, fn, metric):
    rng = np.random.default_rng(1)
    expected = intervention_sweep(
        tmp_path,
        rng,
        {metric: lambda r: r.uniform(0.01, 1.0)},
        tasks=("sparse_reward", "true_label"),
        intervs=("none", "two_hot"),
    )
    result = fn(load_sweep(tmp_path))
    table = result.tables["curves"].set_index(["dataset_task", "architecture", "intervention"])
    for (d, t, a, i), runs in expected.items():
        row = table.loc[(f"{d}, {N.TASK_LABELS[t]}", a, i)]
        assert row["runs"] == 2 and row["last_step_max"] == 2000
        assert row["last_mean"] == pytest.approx(np.mean([v[2000][metric] for v in runs.values()]), abs=1e-12)
        assert row["first_mean"] == pytest.approx(np.mean([v[0][metric] for v in runs.values()]), abs=1e-12)
    titles = [ax.get_title() for ax in result.figure.axes]
    assert titles.index("mnist, easy (true_label), mlp") < titles.index("mnist, hard (sparse_reward), mlp")
    assert "mnist, hard (sparse_reward), cnn" in titles  # 2 tasks x 2 architectures
    # every panel: a bold mean line per intervention
    assert all(len([l for l in ax.get_lines() if l.get_linewidth() == 2]) == 2 for ax in result.figure.axes[:4])
    if fn is figure15_16_td_loss:
        assert result.figure.axes[0].get_yscale() == "log"
        assert any("Two-hot" in n for n in result.notes)


def test_figure14_sharpness_cnn_with_and_without_layer_norm_regression_only(tmp_path):
    rng = np.random.default_rng(2)
    expected = intervention_sweep(
        tmp_path,
        rng,
        {N.HESSIAN_TOP_EIG: lambda r: r.uniform(1, 10)},
        archs=("cnn", "mlp"),
        intervs=("none", "layer_norm", "two_hot", "layer_norm+two_hot"),
        tasks=("true_label", "sparse_reward"),
    )
    result = figure14_sharpness(load_sweep(tmp_path))
    table = result.tables["sharpness"]
    assert set(table["intervention"]) == {"none", "layer_norm"}  # the CNN with the regression head only
    assert set(table["dataset_task"]) == {"mnist, easy (true_label)", "mnist, hard (sparse_reward)"}
    t = table.set_index(["dataset_task", "intervention"])
    for (d, task, a, i), runs in expected.items():
        if a == "cnn" and i in ("none", "layer_norm"):
            want = np.mean([v[2000][N.HESSIAN_TOP_EIG] for v in runs.values()])
            assert t.loc[(f"{d}, {N.TASK_LABELS[task]}", i), "last_mean"] == pytest.approx(want, abs=1e-12)
    assert len(result.figure.axes) == 2 and result.figure.axes[0].get_yscale() == "log"


def test_figure17_18_probe_curves_without_and_with_layer_norm(tmp_path):
    rng = np.random.default_rng(3)
    curves = {}

    def arrays(r):
        out = {
            s: {N.PROBE_CURVE_LOSS: r.uniform(0.1, 1.0, size=(3, 4)), N.PROBE_CURVE_STEPS: np.arange(1, 5) * 20}
            for s in (0, 2000)
        }
        curves[len(curves)] = out
        return out

    intervention_sweep(
        tmp_path,
        rng,
        {N.PROBE_LOSS: lambda r: 0.5},
        archs=("cnn",),
        intervs=("none", "layer_norm", "reset_last_layer"),
        arrays=arrays,
    )
    result = figure17_18_probe_curves_ln(load_sweep(tmp_path))
    table = result.tables["curves"]
    assert set(table["column"]) == {"none", "layer_norm"}  # reset_last_layer is neither
    assert set(table["step"]) == {0, 2000} and (table["runs"] == 2).all() and (table["targets"] == 6).all()
    # runs are written in order: none seeds 0, 1 (curves 0, 1), then layer_norm seeds 0, 1 (curves 2, 3)
    for col, idx in (("none", (0, 1)), ("layer_norm", (2, 3))):
        want = np.concatenate([curves[k][2000][N.PROBE_CURVE_LOSS] for k in idx]).mean(axis=0)
        row = table[(table["column"] == col) & (table["step"] == 2000)]
        assert row["final_loss"].iloc[0] == pytest.approx(want[-1], rel=1e-6)
        assert row["initial_loss"].iloc[0] == pytest.approx(want[0], rel=1e-6)
    titles = [ax.get_title() for ax in result.figure.axes if ax.get_title()]
    assert any("without layer norm" in t for t in titles) and any("with layer norm" in t for t in titles)


def atari_sweep(root, arrays_at):
    for game in ("freeway", "pong"):
        for interv in ("none", "layer_norm"):
            for seed in (0, 1):
                scalars = {s: {"eval": {"episode_return": float(s / 1000 + seed)}} for s in (1000, 2000, 3000)}
                make_run(
                    root,
                    f"{game}_{interv}_{seed}",
                    config(seed, env="atari", game=game, interventions=interv),
                    scalars,
                    arrays={s: arrays_at(game, interv, seed, s) for s in (1000, 2000, 3000)},
                )


def test_figure19_20_gradient_covariance_over_training_per_game(tmp_path):
    def cov(game, interv, seed, step):
        c = 0.9 - step / 10000 if game == "freeway" else 0.1
        m = np.full((4, 4), c + 0.01 * seed, dtype=np.float32)
        np.fill_diagonal(m, 1.0)
        return {N.GRADCOV_MATRIX: m}

    atari_sweep(tmp_path, cov)
    result = figure19_20_atari_gradcov(load_sweep(tmp_path), max_heatmaps=3)
    table = result.tables["heatmaps"]
    assert len(table) == 4 * 3  # 2 games x 2 interventions, 3 pauses each
    assert (table["run"].str.endswith("_0")).all()  # one run per pair: the first seed
    fw = table[(table["game"] == "freeway") & (table["intervention"] == "none")].set_index("step")["offdiag_mean"]
    assert fw.to_dict() == pytest.approx({1000: 0.8, 2000: 0.7, 3000: 0.6}, abs=1e-6)
    assert len([im for ax in result.figure.axes for im in ax.get_images()]) == 12
    returns_ax = result.figure.axes[0]
    assert returns_ax.get_title() == "freeway: layer_norm"  # pairs sorted by game, then intervention


def test_figure21_22_hessian_spectra_over_training_per_game(tmp_path):
    grid = np.linspace(-1, 10, 50)

    def hess(game, interv, seed, step):
        return {N.HESSIAN_GRID: grid, N.HESSIAN_DENSITY: np.exp(-0.5 * (grid - step / 1000) ** 2)}

    atari_sweep(tmp_path, hess)
    result = figure21_22_atari_hessian(load_sweep(tmp_path))
    spectra = result.tables["spectra"]
    assert len(spectra) == 4 * 3 and set(spectra["step"]) == {1000, 2000, 3000}
    drawn = [ax for ax in result.figure.axes if ax.get_title()]
    assert len(drawn) == 4 and all(len(ax.get_lines()) == 3 for ax in drawn)


def test_stats_figure_draws_any_stats_metric_by_name(tmp_path):
    """New statistics appear by their names alone; a per-layer family without an aggregate is averaged."""
    rng = np.random.default_rng(4)
    expected = {}
    for interv in ("none", "layer_norm"):
        for seed in (0, 1):
            scalars = {}
            for s in STEPS:
                v = {
                    "zebra_norm": rng.uniform(),
                    "policy_churn": rng.uniform(),
                    "param_norm": rng.uniform(),
                    "param_norm/body.net.1": rng.uniform(),
                    "grad_norm/body.net.1": rng.uniform(),
                    "grad_norm/body.net.3": rng.uniform(),
                }
                scalars[s] = {"stats": v, "probe": probe_values(0.5)}
            run = make_run(tmp_path, f"{interv}_{seed}", config(seed, interventions=interv), scalars)
            expected[str(run)] = (interv, scalars)
    result = stats_over_training(load_sweep(tmp_path))
    titles = {ax.get_title() for ax in result.figure.axes if ax.get_title()}
    assert titles == {"grad_norm/* (layer mean)", "param_norm", "policy_churn", "zebra_norm"}
    table = result.tables["statistics"].set_index(["statistic", "group"])
    for interv in ("none", "layer_norm"):
        runs = [sc for i, sc in expected.values() if i == interv]
        group = f"interventions={interv}"
        want = np.mean(
            [(sc[2000]["stats"]["grad_norm/body.net.1"] + sc[2000]["stats"]["grad_norm/body.net.3"]) / 2 for sc in runs]
        )
        assert table.loc[("grad_norm/* (layer mean)", group), "last_mean"] == pytest.approx(want, abs=1e-12)
        want = np.mean([sc[0]["stats"]["zebra_norm"] for sc in runs])
        assert table.loc[("zebra_norm", group), "first_mean"] == pytest.approx(want, abs=1e-12)
        assert table.loc[("zebra_norm", group), "runs"] == 2


def test_stats_figure_draws_the_training_dynamics_beside_the_statistics(tmp_path):
    """The ``dynamics`` phase (whole) and the windowed training dynamics of phase ``train`` get their
    own panels next to the statistics; other train metrics (td_loss) do not."""
    rng = np.random.default_rng(5)
    runs = []
    for seed in (0, 1):
        scalars = {}
        for s in STEPS:
            scalars[s] = {
                "stats": {"feature_norm_mean": rng.uniform()},
                "dynamics": {
                    "greedy_action_change_between_pauses": rng.uniform(),
                    "weight_change_from_init/body.net.1": rng.uniform(),
                    "weight_change_from_init/body.net.3": rng.uniform(),
                },
                "train": {"rel_param_change_window": rng.uniform(), "td_loss": rng.uniform()},
                "probe": probe_values(0.5),
            }
        make_run(tmp_path, f"run_{seed}", config(seed), scalars)
        runs.append(scalars)
    result = stats_over_training(load_sweep(tmp_path))
    titles = {ax.get_title() for ax in result.figure.axes if ax.get_title()}
    assert titles == {
        "feature_norm_mean",
        "dynamics: greedy_action_change_between_pauses",
        "dynamics: weight_change_from_init/* (layer mean)",
        "train: rel_param_change_window",
    }
    table = result.tables["statistics"].set_index("statistic")
    want = np.mean(
        [
            (
                sc[2000]["dynamics"]["weight_change_from_init/body.net.1"]
                + sc[2000]["dynamics"]["weight_change_from_init/body.net.3"]
            )
            / 2
            for sc in runs
        ]
    )
    assert table.loc["dynamics: weight_change_from_init/* (layer mean)", "last_mean"] == pytest.approx(want, abs=1e-12)
    want = np.mean([sc[0]["train"]["rel_param_change_window"] for sc in runs])
    assert table.loc["train: rel_param_change_window", "first_mean"] == pytest.approx(want, abs=1e-12)


def test_figure5_keys_on_the_cnn_width_multiplier(tmp_path):
    expected = {}
    for mult in (0.5, 1.0, 2.0):
        for seed in (0, 1):
            cfg = config(seed, arch="cnn")
            cfg["architecture"] = {"name": "cnn", "channels": 64, "hidden": 256, "width_multiplier": mult}
            p0, p1 = 0.5, 0.5 - 0.1 * seed - 0.2 / mult
            make_run(
                tmp_path,
                f"cnn_{mult}_{seed}",
                cfg,
                {0: {"probe": probe_values(1 - p0)}, 1000: {"probe": probe_values(1 - p1)}},
            )
            expected.setdefault(mult, []).append(p1 - p0)
    for width in (16, 32):  # an MLP sweep by multiplier at base width 16: its x is the width in units
        for mult in (1, 2):
            cfg = config(0, width=width)
            cfg["architecture"]["width_multiplier"] = mult
            make_run(
                tmp_path,
                f"mlp_{width}_{mult}",
                cfg,
                {0: {"probe": probe_values(0.5)}, 1000: {"probe": probe_values(0.6)}},
            )
    table = width_table(load_sweep(tmp_path))
    cnn = table[table["panel"].str.contains("cnn")].set_index("width")
    assert set(cnn["width_axis"]) == {"multiplier"}
    for mult, values in expected.items():
        assert cnn.loc[mult, "plasticity_loss_mean"] == pytest.approx(np.mean(values), abs=1e-12)
    mlp = table[table["panel"].str.contains("mlp")]
    assert sorted(mlp["width"]) == [16, 32, 64] and set(mlp["width_axis"]) == {"units"}
    result = figure5_width(load_sweep(tmp_path))
    assert {ax.get_xlabel() for ax in result.figure.axes} >= {"width multiplier", "width (units)"}


def test_appendix_figures_raise_missing_data_without_their_metrics(tmp_path):
    make_run(tmp_path, "plain", config(0), {0: {"probe": probe_values(0.3)}})
    frame = load_sweep(tmp_path)
    for fn in (
        figure10_11_probe_loss,
        figure12_13_returns,
        figure14_sharpness,
        figure15_16_td_loss,
        figure17_18_probe_curves_ln,
        figure19_20_atari_gradcov,
        figure21_22_atari_hessian,
        stats_over_training,
    ):
        with pytest.raises(MissingData):
            fn(frame)
