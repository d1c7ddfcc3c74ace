"""Random labels per seed: by default each run seed draws its own relabelling (its own named
stream), the same seed always the same one, and an explicit ``env.label_seed`` pins it; for the
classification MDP's ``random_label`` task, the Brownian study's MDP and figure 1's memorisation."""

from __future__ import annotations

import torch

from plasticity_runner import seeding
from plasticity_runner.case_studies.brownian import make_mdp
from plasticity_runner.case_studies.memorization import load_images
from plasticity_runner.cli import compose_config
from plasticity_runner.envs import make_env
from plasticity_runner.envs.classification import NUM_CLASSES

from .conftest import make_cfg
from .test_case_studies import BROWNIAN_TINY, MEMORIZATION_TINY

CPU = torch.device("cpu")


def random_labels(seed: int, *overrides: str) -> torch.Tensor:
    cfg = make_cfg(["env.task=random_label", f"seed={seed}", *overrides])
    return make_env(cfg.env, CPU, seed=seeding.env_seed(cfg.seed)).labels


def oracle_labels(label_seed: int, n: int) -> torch.Tensor:
    """One uniform label per image, drawn on a CPU generator seeded with ``label_seed``."""
    return torch.randint(NUM_CLASSES, (n,), generator=torch.Generator().manual_seed(label_seed))


def test_two_seeds_relabel_differently_and_one_seed_always_the_same():
    a, b = random_labels(0), random_labels(1)
    assert (a != b).double().mean() > 0.8  # independent labels agree on ~1/10 of the images
    assert torch.equal(a, random_labels(0))
    derived = seeding.label_seed(seeding.env_seed(0))
    assert torch.equal(a, oracle_labels(derived, len(a)))  # the run seed's own stream ``labels``


def test_an_explicit_label_seed_pins_the_relabelling_across_run_seeds():
    a, b = random_labels(0, "env.label_seed=7"), random_labels(3, "env.label_seed=7")
    assert torch.equal(a, b) and torch.equal(a, oracle_labels(7, len(a)))
    assert not torch.equal(a, random_labels(0))


def test_the_brownian_studys_mdp_follows_the_run_seed_too():
    def labels(seed: int, *overrides: str) -> torch.Tensor:
        cfg = compose_config([*BROWNIAN_TINY, "env.task=random_label", f"seed={seed}", *overrides])
        return make_mdp(cfg.env, CPU, seeding.env_seed(cfg.seed)).labels

    assert not torch.equal(labels(0), labels(1)) and torch.equal(labels(0), labels(0))
    assert torch.equal(labels(0, "env.label_seed=4"), labels(1, "env.label_seed=4"))


def memorised_labels(seed: int, *overrides: str, relabels: int = 2) -> list[torch.Tensor]:
    cfg = compose_config([*MEMORIZATION_TINY, "env.num_images=500", f"seed={seed}", *overrides])
    data = load_images(cfg.env, CPU, int(cfg.seed))
    out = [data.labels.clone()]
    for _ in range(relabels):
        out.append(data.relabel().clone())
    return out


def test_figure_1s_relabellings_are_the_run_seeds_own():
    a, b = memorised_labels(0), memorised_labels(1)
    assert all((x != y).double().mean() > 0.7 for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(a, memorised_labels(0)))
    pinned = memorised_labels(0, "env.label_seed=5"), memorised_labels(2, "env.label_seed=5")
    assert all(torch.equal(x, y) for x, y in zip(*pinned))
    # the oracle: the true labels under randperm draws of a CPU generator seeded with the label seed
    cfg = compose_config([*MEMORIZATION_TINY, "env.num_images=500"])
    true = load_images(cfg.env, CPU, 0).true_labels
    g = torch.Generator().manual_seed(5)
    assert all(torch.equal(x, true[torch.randperm(len(true), generator=g)]) for x in pinned[0])


def test_a_chains_random_segments_relabel_per_segment_and_per_seed():
    """Two ``random_label`` segments without a label seed: each its own relabelling (stream
    ``labels`` of the env seed and the segment), a function of the run seed."""
    chain = "env.schedule=[{task:random_label,steps:2},{task:random_label,steps:2},{task:random_label,label_seed:7,steps:2}]"

    def segment_labels(seed: int) -> list[torch.Tensor]:
        cfg = make_cfg([chain, f"seed={seed}"])
        env = make_env(cfg.env, CPU, seed=seeding.env_seed(cfg.seed))
        out = [env.labels.clone()]
        for k in (1, 2):
            env.switch(k)
            out.append(env.labels.clone())
        return out

    a, b = segment_labels(0), segment_labels(1)
    n = len(a[0])
    for k in (0, 1):
        assert torch.equal(a[k], oracle_labels(seeding.label_seed(seeding.env_seed(0), k), n))
        assert not torch.equal(a[k], b[k])
    assert not torch.equal(a[0], a[1])
    assert torch.equal(a[2], b[2]) and torch.equal(a[2], oracle_labels(7, n))  # pinned
