"""The presets carry the paper's axes (sections 6.1, 6.2, appendices A.2, B.1) and agree on the probe.

Every grid point of the new presets composes and validates; the multirun of each runs in
tests/test_presets.py.
"""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from plasticity_runner.cli import compose_config
from plasticity_runner.config import validate

from .test_presets import PRESETS, sweep_params

EASY_HARD = {"true_label", "sparse_reward"}  # B.1's 'easy' and 'hard' reward structures (our reading)
REGRESSION = [
    "none",
    "reset_last_layer",
    "layer_norm",
    "shrink_perturb",
    "spectral_norm",
    "weight_decay",
    "reset_optimizer",
]  # the interventions of 6.2 besides the output encoding
QUICK = {
    "fig1_quick": "fig1_optimizer_instability",
    "fig2_quick": "fig2_brownian",
    "fig4_quick": None,
    "fig5_quick": "fig5_width",
    "fig6_quick": "fig6_interventions",
}


def compose(preset: str, *overrides: str):
    return compose_config([f"experiment={preset}", *overrides])


def grid_points(preset: str, full: bool):
    """The preset's grid points as overrides: every combination (``full``), or each value of each
    axis once with the other axes at their first value."""
    grid = sweep_params(preset)
    grid.pop("seed", None)  # the seed changes nothing validate() checks
    keys = list(grid)
    if full:
        for values in itertools.product(*grid.values()):
            yield [f"{k}={v}" for k, v in zip(keys, values)]
        return
    first = {k: v[0] for k, v in grid.items()}
    for key, values in grid.items():
        for v in values:
            yield [f"{k}={v if k == key else first[k]}" for k in keys]


@pytest.mark.parametrize("preset", ["fig5_width", "fig5_width_cnn", "fig6_interventions", "fig8_9_output_encoding"])
def test_task_axis_easy_and_hard(preset):
    assert set(sweep_params(preset)["env.task"]) == EASY_HARD


def test_fig8_9_crosses_every_intervention_with_regression_and_two_hot():
    values = [v.strip("[]").split(",") for v in sweep_params("fig8_9_output_encoding")["intervention"]]
    regression = [v for v in values if "two_hot" not in v]
    categorical = [[x for x in v if x != "two_hot"] for v in values if "two_hot" in v]
    categorical = [v or ["none"] for v in categorical]
    assert sorted(map(tuple, regression)) == sorted(map(tuple, categorical)) == sorted((i,) for i in REGRESSION)
    assert set(sweep_params("fig8_9_output_encoding")["architecture"]) == {"mlp", "cnn", "resnet18", "vit"}
    cfg = compose("fig8_9_output_encoding")
    assert cfg.total_steps == 1_000_000 and cfg.agent.target_update_steps == 1000  # B.1: 1M optimizer steps


@pytest.mark.parametrize("preset", ["fig6_interventions", "fig6_quick", "fig8_9_output_encoding"])
def test_intervention_sets_are_written_as_the_runner_records_them(preset):
    """A run records its interventions in REGISTRY order (``interventions.active_names``): a sweep value
    in another order would label the report's column differently from the preset."""
    from plasticity_runner.interventions import REGISTRY

    order = list(REGISTRY)
    for value in sweep_params(preset)["intervention"]:
        names = [n for n in value.strip("[]").split(",") if n != "none"]
        assert names == sorted(names, key=order.index), value


def test_fig5_width_cnn_sweeps_the_multiplier_around_the_paper_cnn():
    mults = [float(v) for v in sweep_params("fig5_width_cnn")["architecture.width_multiplier"]]
    assert 1.0 in mults and len(mults) >= 4 and min(mults) < 1 < max(mults)
    assert compose("fig5_width_cnn").architecture.name == "cnn"
    assert [int(v) for v in sweep_params("fig5_width")["architecture.width"]] == [16 * f for f in (1, 2, 4, 8, 12, 16)]


@pytest.mark.parametrize("full", [pytest.param(True, marks=pytest.mark.slow), False])
@pytest.mark.parametrize("preset", ["fig5_width_cnn", "fig8_9_output_encoding", *QUICK])
def test_every_grid_point_composes_and_validates(preset, full):
    for overrides in grid_points(preset, full):
        cfg = compose(preset, *overrides)
        validate(cfg)
        for o in overrides:
            key, value = o.split("=", 1)
            if key == "architecture" or key == "optimizer":
                assert cfg[key].name == value
            elif key != "intervention":
                got = OmegaConf.select(cfg, key)
                assert str(getattr(got, "value", got)) == value or float(got) == float(value), key


def _probe(cfg) -> dict:
    return OmegaConf.to_container(cfg.probe, resolve=True)


def test_probe_settings_agree_across_the_classification_presets():
    """Probe settings must agree across presets: the paper uses one probe (3.1, 5.1, A.2)."""
    reference = _probe(compose("fig3_falsification"))
    assert reference["every_steps"] == 5000 and reference["num_targets"] == 10 and reference["steps"] == 2000
    checked = []
    for preset in PRESETS:
        cfg = compose(preset)
        if OmegaConf.select(cfg, "env.name") != "classification":
            continue
        assert _probe(cfg) == reference, preset
        checked.append(preset)
    assert {
        "fig5_width",
        "fig5_width_cnn",
        "fig6_interventions",
        "fig8_9_output_encoding",
        "fig4_quick",
        "fig5_quick",
        "fig6_quick",
        "paper_classification",
    } <= set(checked)


PAPER_PRESETS = [
    "paper_classification",
    "fig1_optimizer_instability",
    "fig2_brownian",
    "fig3_falsification",
    "fig5_width",
    "fig5_width_cnn",
    "fig6_interventions",
    "fig8_9_output_encoding",
]


def _dataset(cfg) -> str:
    return str(getattr(cfg.env.dataset, "value", cfg.env.dataset))


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_run_on_the_papers_data_sets(preset):
    """3.2, A.1: MNIST and CIFAR-10 observations; never a stand-in unless the user overrides it."""
    swept = sweep_params(preset).get("env.dataset")
    datasets = set(swept) if swept else {_dataset(compose(preset))}
    assert datasets and datasets <= {"mnist", "cifar10"}, datasets
    if preset in ("fig1_optimizer_instability", "fig2_brownian"):  # A.1: MNIST
        assert datasets == {"mnist"}
    if swept:
        assert datasets == {"mnist", "cifar10"}


def test_fig1_quick_is_the_a1_setting_on_mnist5k():
    """A.1: an MLP of 2 x 1024 memorising 5000 MNIST images, default against tuned Adam, here three seeds."""
    cfg = compose("fig1_quick")
    assert _dataset(cfg) == "mnist5k" and cfg.env.num_images == 5000
    assert cfg.architecture.name == "mlp" and cfg.architecture.width == 1024 and cfg.architecture.num_layers == 2
    assert sweep_params("fig1_quick")["optimizer"] == ["adam", "adam_tuned"]


def test_every_quick_preset_runs_on_bundled_data_on_the_paper_protocol():
    for quick, paper in QUICK.items():
        cfg = compose(quick)
        assert _dataset(cfg) in ("digits", "mnist5k"), quick  # no download: ships with a package
        assert [int(s) for s in sweep_params(quick)["seed"]] == [0, 1, 2], quick
        if paper is None:
            continue
        ref = compose(paper)
        assert cfg.env.name == ref.env.name and cfg.optimizer == ref.optimizer, quick
        if cfg.env.name == "classification":
            assert cfg.agent == ref.agent and _probe(cfg) == _probe(ref), quick
