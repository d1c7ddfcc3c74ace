"""The typed config schema (dataclasses in Hydra's ConfigStore) and range checks.

Every group option in ``configs/<group>/<option>.yaml`` starts its defaults list with
``/schema/<group>/<schema>@_here_``, so its keys and types come from a dataclass below: a typo
or a wrong type fails at composition with Hydra's message naming the key. ``validate`` adds the
range checks that types cannot express; it raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value out of its range; ``key`` is the dotted config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dataset(str, enum.Enum):
    digits = "digits"
    mnist = "mnist"
    cifar10 = "cifar10"


class Task(str, enum.Enum):
    true_label = "true_label"
    random_label = "random_label"
    sparse_reward = "sparse_reward"


class Progress(str, enum.Enum):
    auto = "auto"  # a tqdm bar on a terminal, plain log lines otherwise
    bar = "bar"
    log = "log"
    none = "none"


# ------------------------------------------------------------------------------------ env group


@dataclass
class ClassificationEnvConfig:
    """Classification MDP of section 3.2."""

    name: str = "classification"
    dataset: Dataset = Dataset.digits
    task: Task = Task.true_label
    data_dir: str = "data"
    download: bool = False
    num_envs: int = 1
    num_images: Optional[int] = None
    label_seed: int = 0


# --------------------------------------------------------------------------- architecture group


@dataclass
class MLPConfig:
    name: str = "mlp"
    width: int = 512
    num_layers: int = 2


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: int = 64
    hidden: int = 256
    conv_stride: int = 1


# ------------------------------------------------------------------------------ optimizer group


@dataclass
class AdamConfig:
    name: str = "adam"
    kind: str = "adam"
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-9
    eps_root: float = 0.0


@dataclass
class SGDConfig:
    name: str = "sgd"
    kind: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.0


@dataclass
class RMSPropConfig:
    name: str = "rmsprop"
    kind: str = "rmsprop"
    lr: float = 2.5e-4
    decay: float = 0.95
    eps: float = 9.765625e-6
    centered: bool = True


# ---------------------------------------------------------------------------------- agent group


@dataclass
class DQNConfig:
    name: str = "dqn"
    double_dqn: bool = False
    gamma: float = 0.99
    batch_size: int = 512
    target_update_steps: int = 1000
    replay_capacity: int = 100_000
    learning_starts: int = 2048
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_decay_steps: int = 2000
    update_every_env_steps: int = 1


# ---------------------------------------------------------------------------- intervention group


@dataclass
class InterventionsConfig:
    """One optional entry per intervention; an entry that is set (not null) is active.

    Interventions are applied in the order of the fields below (see ``interventions/``).
    """


# --------------------------------------------------------------------------------- top level


@dataclass
class ProbeConfig:
    enabled: bool = True
    every_steps: int = 5000
    num_targets: int = 10
    steps: int = 2000
    batch_size: int = 128
    num_inputs: int = 2048
    sin_scale: float = 1e5
    curve_every_steps: int = 20
    vectorised: bool = True


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    total_steps: int = 10_000
    log_every_steps: int = 1000
    progress: Progress = Progress.auto
    torch_threads: Optional[int] = None
    env: Any = MISSING
    architecture: Any = MISSING
    optimizer: Any = MISSING
    agent: Any = MISSING
    intervention: InterventionsConfig = field(default_factory=InterventionsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "env": {"classification": ClassificationEnvConfig},
    "architecture": {"mlp": MLPConfig, "cnn": CNNConfig},
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSPropConfig},
    "agent": {"dqn": DQNConfig},
}


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


# --------------------------------------------------------------------------------- validation


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _unit(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must lie in [0, 1], got {value}")


def validate(cfg: DictConfig) -> None:
    """Range checks that the schema's types cannot express; raises ``ConfigError`` naming the key."""
    _positive(cfg, "total_steps", allow_zero=True)
    _positive(cfg, "log_every_steps")
    for key in ("every_steps", "num_targets", "steps", "batch_size", "num_inputs", "curve_every_steps"):
        _positive(cfg, f"probe.{key}")
    if cfg.probe.batch_size > cfg.probe.num_inputs:
        raise ConfigError(
            "probe.batch_size",
            f"the probe minibatch ({cfg.probe.batch_size}) is larger than its input set "
            f"probe.num_inputs ({cfg.probe.num_inputs})",
        )
    agent = cfg.agent
    for key in ("batch_size", "target_update_steps", "replay_capacity", "learning_starts", "update_every_env_steps"):
        _positive(cfg, f"agent.{key}")
    _positive(cfg, "agent.epsilon_decay_steps", allow_zero=True)
    for key in ("gamma", "epsilon_start", "epsilon_end"):
        _unit(cfg, f"agent.{key}")
    _positive(cfg, "env.num_envs")
    _positive(cfg, "env.num_images")
    replay_at_first_pause = min(agent.learning_starts, agent.replay_capacity)
    if agent.batch_size > replay_at_first_pause:
        raise ConfigError(
            "agent.batch_size",
            f"the batch ({agent.batch_size}) is larger than the replay contents when learning starts "
            f"(min(agent.learning_starts, agent.replay_capacity) = {replay_at_first_pause})",
        )
    if cfg.probe.enabled and cfg.probe.num_inputs > replay_at_first_pause:
        raise ConfigError(
            "probe.num_inputs",
            f"the probe needs {cfg.probe.num_inputs} replay inputs but the replay holds "
            f"{replay_at_first_pause} at the first pause (min(agent.learning_starts, agent.replay_capacity))",
        )
    for key in ("lr", "eps", "eps_root", "momentum"):
        _positive(cfg, f"optimizer.{key}", allow_zero=True)
    for key in ("b1", "b2", "decay"):
        _unit(cfg, f"optimizer.{key}")
    for key in ("width", "num_layers", "channels", "hidden", "conv_stride"):
        _positive(cfg, f"architecture.{key}")
