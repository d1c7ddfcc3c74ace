"""Faults and bad input: non-finite config values, full disks at a checkpoint, corrupt checkpoints,
the run directory's lock, and a run's recorded end (``run.json`` status)."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from plasticity_runner.config import ConfigError, validate

from .conftest import TINY, make_cfg

# configs that between them hold every float key of the schema
FLOAT_CONFIGS = [
    [],
    ["optimizer=sgd"],
    ["optimizer=rmsprop"],
    ["architecture=vit"],
    ["intervention=[spectral_norm,weight_decay,shrink_perturb,redo,two_hot]"],
    ["env=memorization"],
    ["env=brownian"],
    ["env=atari"],
]


def float_keys(cfg) -> list[str]:
    out = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, float):
            out.append(prefix[:-1])

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


@pytest.mark.parametrize("overrides", FLOAT_CONFIGS, ids=lambda o: ",".join(o) or "default")
def test_every_float_key_refuses_nan_and_inf(overrides):
    base = make_cfg(overrides, tiny=False)
    validate(base)  # the config itself is fine
    keys = float_keys(base)
    assert keys
    for key in keys:
        for bad in (float("nan"), float("inf"), float("-inf")):
            cfg = copy.deepcopy(base)
            OmegaConf.update(cfg, key, bad)
            with pytest.raises(ConfigError) as err:
                validate(cfg)
            assert err.value.key == key and "finite" in str(err.value), (key, bad, str(err.value))


def test_nan_learning_rate_through_the_cli(tmp_path):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "plasticity_runner", *TINY, "optimizer.lr=nan", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "optimizer.lr" in res.stderr and "finite" in res.stderr
    assert not (tmp_path / "run" / "metrics").exists()
