"""The continual supervised protocols (``continual/``): their data streams against hand computations,
the task switches, the refusals, the parquet layout and resume bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.continual import learner as learner_lib
from plasticity_runner.continual.streams import (
    BLOCK_STEPS,
    BitFlipRegression,
    PermutedImages,
    ShuffledLabels,
    WarmStart,
    permute_pixels,
)
from plasticity_runner.envs.datasets import load_dataset
from plasticity_runner.metrics import load_run
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_resume import crash_at
from .test_trainer import values

CPU = torch.device("cpu")
PAUSE = [  # every diagnostic at tiny sizes, a pause every 10 steps
    "probe.every_steps=10",
    "probe.num_inputs=32",
    "probe.batch_size=8",
    "probe.steps=4",
    "probe.num_targets=2",
    "diagnostics.statistics.num_inputs=32",
    "diagnostics.curvature.num_inputs=16",
    "diagnostics.gradcov.k=8",
    "diagnostics.gradcov.num_clusters=2",
    "diagnostics.dynamics.num_inputs=16",
    "diagnostics.dynamics.reference_inputs=16",
]
TINY = {  # 40 steps each
    "slowly_changing_regression": [
        "env=slowly_changing_regression",
        "env.flip_every_examples=14",
        "env.batch_size=2",
        "env.target_features=8",
        "architecture.width=5",
        "optimizer=sgd",
        "optimizer.lr=0.01",
    ],
    "permuted_mnist": [
        "env=permuted_mnist",
        "env.num_images=36",
        "env.heldout_images=50",
        "env.batch_size=4",
        "env.eval_samples=32",
    ],
    "shuffled_labels": [
        "env=shuffled_labels",
        "env.num_images=64",
        "env.steps_per_task=15",
        "env.batch_size=8",
        "env.eval_samples=32",
    ],
    "warm_start": [
        "env=warm_start",
        "env.warm_steps=15",
        "env.full_steps=25",
        "env.warm_fraction=0.25",
        "env.num_images=80",
        "env.heldout_images=50",
        "env.batch_size=8",
        "env.eval_samples=32",
    ],
}
ENVS = sorted(TINY)


def cfg_of(env: str, extra: list[str] | None = None):
    return make_cfg(TINY[env] + PAUSE + list(extra or []))


def stream_of(cls, env: str, extra: list[str] | None = None, seed: int = 0):
    cfg = cfg_of(env, extra)
    return cls(cfg.env, int(cfg.total_steps), seed, CPU)


# ------------------------------------------------------------------------------------ the streams


def test_bits_flip_one_at_a_time_at_the_task_switches_and_the_target_is_the_ltu_network():
    s = stream_of(BitFlipRegression, "slowly_changing_regression", ["env.num_bits=6", "env.num_flipping_bits=4"])
    steps_per_task = 14 // 2
    assert s.ends == [7, 14, 21, 28, 35, 40]
    assert [s.task_of(t) for t in range(0, 41)] == [0] + [(t - 1) // steps_per_task for t in range(1, 41)]
    xs = {t: s.batch(t)[0] for t in range(1, 41)}
    for t in range(1, 41):
        task = (t - 1) // steps_per_task
        assert torch.equal(xs[t][:, :4], s.flipping[task].expand(2, 4))
        assert set(xs[t].unique().tolist()) <= {0.0, 1.0}
    for task in range(1, len(s.ends)):  # exactly one flipping bit changed, the one recorded
        diff = (s.flipping[task] != s.flipping[task - 1]).nonzero().flatten().tolist()
        assert diff == [s.flipped_bit[task]]
    random_part = torch.cat([xs[t][:, 4:] for t in range(1, 41)])
    assert 0.3 < float(random_part.mean()) < 0.7 and len({tuple(r) for r in random_part.tolist()}) > 2
    # the target by hand: Dohare et al.'s FixLTUNet with weights in {-1, +1}
    tgt, m = s.target, 6
    w1, b1, w2, b2 = (getattr(tgt, n).numpy() for n in ("w1", "b1", "w2", "b2"))
    assert set(np.unique(np.concatenate([w1.ravel(), b1, w2, b2]))) <= {-1.0, 1.0}
    for t in (1, 8, 40):
        x, y = s.batch(t)
        for row, value in zip(x.numpy(), y.numpy()):
            expected = b2[0]
            for i in range(8):
                n_minus = (m - w1[i].sum() + b1[i]) / 2
                tau = 0.7 * (m + 1) - n_minus
                expected += w2[i] * float(row @ w1[i] + b1[i] > tau)
            assert value == pytest.approx(expected)
    # the range the two-hot support derives from bounds every target: b2 + the negative / positive weights
    lo, hi = s.target_range
    assert (lo, hi) == (b2[0] + w2[w2 < 0].sum(), b2[0] + w2[w2 > 0].sum())
    ys = torch.cat([s.batch(t)[1] for t in range(1, 41)])
    assert lo <= float(ys.min()) and float(ys.max()) <= hi


def test_the_stream_is_a_function_of_the_seed_and_the_step():
    a = stream_of(BitFlipRegression, "slowly_changing_regression")
    b = stream_of(BitFlipRegression, "slowly_changing_regression")
    forward = [a.batch(t)[0] for t in range(1, 41)]
    backward = {t: b.batch(t)[0] for t in range(40, 0, -1)}  # another order of calls: the same draws
    assert all(torch.equal(forward[t - 1], backward[t]) for t in range(1, 41))
    other = stream_of(BitFlipRegression, "slowly_changing_regression", seed=1)
    assert not all(torch.equal(forward[t - 1], other.batch(t)[0]) for t in range(1, 41))


def test_each_permuted_task_is_one_pass_over_the_images_under_its_own_permutation():
    s = stream_of(PermutedImages, "permuted_mnist")
    images, labels = load_dataset("digits", "data")
    train_x, train_y = images[:36].flatten(1).numpy(), labels[:36].numpy()
    assert s.steps_per_task == 9 and s.ends == [9, 18, 27, 36, 40]
    by_pixels = {row.tobytes(): i for i, row in enumerate(train_x)}  # the digits' first 36 images are distinct
    assert len(by_pixels) == 36
    perms = []
    for task in range(len(s.ends)):
        pixels, _ = s.permutations(task)
        perms.append(pixels.tolist())
        seen = []
        for t in range(s.task_start(task) + 1, s.ends[task] + 1):
            x, y = s.batch(t)
            inverse = np.argsort(np.asarray(pixels))
            for row, label in zip(x.flatten(1).numpy(), y.numpy()):
                # pixel j of the permuted image is pixel perm[j] of the original: un-permute and look it up
                i = by_pixels[row[inverse].tobytes()]
                assert train_y[i] == label and np.array_equal(row, train_x[i][np.asarray(pixels)]), (task, t)
                seen.append(i)
        if task < 4:  # a full task sees every training image once
            assert sorted(seen) == list(range(36)), task
    assert len({tuple(p) for p in perms}) == len(perms)  # a new permutation per task
    held_x, held_y = s.heldout(2)
    expected = images[-50:].flatten(1)[:, torch.tensor(perms[2])]
    assert torch.equal(held_x.flatten(1), expected) and torch.equal(held_y, labels[-50:])


def test_permute_pixels_against_a_loop():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    out = permute_pixels(x, perm)
    for b in range(2):
        flat = x[b].flatten().tolist()
        assert out[b].flatten().tolist() == [flat[p] for p in perm.tolist()]


def test_labels_are_redrawn_at_the_task_switches_and_only_there():
    s = stream_of(ShuffledLabels, "shuffled_labels")
    images, labels = load_dataset("digits", "data")
    assert s.ends == [15, 30, 40]
    labelling = {}
    for t in range(1, 41):
        task = (t - 1) // 15
        x, y = s.batch(t)
        idx = [int(np.flatnonzero((images[:64].flatten(1) == row).all(1))[0]) for row in x.flatten(1)]
        for i, label in zip(idx, y.tolist()):
            assert labelling.setdefault((task, i), label) == label  # one labelling within a task
    for task in range(3):
        current = s.labels(task)
        assert sorted(current.tolist()) == sorted(labels[:64].tolist())  # a permutation of the true labels
    assert not torch.equal(s.labels(0), s.labels(1)) and not torch.equal(s.labels(1), s.labels(2))


def test_minibatch_indices_come_in_blocks_that_depend_on_the_step_alone():
    s = stream_of(ShuffledLabels, "shuffled_labels", ["env.steps_per_task=2000", "total_steps=2500"])
    first = s.indices(0, 64, BLOCK_STEPS)
    s.indices(0, 64, BLOCK_STEPS + 1)  # the next block
    assert torch.equal(s.indices(0, 64, BLOCK_STEPS), first)
    assert not torch.equal(s.indices(0, 64, BLOCK_STEPS + 1), s.indices(0, 64, 1))


def test_warm_start_trains_on_the_fraction_then_on_everything():
    s = stream_of(WarmStart, "warm_start")
    assert s.ends == [15, 40] and s.warm_size == 20
    warm = set(s.pools[0].tolist())
    images = load_dataset("digits", "data")[0][:80].flatten(1)
    seen = {0: set(), 1: set()}
    for t in range(1, 41):
        x, _ = s.batch(t)
        seen[s.task_of(t)].update(int(np.flatnonzero((images == row).all(1))[0]) for row in x.flatten(1))
    assert seen[0] <= warm and not seen[1] <= warm
    scratch = stream_of(WarmStart, "warm_start", ["env.warm_steps=0", "env.full_steps=40"])
    assert scratch.ends == [40] and len(scratch.pools) == 1


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("head", ["two_hot", "hl_gauss"])
@pytest.mark.parametrize("env", ["permuted_mnist", "shuffled_labels", "warm_start"])
def test_a_scalar_target_head_is_refused_by_name_on_a_classification_protocol(env, head):
    with pytest.raises(ConfigError, match=f"intervention.{head}"):
        validate(cfg_of(env, [f"intervention=[{head}]"]))


def test_the_regression_refuses_an_image_architecture_and_takes_two_hot():
    with pytest.raises(ConfigError, match="architecture"):
        validate(make_cfg(["env=slowly_changing_regression", "architecture=cnn"], tiny=False))
    validate(cfg_of("slowly_changing_regression", ["intervention=[two_hot]"]))


def test_warm_start_refuses_a_total_that_is_not_its_two_tasks():
    with pytest.raises(ConfigError, match="total_steps"):
        validate(cfg_of("warm_start", ["total_steps=41"]))


# ------------------------------------------------------------------------------------ the runs


@pytest.mark.parametrize("env", ENVS)
def test_a_run_writes_the_pause_phases_and_one_task_row_per_task(env, tmp_path, monkeypatch):
    switches = []
    real = learner_lib.SupervisedAgent.switch_task
    monkeypatch.setattr(
        learner_lib.SupervisedAgent, "switch_task", lambda self, step: (switches.append(step), real(self, step))[1]
    )
    assert train(cfg_of(env), tmp_path)["status"] == "complete"
    shards = sorted(p.name for p in (tmp_path / "metrics").glob("*.parquet"))
    assert shards == [f"step_{s:010d}.parquet" for s in (0, 10, 20, 30, 40)]
    df = load_run(tmp_path)
    assert {"probe", "stats", "curvature", "gradcov", "dynamics", "train", "task", "timing"} <= set(df.phase)
    tasks = df[df.phase == "task"].pivot(index="step", columns="metric", values="value")
    ends = {
        "slowly_changing_regression": [7, 14, 21, 28, 35, 40],
        "permuted_mnist": [9, 18, 27, 36, 40],
        "shuffled_labels": [15, 30, 40],
        "warm_start": [15, 40],
    }[env]
    assert list(tasks.index) == ends and list(tasks.task) == list(range(len(ends)))
    assert switches == ends[:-1]  # the target-update hooks at every switch, none after the last step
    measure = "online_error" if env == "slowly_changing_regression" else "online_accuracy"
    assert tasks[measure].notna().all()
    if env in ("permuted_mnist", "warm_start"):
        assert tasks.heldout_accuracy.between(0, 1).all()
    assert np.isfinite(df[df.phase == "probe"].value).all()


def test_the_online_error_is_the_mean_squared_error_before_each_update(tmp_path, monkeypatch):
    """Oracle: the mean over the task of (prediction - y)^2, each prediction taken before its step."""
    errors = []
    real = learner_lib.SupervisedAgent.learn

    def recording(self, batch):
        with torch.no_grad():
            errors.append(((self.online(batch.o_tm1)[:, 0] - batch.r_t) ** 2).sum().item())
        return real(self, batch)

    monkeypatch.setattr(learner_lib.SupervisedAgent, "learn", recording)
    train(cfg_of("slowly_changing_regression"), tmp_path)
    tasks = load_run(tmp_path).query("phase == 'task' and metric == 'online_error'")
    assert tasks.value.iloc[0] == pytest.approx(sum(errors[:7]) / 14, rel=1e-5)
    assert tasks.value.iloc[1] == pytest.approx(sum(errors[7:14]) / 14, rel=1e-5)


def crash_in_learn(monkeypatch, step: int) -> None:
    """Raise in the optimizer step after ``step`` steps were done."""
    real, count = learner_lib.SupervisedAgent.learn, {"n": 0}

    class Crash(Exception):
        pass

    def crashing(self, batch):
        count["n"] += 1
        if count["n"] == step + 1:
            raise Crash(step)
        return real(self, batch)

    monkeypatch.setattr(learner_lib.SupervisedAgent, "learn", crashing)
    return Crash


@pytest.mark.parametrize(
    "env, step, where",
    [  # permuted_mnist and warm_start: the same loop, slow
        ("slowly_changing_regression", 17, "learn"),
        pytest.param("permuted_mnist", 23, "learn", marks=pytest.mark.slow),
        ("shuffled_labels", 20, "pause"),
        pytest.param("warm_start", 33, "learn", marks=pytest.mark.slow),
    ],
)
def test_a_crash_then_a_restart_gives_the_metrics_of_an_uninterrupted_run(env, step, where, tmp_path, monkeypatch):
    extra = [
        "intervention=[continual_backprop,shrink_perturb,l2_init]",
        "intervention.continual_backprop.replacement_rate=0.2",
        "intervention.continual_backprop.maturity_threshold=2",
        # read-only and stateless (the layout test runs them): off to keep the suite short
        "diagnostics.curvature.enabled=false",
        "diagnostics.gradcov.enabled=false",
    ]
    train(cfg_of(env, extra), tmp_path / "ref")
    reference = values(tmp_path / "ref")
    with monkeypatch.context() as m:
        if where == "pause":
            crash_at(m, step, "pause")
        else:
            crash_in_learn(m, step)
        with pytest.raises(Exception, match=str(step)):
            train(cfg_of(env, extra), tmp_path / "run")
    assert train(cfg_of(env, extra), tmp_path / "run")["status"] == "complete"
    pd.testing.assert_frame_equal(values(tmp_path / "run"), reference, check_exact=True)


def test_the_pause_leaves_training_untouched(tmp_path):
    """Pausing every 10 steps or only at the end: the same task measures (the pause is read-only)."""
    train(cfg_of("permuted_mnist"), tmp_path / "a")
    train(cfg_of("permuted_mnist", ["probe.every_steps=40"]), tmp_path / "b")
    a, b = (load_run(tmp_path / d).query("phase == 'task'").reset_index(drop=True) for d in ("a", "b"))
    pd.testing.assert_frame_equal(a[["step", "metric", "value"]], b[["step", "metric", "value"]], check_exact=True)


def test_the_schema_is_the_registered_one():
    cfg = cfg_of("slowly_changing_regression")
    assert OmegaConf.select(cfg, "env.num_flipping_bits") == 15 and cfg.env.beta == 0.7
