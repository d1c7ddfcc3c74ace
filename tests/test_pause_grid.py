"""Every registered intervention, alone and composed with ``two_hot`` and with ``layer_norm``, on
every registered architecture, through one real pause with every diagnostic on (tiny sizes).

The options come from the registries themselves (``interventions.REGISTRY``, ``registry.parts("architecture")``), so
a new intervention or body is covered without editing this file. A combination that cannot
compose must fail at start with a config error naming both parts; every other one must train,
run its hooks, and come through the probe, the statistics, the curvature, the gradient
covariance and the training dynamics (with their log-point metrics) with finite numbers, writing
the shard and arrays that a run writes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plasticity_runner import registry
from plasticity_runner.config import ConfigError, continual_envs
from plasticity_runner.interventions import REGISTRY
from plasticity_runner.metrics import MetricsWriter, load_arrays, load_run
from plasticity_runner.probes.pause import run_pause
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill, train

from .conftest import TINY, make_cfg
from .test_interventions import ARCH_OVERRIDES, EXTRA

CPU = torch.device("cpu")
BODIES = list(registry.parts("architecture"))
BASE = [o for o in TINY if not o.startswith("architecture.")] + [
    "probe.num_targets=2",
    "probe.steps=2",
    "probe.batch_size=8",
    "probe.num_inputs=16",
    "diagnostics.statistics.num_inputs=16",
    "diagnostics.curvature.num_inputs=16",
    "diagnostics.curvature.iterations=3",
    "diagnostics.curvature.grid_points=16",
    "diagnostics.gradcov.k=8",
    "diagnostics.gradcov.num_clusters=2",
    "agent.batch_size=16",
    # every hook fires within the first steps: target update every 2 steps, ReDo every 2, injection at 2
    "agent.target_update_steps=2",
    "probe.every_steps=3",  # the pause after 3 steps is due for every diagnostic
]


def combinations() -> list[tuple[str, ...]]:
    """Each intervention alone, and with two_hot and with layer_norm (deduplicated, registry order)."""
    out: list[tuple[str, ...]] = []
    for name in REGISTRY:
        for partner in (None, "two_hot", "layer_norm"):
            names = tuple(n for n in REGISTRY if n == name or n == partner)
            if names not in out:
                out.append(names)
    return out


def triples() -> list[tuple[str, ...]]:
    """Each intervention with two_hot and layer_norm at once (registry order, deduplicated)."""
    out: list[tuple[str, ...]] = []
    for name in REGISTRY:
        names = tuple(n for n in REGISTRY if n in (name, "two_hot", "layer_norm"))
        if names not in out:
            out.append(names)
    return out


def test_the_grid_covers_every_registered_part():
    assert set(ARCH_OVERRIDES) == set(BODIES), "register every body with test_overrides=[...] (nets/)"
    covered = {n for names in combinations() for n in names}
    assert covered == set(REGISTRY)


@pytest.mark.parametrize("names", triples(), ids=lambda names: "+".join(names))
@pytest.mark.parametrize("arch", sorted(BODIES))
def test_each_intervention_with_two_hot_and_layer_norm_through_a_pause(arch, names, tmp_path):
    """The default suite: every intervention composed with both, on every body."""
    one_pause(arch, names, tmp_path)


@pytest.mark.parametrize("names", [(n,) for n in REGISTRY], ids=list(REGISTRY))
def test_each_intervention_alone_through_a_pause_on_the_mlp(names, tmp_path):
    one_pause("mlp", names, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("names", combinations(), ids=lambda names: "+".join(names))
@pytest.mark.parametrize("arch", sorted(BODIES))
def test_one_real_pause_with_every_diagnostic(arch, names, tmp_path):
    """The whole grid: alone, with two_hot, with layer_norm, on every body (136 runs, ~6 min)."""
    one_pause(arch, names, tmp_path)


@pytest.mark.parametrize("arch", sorted(BODIES))
def test_two_hot_probe_by_cross_entropy_through_a_pause(arch, tmp_path):
    """The non-default probe objective of a two-hot network (probe.two_hot_fit) on every body."""
    one_pause(arch, ("layer_norm", "two_hot"), tmp_path, ["probe.two_hot_fit=cross_entropy"])


def one_pause(arch: str, names: tuple[str, ...], tmp_path, options: list[str] | None = None) -> None:
    extra = [o for n in names for o in EXTRA.get(n, [])] + list(options or [])
    overrides = BASE + ARCH_OVERRIDES[arch] + [f"intervention=[{','.join(names)}]"] + extra
    cfg = make_cfg(overrides, tiny=False)
    try:
        state = build_train_state(cfg, CPU)
    except ConfigError as exc:  # an incompatible pair: refused at start, naming both
        assert len(names) >= 2 and sum(n in str(exc) for n in names) >= 2, str(exc)
        return
    prefill(state, int(cfg.agent.learning_starts))
    dynamics = state.dynamics
    for i in range(3):  # after-step hooks, a target update and its hooks, then one more step
        if (
            i == 2
        ):  # an earlier greedy-action measurement (as a previous pause takes): the pause has one to compare with
            dynamics.greedy_action_change(
                state.agent.online, state.replay, int(cfg.diagnostics.dynamics.reference_inputs), cfg.seed
            )
        learn_step(state, cfg.agent, 0.5)
        finish_step(state, cfg.agent)
    log_point = dynamics.log_point(state.agent.online)  # the window's gradient norms and effective lr
    assert {"grad_norm_window_mean", "rel_param_change_window"} <= set(log_point), sorted(log_point)
    assert all(math.isfinite(v) for k, v in log_point.items() if "/" not in k), log_point
    writer = MetricsWriter(tmp_path, "grid")
    probe = run_pause(cfg, state, writer)
    writer.flush(state.step)

    assert math.isfinite(probe["probe_loss"]) and math.isfinite(probe["plasticity"])
    rows = load_run(tmp_path)
    phases = set(rows.phase)
    assert {"probe", "stats", "curvature", "gradcov", "dynamics"} <= phases, phases
    issue_15 = {
        "feature_norm_mean",
        "feature_stable_rank",
        "active_frac_p0.01",
        "activation_rate_mean",
        "duplicate_frac_rtol0.01",
        "grad_norm_eval",
        "weight_change_from_init",
        "weight_change_from_init_rel",
        "greedy_action_change_between_pauses",
    }
    assert issue_15 <= set(rows.metric), sorted(issue_15 - set(rows.metric))
    for phase in ("probe", "stats", "curvature", "gradcov", "dynamics"):
        values = rows.query("phase == @phase").value.to_numpy()
        # NaN is a documented value for a few ratios of a degenerate tiny batch; inf never is
        assert not np.isinf(values).any(), (phase, rows.query("phase == @phase"))
        assert np.isfinite(values).any(), (phase, rows.query("phase == @phase"))
    arrays = load_arrays(tmp_path)[state.step]
    assert {"probe/curve_loss", "hessian/density", "gradcov/matrix"} <= set(arrays)
    assert np.isfinite(arrays["gradcov/matrix"]).all()


@pytest.mark.parametrize("arch", sorted(BODIES))
def test_the_non_default_options_of_the_field_interventions_through_a_pause(arch, tmp_path):
    """What the registry grid leaves at its defaults, on every body: AdamW (the agent's optimizer
    and the probe's copies'), ReDo restarting Adam's counts of recycled units (per-element counts
    next to continual backprop's, both under the decoupled decay), NaP projecting the output layer
    too, and a width multiplier."""
    options = [
        "optimizer=adamw",
        "intervention.redo.restart_adam_steps=true",
        "intervention.nap.project_output_layer=true",
        "architecture.width_multiplier=2",
    ]
    one_pause(arch, ("redo", "continual_backprop", "nap"), tmp_path, options)


# ------------------------------------------------------------------ the continual supervised protocols

# per continual protocol: a task switch after step 2 (the target-update hooks fire), 3 steps, pauses at 0 and 3
CONTINUAL_TINY = {
    "slowly_changing_regression": ["env.flip_every_examples=2", "env.target_features=8"],
    "permuted_mnist": ["env.num_images=8", "env.heldout_images=20", "env.batch_size=4", "env.eval_samples=16"],
    "shuffled_labels": ["env.num_images=32", "env.steps_per_task=2", "env.batch_size=8", "env.eval_samples=16"],
    "warm_start": [
        "env.warm_steps=2",
        "env.full_steps=1",
        "env.num_images=32",
        "env.heldout_images=20",
        "env.batch_size=8",
        "env.eval_samples=16",
    ],
}
CLASSIFIES = {"permuted_mnist", "shuffled_labels", "warm_start"}


def test_every_continual_protocol_is_in_the_grid():
    assert set(CONTINUAL_TINY) == set(continual_envs())


def continual_pause(env: str, names: tuple[str, ...], tmp_path) -> None:
    """A 3-step run of ``env`` with ``names`` through two real pauses with every diagnostic on."""
    extra = [o for n in names for o in EXTRA.get(n, [])]
    overrides = (
        [o for o in BASE if not o.startswith(("agent.", "probe.every_steps"))]
        + ARCH_OVERRIDES["mlp"]
        + [
            f"env={env}",
            "total_steps=3",
            "probe.every_steps=3",
            "log_every_steps=1",
            f"intervention=[{','.join(names)}]",
        ]
        + CONTINUAL_TINY[env]
        + extra
    )
    cfg = make_cfg(overrides, tiny=False)
    try:
        summary = train(cfg, tmp_path)
    except ConfigError as exc:  # refused at start, naming the part
        assert env in CLASSIFIES and any(f"intervention.{n}" in str(exc) for n in ("two_hot", "hl_gauss")), str(exc)
        return
    assert summary["status"] == "complete"
    rows = load_run(tmp_path)
    assert {"probe", "stats", "curvature", "gradcov", "dynamics", "task", "train"} <= set(rows.phase)
    for phase in ("probe", "stats", "curvature", "gradcov", "dynamics", "task"):
        values = rows.query("phase == @phase").value.to_numpy()
        assert not np.isinf(values).any() and np.isfinite(values).any(), (phase, names)
    probe = rows.query("phase == 'probe' and metric == 'plasticity'")
    assert list(probe.step) == [0, 3] and np.isfinite(probe.value).all()


def continual_sets(env: str) -> list[tuple[str, ...]]:
    """Every intervention in sets that compose (``test_interventions.compatible_sets``; injection with
    its own partners); a classification protocol refuses two_hot and hl_gauss (tested alone in the slow grid)."""
    from .test_interventions import WITH_INJECTION, compatible_sets

    without = {"two_hot", "hl_gauss"} if env in CLASSIFIES else set()
    sets = compatible_sets([n for n in REGISTRY if n != "plasticity_injection" and n not in without])
    sets.append([n for n in REGISTRY if n in WITH_INJECTION and n not in without])
    return [tuple(s) for s in sets]


@pytest.mark.parametrize("env", sorted(CONTINUAL_TINY))
def test_every_intervention_composed_through_a_continual_pause(env, tmp_path):
    sets = continual_sets(env)
    assert {n for s in sets for n in s} | ({"two_hot", "hl_gauss"} if env in CLASSIFIES else set()) == set(REGISTRY)
    for k, names in enumerate(sets):
        continual_pause(env, names, tmp_path / str(k))


@pytest.mark.slow
@pytest.mark.parametrize("names", [(n,) for n in REGISTRY], ids=list(REGISTRY))
@pytest.mark.parametrize("env", sorted(CONTINUAL_TINY))
def test_each_intervention_alone_through_a_continual_pause(env, names, tmp_path):
    continual_pause(env, names, tmp_path)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw", "adam_tuned"])
def test_every_optimizer_through_a_continual_pause(optimizer, tmp_path):
    overrides = [f"optimizer={optimizer}"]
    extra = ARCH_OVERRIDES["mlp"] + ["env=shuffled_labels", "total_steps=3", "probe.every_steps=3"] + overrides
    cfg = make_cfg(
        [o for o in BASE if not o.startswith(("agent.", "probe.every_steps"))]
        + extra
        + CONTINUAL_TINY["shuffled_labels"]
        + ["intervention=[redo,l2_init]"]
        + EXTRA["redo"],
        tiny=False,
    )
    assert train(cfg, tmp_path)["status"] == "complete"
