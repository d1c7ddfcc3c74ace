"""Diagnostics in a real run: scalars and arrays at the pauses their cadence picks, no side effects."""

from __future__ import annotations

import pandas as pd
import pytest

from plasticity_runner import load_arrays, load_sweep
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.probes import pause
from plasticity_runner.trainer import train

from .conftest import make_cfg

CANONICAL = {
    "stats": ["param_norm", "feature_srank_delta0.01", "weight_rank_mean", "dead_frac", "dormant_frac_tau0.025"],
    "curvature": ["hessian_top_eig"],
    "gradcov": ["gradcov_offdiag_mean", "gradcov_neg_frac"],
}


def test_run_writes_diagnostics_at_their_cadence_without_changing_training(tmp_path):
    # pauses at 0, 20, 40; curvature every 40; gradcov on the perturbation loss
    cfg = make_cfg(["diagnostics.curvature.every_steps=40", "diagnostics.gradcov.loss=perturbation"])
    train(cfg, tmp_path / "diag")
    df = load_sweep(tmp_path / "diag")
    steps = {phase: sorted(df[df.phase == phase].step.unique()) for phase in CANONICAL}
    assert steps == {"stats": [0, 20, 40], "curvature": [0, 40], "gradcov": [0, 20, 40]}
    for phase, names in CANONICAL.items():
        assert set(names) <= set(df[df.phase == phase].metric)
    timing = df[df.phase == "timing"]
    assert set(timing[timing.step == 20].metric) >= {"probe_s", "statistics_s", "gradcov_s"}
    assert "curvature_s" not in set(timing[timing.step == 20].metric)
    gradcov = df[(df.phase == "gradcov") & (df.metric == "gradcov_neg_frac")]
    assert gradcov.value.between(0, 1).all()

    arrays = load_arrays(tmp_path / "diag")
    assert sorted(arrays) == [0, 20, 40]
    for step, a in arrays.items():
        # every pause keeps its probe learning curve (figure 4): [num_targets, windows] and window ends
        assert a["probe/curve_loss"].shape == (3, 2) and a["probe/curve_steps"].tolist() == [5, 10]
        assert a["gradcov/matrix"].shape == (32, 32) and sorted(a["gradcov/order"].tolist()) == list(range(32))
        assert (a["gradcov/labels"][1:] >= a["gradcov/labels"][:-1]).all()
        assert ("hessian/density" in a) == (step != 20)
    a = arrays[40]
    assert a["hessian/ritz_values"].shape == a["hessian/ritz_weights"].shape == (1, 4)
    assert a["hessian/grid"].shape == a["hessian/density"].shape == (64,)

    # the same run without diagnostics trains identically (and probes identically); every registered
    # one off but the probe and the dynamics, whose log-point metrics are rows of phase train
    off = [f"{d.config_key()}.enabled=false" for d in pause.diagnostics() if d.name not in ("probe", "dynamics")]
    train(make_cfg(off), tmp_path / "plain")
    plain = load_sweep(tmp_path / "plain")
    assert not plain.phase.isin(list(CANONICAL)).any()

    def kept(frame):
        frame = frame[frame.phase.isin(["train", "probe"])]
        return frame[["step", "phase", "metric", "value"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(kept(df), kept(plain), check_exact=True)


def test_cadence_must_be_a_multiple_of_the_pause_interval():
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["diagnostics.gradcov.every_steps=30"]))
    assert err.value.key == "diagnostics.gradcov.every_steps"
    validate(make_cfg(["diagnostics.gradcov.every_steps=30", "diagnostics.gradcov.enabled=false"]))
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(["diagnostics.gradcov.num_clusters=40"]))
    assert err.value.key == "diagnostics.gradcov.num_clusters"
    # the default cadence follows probe.every_steps
    assert make_cfg(["probe.every_steps=10"]).diagnostics.statistics.every_steps == 10


# ------------------------------------------------------------------ every registered diagnostic

from plasticity_runner import config, registry  # noqa: E402
from plasticity_runner.metrics import load_run  # noqa: E402
from plasticity_runner.probes.base import undeclared  # noqa: E402

DIAGNOSTICS = registry.parts("diagnostic")
CADENCED = [name for name, part in DIAGNOSTICS.items() if part.build().config_key() == f"diagnostics.{name}"]


def test_the_config_schema_has_one_entry_per_registered_diagnostic():
    assert CADENCED == [
        "statistics",
        "curvature",
        "gradcov",
        "dynamics",
        "weight_magnitude",
        "grama",
        "ntk",
    ]  # registration order
    assert [f.name for f in __import__("dataclasses").fields(config.DiagnosticsConfig)] == CADENCED
    assert config.ProbeConfig is DIAGNOSTICS["probe"].schema  # the probe's stays at the top-level key
    cfg = make_cfg([])
    for name in CADENCED:  # defaults from the registered schema; the cadence follows the pause interval
        assert cfg.diagnostics[name].every_steps == cfg.probe.every_steps, name


@pytest.mark.parametrize("name", CADENCED)
def test_each_diagnostic_runs_at_pauses_only(name):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg([f"diagnostics.{name}.every_steps=30"]))
    assert err.value.key == f"diagnostics.{name}.every_steps"
    validate(make_cfg([f"diagnostics.{name}.every_steps=30", f"diagnostics.{name}.enabled=false"]))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A tiny run with every registered diagnostic at its defaults: its metric rows."""
    d = tmp_path_factory.mktemp("defaults")
    train(make_cfg([]), d)
    return load_run(d), load_arrays(d)


@pytest.mark.parametrize("name", list(DIAGNOSTICS))
def test_each_diagnostic_writes_what_it_declares(name, default_run):
    """What the report keys on (``Diagnostic.scalars``, ``.arrays``) is what a run writes: every name
    written is declared, every declared name (a per-layer family: one of its layers) is written."""
    rows, arrays = default_run
    d = DIAGNOSTICS[name].build()
    written = set(rows[rows.phase == d.phase].metric)
    # a phase may be shared (statistics of one kind in ``stats``): what the phase holds, its writers declare
    phase_declared = tuple(
        p for part in DIAGNOSTICS.values() if part.build().phase == d.phase for p in part.build().scalars
    )
    assert not undeclared(phase_declared, written), sorted(undeclared(phase_declared, written))
    for pattern in d.scalars:
        assert undeclared((pattern,), written) != written, (pattern, sorted(written))  # matches a written name
    timing = set(rows[rows.phase == "timing"].metric)
    assert f"{name}_s" in timing
    for step, a in arrays.items():
        assert set(d.arrays) <= set(a), (step, sorted(a))


def test_no_two_diagnostics_declare_the_same_name_in_one_phase():
    seen: dict[tuple[str, str], str] = {}
    for name, part in DIAGNOSTICS.items():
        d = part.build()
        for pattern in d.scalars:
            assert (d.phase, pattern) not in seen, (name, seen.get((d.phase, pattern)), pattern)
            seen[(d.phase, pattern)] = name
