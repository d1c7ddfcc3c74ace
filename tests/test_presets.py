"""Every experiment preset runs as one Hydra multirun of the real CLI, end to end, on a tiny budget.

The fast tests shrink each grid along one axis (command-line overrides win over a preset's
``hydra.sweeper.params``); the slow ones run every job of every preset's grid, datasets included
(small fixture copies of MNIST and CIFAR-10).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiment"
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
# presets whose sweeper samples (hydra/sweeper: optuna) have no grid: tests/test_objective.py runs them
GRID_PRESETS = [p for p in PRESETS if "/hydra/sweeper: optuna" not in (PRESETS_DIR / f"{p}.yaml").read_text()]

COMMON = ["checkpoint.enabled=false", "torch_threads=1", "progress=none", "device=cpu"]
# the DQN presets: a few steps, a small replay, the probe at the end only, diagnostics off
RL_TINY = [
    "total_steps=4",
    "log_every_steps=2",
    "probe.every_steps=4",
    "probe.steps=2",
    "probe.num_targets=2",
    "probe.num_inputs=32",
    "probe.batch_size=8",
    "agent.batch_size=8",
    "agent.learning_starts=32",
    "diagnostics.statistics.enabled=false",
    "diagnostics.curvature.enabled=false",
    "diagnostics.gradcov.enabled=false",
]
# per preset: the tiny budget of the slow test, which runs every job of its grid. A new preset needs
# an entry here (test_every_preset_has_a_tiny_budget).
TINY = {
    "fig6_interventions": RL_TINY + ["agent.target_update_steps=2"],
    "fig5_width": RL_TINY,
    "fig5_width_cnn": RL_TINY + ["architecture.channels=4", "architecture.hidden=8"],  # x4: 16 channels, 32 units
    "fig8_9_output_encoding": RL_TINY + ["agent.target_update_steps=2"],
    "fig4_quick": RL_TINY + ["agent.target_update_steps=2"],
    "fig5_quick": RL_TINY,
    "fig6_quick": RL_TINY + ["agent.target_update_steps=2"],
    "paper_classification": RL_TINY + ["agent.target_update_steps=2"],
    "fig3_falsification": RL_TINY + ["agent.target_update_steps=2"],
    "atari_ln": RL_TINY
    + [
        "env.eval_every_steps=4",
        "env.eval_frames=400",
        "env.max_episode_frames=200",
        "agent.target_update_frames=32",  # DQN Zoo's agent counts its target period in frames: 2 training steps
    ],
    "tune_adam_plasticity": RL_TINY + ["agent.target_update_steps=2"],
    "minatar_dqn": RL_TINY
    + ["agent.target_update_steps=2", "agent.epsilon_decay_steps=2", "env.eval_every_steps=4", "env.eval_episodes=2"],
    "primacy_bias_quick": RL_TINY
    + [
        "agent.target_update_steps=2",
        "agent.epsilon_decay_steps=2",
        "env.eval_every_steps=4",
        "env.eval_episodes=2",
        "diagnostics.statistics.num_inputs=32",
    ],
    "cartpole_dqn": RL_TINY
    + ["agent.target_update_steps=2", "agent.epsilon_decay_steps=2", "env.eval_every_steps=4", "env.eval_episodes=2"],
    "continual_minatar": RL_TINY
    + [
        "agent.target_update_steps=2",
        "agent.epsilon_decay_steps=2",
        "env.eval_every_steps=4",
        "env.eval_episodes=2",
        "env.schedule=[{game:breakout,steps:2},{game:seaquest,steps:2}]",
    ],
    "continual_classification": RL_TINY
    + [
        "agent.target_update_steps=2",
        "env.schedule=[{task:true_label,steps:2},{task:random_label,label_seed:1,steps:1},{permutation_seed:1,steps:1}]",
    ],
    "fig1_optimizer_instability": [
        "env.num_images=40",
        "env.iteration_steps=2",
        "env.num_iterations=2",
        "env.batch_size=8",
        "env.eval_samples=32",
        "architecture.width=16",
    ],
    "fig2_brownian": [
        "total_steps=4",
        "env.batch_size=16",
        "env.target_update_steps=2",
        "env.measure_every_steps=2",
        "architecture.width=16",
        "diagnostics.curvature.num_inputs=16",
        "diagnostics.curvature.iterations=4",
        "diagnostics.curvature.grid_points=16",
        "diagnostics.gradcov.k=16",
        "diagnostics.gradcov.num_clusters=2",
    ],
}
CONTINUAL_TINY = [
    "total_steps=4",
    "log_every_steps=2",
    "probe.every_steps=4",
    "probe.steps=2",
    "probe.num_targets=2",
    "probe.num_inputs=32",
    "probe.batch_size=8",
    "diagnostics.statistics.enabled=false",
    "diagnostics.curvature.enabled=false",
    "diagnostics.gradcov.enabled=false",
]
TINY["continual_slowly_changing_regression"] = CONTINUAL_TINY + ["env.flip_every_examples=2"]
TINY["continual_scr_quick"] = TINY["continual_slowly_changing_regression"]
TINY["continual_permuted_mnist"] = CONTINUAL_TINY + [
    "architecture.width=8",
    "env.heldout_images=20",
    "env.num_images=8",
]
TINY["continual_permuted_mnist_quick"] = CONTINUAL_TINY + ["env.num_images=8"]
TINY["continual_shuffled_labels"] = CONTINUAL_TINY + [
    "env.num_images=32",
    "env.steps_per_task=2",
    "env.batch_size=8",
    "env.eval_samples=16",
]
TINY["continual_warm_start"] = CONTINUAL_TINY + [
    "env.warm_steps=2",
    "env.full_steps=2",
    "env.batch_size=8",
    "env.eval_samples=16",
]
TINY["fig1_quick"] = TINY["fig1_optimizer_instability"]
TINY["fig2_quick"] = TINY["fig2_brownian"]
# per preset: overrides that shrink its grid for the fast test (command-line overrides win over the
# preset's hydra.sweeper.params); a preset without an entry runs its whole grid in the fast test
FAST = {
    # the paper presets read MNIST / CIFAR-10 from env.data_dir; on digits with one explicit override
    "paper_classification": ["env.dataset=digits"],
    "fig1_optimizer_instability": ["env.dataset=digits"],
    "fig2_brownian": ["env.dataset=digits"],
    "continual_minatar": ["intervention=[layer_norm]"],
    "primacy_bias_quick": ["seed=0"],
    "continual_classification": ["intervention=[layer_norm]"],
    "fig6_interventions": ["env.dataset=digits", "architecture=mlp", "architecture.width=16", "env.task=sparse_reward"],
    "fig5_width": ["env.dataset=digits", "agent.target_update_steps=2", "env.task=true_label"],
    "fig5_width_cnn": ["env.dataset=digits", "agent.target_update_steps=2", "architecture.width_multiplier=0.25"],
    # the cross of figures 8 / 9 is composed and validated whole in test_preset_axes.py
    "fig8_9_output_encoding": [
        "env.dataset=digits",
        "architecture=mlp",
        "architecture.width=16",
        "intervention=[layer_norm,two_hot]",
        "env.task=sparse_reward",
    ],
    "continual_permuted_mnist": ["env.dataset=digits", "intervention=[continual_backprop]", "seed=0"],
    "continual_permuted_mnist_quick": ["intervention=[layer_norm]", "seed=0"],
    "continual_scr_quick": ["intervention=[continual_backprop]", "seed=0"],
    "continual_slowly_changing_regression": ["seed=0"],
    "continual_shuffled_labels": ["intervention=[shrink_perturb]", "seed=0"],
    "continual_warm_start": ["intervention=[shrink_perturb]", "seed=0"],
    "fig1_quick": ["seed=0"],
    "fig2_quick": ["seed=0"],
    "fig4_quick": ["seed=0"],
    "fig5_quick": ["architecture.width=16", "agent.target_update_steps=2", "seed=0"],
    "fig6_quick": ["intervention=[two_hot]", "seed=0"],
    "fig3_falsification": [
        "env.dataset=digits",
        "architecture=mlp",
        "architecture.width=16",
        "optimizer=adam",
        "seed=0",
    ],
}


def sweep_params(preset: str) -> dict[str, list[str]]:
    """The preset's grid: ``hydra.sweeper.params`` split into values (lists kept whole)."""
    preset_cfg = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
    params = ((preset_cfg.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    out = {}
    for key, value in params.items():
        text = str(value)
        out[key] = [v.strip() for v in (text.replace("],[", "]|[").split("|") if "[" in text else text.split(","))]
    return out


def run_multirun(preset: str, overrides: list[str], sweep_dir: Path) -> list[dict]:
    """Run ``plasticity-run -m experiment=<preset>`` as a user would; returns each job's run.json."""
    cmd = [
        sys.executable,
        "-m",
        "plasticity_runner",
        "-m",
        f"experiment={preset}",
        *COMMON,
        *TINY[preset],
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/run.json"))]
    assert runs and all(r["status"] == "complete" for r in runs)
    return runs


def job_key(run: dict, keys: list[str]) -> tuple:
    cfg = run["config"]
    out = []
    for key in keys:
        if key == "intervention":
            out.append(cfg["interventions"])
        elif f"{key}.name" in cfg:  # a config group: its option's name
            out.append(cfg[f"{key}.name"])
        else:
            out.append(str(cfg[key]))
    return tuple(out)


def expected_grid(preset: str, overrides: list[str]) -> set[tuple]:
    fixed = dict(o.split("=", 1) for o in overrides)
    axes = []
    for key, values in sweep_params(preset).items():
        values = [fixed[key]] if key in fixed else values
        if key == "intervention":
            values = [v.strip("[]").replace(",", "+") for v in values]
        axes.append(values)
    return set(itertools.product(*axes))


def check_grid(preset: str, overrides: list[str], sweep_dir: Path) -> None:
    runs = run_multirun(preset, overrides, sweep_dir)
    keys = list(sweep_params(preset))
    got = [job_key(r, keys) for r in runs]
    assert len(got) == len(set(got)), "two jobs ran the same grid point"
    assert set(got) == expected_grid(preset, overrides)


def test_every_preset_has_a_tiny_budget():
    assert PRESETS and set(PRESETS) == set(TINY)


# presets whose fast multirun repeats another's code path (a quick preset is a paper preset at a smaller
# size; fig5_width_cnn is fig5_width on the CNN): slow, so the default suite stays short; their grids are
# composed and validated in the default suite by tests/test_preset_axes.py
FAST_IS_SLOW = {"fig1_quick", "fig2_quick", "fig4_quick", "fig5_quick", "fig6_quick", "fig5_width_cnn"}


@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.slow) if p in FAST_IS_SLOW else p for p in GRID_PRESETS]
)
def test_preset_multirun_fast(preset, tmp_path):
    check_grid(preset, FAST.get(preset, []), tmp_path / "sweep")


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in PRESETS if p in FAST])
def test_preset_multirun_full_grid(preset, tmp_path, mnist_dir, cifar_dir):
    """Every job of the grid, on small fixture copies of MNIST and CIFAR-10 (for the envs that read
    a data set: MinAtar has no ``env.data_dir``)."""
    from plasticity_runner.cli import compose_config

    has_data = OmegaConf.select(compose_config([f"experiment={preset}"]), "env.data_dir") is not None
    check_grid(preset, [f"env.data_dir={tmp_path}"] if has_data else [], tmp_path / "sweep")


def test_fig3_grid_is_the_papers_and_every_combination_validates():
    """Sections 3.2 / 5.1: three tasks x MNIST, CIFAR-10 x MLP, CNN (x optimizers x seeds)."""
    from omegaconf import OmegaConf

    from plasticity_runner.cli import compose_config
    from plasticity_runner.config import validate
    from plasticity_runner.envs.classification import Task

    grid = sweep_params("fig3_falsification")
    assert set(grid["env.task"]) == {t.value for t in Task}
    assert set(grid["env.dataset"]) == {"mnist", "cifar10"}
    assert set(grid["architecture"]) == {"mlp", "cnn"}
    assert len(grid["optimizer"]) >= 2 and len(grid["seed"]) >= 2
    assert [int(v) for v in grid.pop("seed")] == list(range(5))  # the seed changes nothing validate() checks
    keys = list(grid)
    for values in itertools.product(*grid.values()):
        cfg = compose_config(["experiment=fig3_falsification", *(f"{k}={v}" for k, v in zip(keys, values))])
        validate(cfg)
        for key, value in zip(keys, values):
            got = cfg[key]["name"] if key in ("optimizer", "architecture") else OmegaConf.select(cfg, key)
            assert str(getattr(got, "value", got)) == value, key
        assert cfg.agent.target_update_steps == 1000 and cfg.probe.every_steps == 5000
        assert cfg.diagnostics.statistics.enabled
