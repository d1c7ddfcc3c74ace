"""Classification MDPs (paper 3.2) against hand-written rules, datasets in their real file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner import registry
from plasticity_runner.config import ConfigError, schemas, validate
from plasticity_runner.envs import make_env
from plasticity_runner.envs.classification import ClassificationMDP
from plasticity_runner.envs.datasets import DatasetFileError, DatasetNotFoundError, load_dataset

from .conftest import make_cfg, write_idx


def env_cfg(**kw):
    base = dict(
        name="classification",
        dataset="digits",
        task="true_label",
        data_dir="data",
        download=False,
        num_envs=64,
        num_images=None,
        label_seed=0,
    )
    base.update(kw)
    return OmegaConf.create(base)


def rollout(env, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    env.reset()
    out = []
    for _ in range(steps):
        s = env.state.clone()
        a = torch.randint(10, (env.num_envs,), generator=g)
        a = torch.where(torch.rand(env.num_envs, generator=g) < 0.5, s, a)  # often correct
        res = env.step(a)
        out.append((s, a, res))
    return out


@pytest.mark.parametrize("task", ["true_label", "random_label"])
def test_dense_tasks_follow_paper_rules(task):
    env = ClassificationMDP(env_cfg(task=task), torch.device("cpu"), seed=1)
    steps = rollout(env, 30)
    for s, a, res in steps:
        assert torch.equal(res.reward, (a == s).float())
        # the observation of s_tm1 is an image whose (true or randomised) label is s_tm1
        assert torch.equal(env.labels[res.record["o_tm1"]], s)
        assert torch.equal(res.record["discount_t"], torch.ones(env.num_envs))
        assert torch.equal(res.obs, env.images[res.record["o_t"]])
    # next states are uniform and independent of the action: all classes appear, both after hits and misses
    nxt = torch.cat([env.labels[r.record["o_t"]] for _, _, r in steps])
    hit = torch.cat([(a == s) for s, a, _ in steps])
    assert set(nxt[hit].tolist()) == set(range(10)) and set(nxt[~hit].tolist()) == set(range(10))


def test_random_label_relabels_images():
    true_env = ClassificationMDP(env_cfg(), torch.device("cpu"), seed=0)
    rand_env = ClassificationMDP(env_cfg(task="random_label"), torch.device("cpu"), seed=0)
    agree = (true_env.labels == rand_env.labels).float().mean().item()
    assert 0.03 < agree < 0.2  # about 1/10 of the random labels coincide with the true ones


def test_sparse_reward_rules():
    env = ClassificationMDP(env_cfg(task="sparse_reward"), torch.device("cpu"), seed=2)
    for s, a, res in rollout(env, 40):
        s_t = env.labels[res.record["o_t"]]
        correct = a == s
        assert torch.equal(res.reward, (correct & (s == 9)).float())
        assert torch.equal(s_t[correct], (s[correct] + 1) % 10)


def test_env_is_deterministic_per_seed():
    a = [r.record["o_t"] for _, _, r in rollout(ClassificationMDP(env_cfg(), torch.device("cpu"), 5), 5)]
    b = [r.record["o_t"] for _, _, r in rollout(ClassificationMDP(env_cfg(), torch.device("cpu"), 5), 5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_replay_ring_and_sampling():
    env = ClassificationMDP(env_cfg(num_envs=4), torch.device("cpu"), seed=0)
    replay = env.make_replay(10)
    records = [rollout_step for _, _, rollout_step in rollout(env, 4)]
    for r in records:
        replay.add(r.record)
    assert replay.size == 10 and replay.pos == 6  # 16 added into 10 slots
    # step k writes slots 4k..4k+3 modulo 10: step 2 -> 8,9,0,1; step 3 -> 2..5; step 1 survives in 6,7
    o = [r.record["o_tm1"] for r in records]
    expected = torch.cat([o[2][2:], o[3], o[1][2:], o[2][:2]])
    assert torch.equal(replay.o_tm1, expected)
    batch = replay.sample(8, torch.Generator().manual_seed(0))
    # every sampled transition is one that is stored, with its own reward and next observation
    stored = {
        (int(o), int(a), float(r), int(n)) for o, a, r, n in zip(replay.o_tm1, replay.a_tm1, replay.r_t, replay.o_t)
    }
    for o, a, r, n in zip(batch.o_tm1, batch.a_tm1, batch.r_t, batch.o_t):
        i = [k for k in range(len(env.images)) if torch.equal(env.images[k], o)]
        j = [k for k in range(len(env.images)) if torch.equal(env.images[k], n)]
        assert any((ii, int(a), float(r), jj) in stored for ii in i for jj in j)


def test_mnist_idx_files_load(mnist_dir):
    root, images, labels = mnist_dir
    x, y = load_dataset("mnist", root)
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)
    env = ClassificationMDP(env_cfg(dataset="mnist", data_dir=str(root)), torch.device("cpu"), 0)
    assert env.obs_shape == (1, 28, 28)


def test_cifar_pickled_batches_load(cifar_dir):
    root, images, labels = cifar_dir
    x, y = load_dataset("cifar10", root)
    assert x.shape == (50, 3, 32, 32)
    np.testing.assert_allclose(x.numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_names_path_and_override(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "env.download=true" in str(err.value)


def test_digits_default_needs_no_files():
    x, y = load_dataset("digits", "/nonexistent")
    assert x.shape == (1797, 1, 8, 8) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert sorted(set(y.tolist())) == list(range(10))


def test_mnist_needs_only_the_two_train_files(mnist_dir):
    root, images, labels = mnist_dir
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / "MNIST" / "raw" / name).unlink()
    x, y = load_dataset("mnist", root)
    np.testing.assert_allclose(x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_mnist_names_exactly_the_missing_file(mnist_dir):
    root, _, _ = mnist_dir
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", root)
    assert "MNIST/raw/train-labels-idx1-ubyte" in str(err.value)
    assert "train-images" not in str(err.value) and "t10k" not in str(err.value)


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("garbage", "is not an IDX file"),
        ("gzipped", "is not an IDX file"),
        ("labels_as_images", "expected an IDX file of 3-d unsigned bytes"),
        ("truncated", "is truncated"),
        ("header_only", "is truncated"),
        ("too_long", "longer than its header says"),
    ],
)
def test_bad_mnist_file_names_the_file_and_the_fault(mnist_dir, damage, expected):
    import gzip

    root, images, labels = mnist_dir
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>" * 100)
    elif damage == "gzipped":
        path.write_bytes(gzip.compress(data))
    elif damage == "labels_as_images":
        write_idx(path, labels)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) - 1000])
    elif damage == "header_only":
        path.write_bytes(data[:10])
    else:
        path.write_bytes(data + b"\0" * 28)
    with pytest.raises(DatasetFileError) as err:
        load_dataset("mnist", root)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_mnist_images_and_labels_must_agree(mnist_dir):
    root, images, labels = mnist_dir
    write_idx(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels[:-1])
    with pytest.raises(DatasetFileError) as err:
        load_dataset("mnist", root)
    assert "50 images but" in str(err.value) and "49 labels" in str(err.value)


# ------------------------------------------------------------ every registered environment (registry)

CONFIGS_ENV = Path(__file__).resolve().parents[1] / "configs" / "env"
# the environments the DQN trainer steps (the case studies of section 4 run their own loops)
VECTOR_ENVS = [name for name, part in registry.parts("env").items() if part.build is not None]  # not the programs' envs


def test_every_env_option_has_a_yaml_and_a_schema():
    assert {"classification", "atari", "minatar"} <= set(VECTOR_ENVS)
    assert {p.stem for p in CONFIGS_ENV.glob("*.yaml")} == set(schemas()["env"])
    for name in VECTOR_ENVS:
        assert f"/schema/env/{name}@_here_" in (CONFIGS_ENV / f"{name}.yaml").read_text()


def _play(env, actions, replay=None):
    """Observations, rewards and discounts of stepping ``env`` through ``actions`` (records into ``replay``)."""
    out = []
    for a in actions:
        r = env.step(a)
        n = env.num_envs
        assert tuple(r.obs.shape) == (n, *env.obs_shape) and r.obs.dtype == torch.float32
        assert tuple(r.reward.shape) == (n,)
        if replay is not None:
            replay.add(r.record)
        out.append((r.obs.clone(), r.reward.clone(), r.record["discount_t"].clone()))
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for s, t in zip(a, b) for x, y in zip(s, t))


@pytest.mark.parametrize("name", VECTOR_ENVS)
def test_every_registered_env_meets_the_contract(name):
    """``base.py``'s contract, for each registered environment built from its composed config:
    shapes and dtypes, a replay that takes its records, the same seed and actions giving the same
    game, and a ``state_dict`` that continues it exactly."""
    cfg = make_cfg([f"env={name}", "env.num_envs=2"], tiny=False)
    validate(cfg)
    env = make_env(cfg.env, torch.device("cpu"), seed=3)
    n, shape = env.num_envs, tuple(env.obs_shape)
    assert n == 2 and env.num_actions >= 2
    obs = env.reset()
    assert obs.dtype == torch.float32 and tuple(obs.shape) == (n, *shape)
    g = torch.Generator().manual_seed(0)
    actions = [torch.randint(env.num_actions, (n,), generator=g) for _ in range(24)]
    replay = env.make_replay(32)
    first = _play(env, actions[:12], replay)
    assert replay.size == 24
    batch = replay.sample(8, torch.Generator().manual_seed(1))
    assert tuple(batch.o_tm1.shape) == (8, *shape) == tuple(batch.o_t.shape)
    assert batch.a_tm1.dtype == torch.int64 and bool(((batch.a_tm1 >= 0) & (batch.a_tm1 < env.num_actions)).all())
    assert set(batch.discount_t.unique().tolist()) <= {0.0, 1.0}
    assert tuple(replay.sample_obs(5, torch.Generator().manual_seed(2)).shape) == (5, *shape)

    saved = env.state_dict()
    later = _play(env, actions[12:])
    twin = make_env(cfg.env, torch.device("cpu"), seed=3)
    twin.reset()
    assert _same(_play(twin, actions[:12]), first)  # same seed, same actions: the same game
    resumed = make_env(cfg.env, torch.device("cpu"), seed=3)
    resumed.reset()
    resumed.load_state_dict(saved)
    assert _same(_play(resumed, actions[12:]), later)  # a state_dict continues the game exactly


@pytest.mark.parametrize("name", VECTOR_ENVS)
def test_every_registered_env_checks_num_envs(name):
    with pytest.raises(ConfigError, match=r"config key 'env\.num_envs': must be > 0, got 0"):
        validate(make_cfg([f"env={name}", "env.num_envs=0"], tiny=False))


@pytest.mark.parametrize(
    "name, override, key",
    [
        ("classification", "env.num_images=0", "env.num_images"),
        ("classification", "env.schedule=[{task:nosuch,steps:5}]", "env.schedule.0.task"),
        ("atari", "env.stack=0", "env.stack"),
        ("atari", "env.sticky_action_prob=1.5", "env.sticky_action_prob"),
        ("atari", "env.eval_frames=1001", "env.eval_frames"),
        ("minatar", "env.frame_skip=4", "env.frame_skip"),
        ("minatar", "env.game=pong", "env.game"),
        ("minatar", "env.eval_epsilon=-0.5", "env.eval_epsilon"),
    ],
)
def test_env_checks_name_the_key(name, override, key):
    """The range checks each environment registers run in ``config.validate``."""
    with pytest.raises(ConfigError) as info:
        validate(make_cfg([f"env={name}", override], tiny=False))
    assert info.value.key == key


def test_make_env_names_the_known_environments():
    with pytest.raises(ValueError, match="env.name: unknown environment 'nosuch'; known: .*classification"):
        make_env(OmegaConf.create({"name": "nosuch"}), torch.device("cpu"), 0)
