"""The typed config schema (dataclasses in Hydra's ConfigStore) and range checks.

Every group option in ``configs/<group>/<option>.yaml`` starts its defaults list with
``/schema/<group>/<schema>@_here_``, so its keys and types come from a dataclass below: a typo
or a wrong type fails at composition with Hydra's message naming the key. ``validate`` adds the
range checks that types cannot express; it raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .errors import ConfigError  # noqa: F401  (re-exported: it lives in a module that depends on nothing)
from .errors import finite as _finite
from .errors import positive as _positive
from .errors import unit as _unit


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Progress(str, enum.Enum):
    auto = "auto"  # a tqdm bar on a terminal, plain log lines otherwise
    bar = "bar"
    log = "log"
    none = "none"


# ------------------------------------------------------------------------------------ env group
# The DQN environments (classification, atari, minatar, ...) register their schemas and checks in
# their own modules (envs/); the case-study envs of section 4 are here.


# ``${mul:a,b}``: the product of two integers, for a preset whose budgets scale with another key
# (``primacy_bias_quick``: ``total_steps: ${mul:2500,${agent.replay_ratio}}`` keeps the environment
# steps fixed while the replay ratio varies).
OmegaConf.register_new_resolver("mul", lambda a, b: int(a) * int(b), replace=True)


def case_study_envs() -> tuple[str, ...]:
    """The env options that run their own program (``registry`` parts with ``program=``: the case
    studies of section 4) instead of the DQN trainer: no agent, replay, plasticity probe or
    checkpoint, so validation skips those groups' cross-checks for them. The continual protocols
    (``continual_envs``) run their own program too, but are not case studies."""
    from . import registry

    return tuple(
        name
        for name, part in registry.parts("env").items()
        if part.spec.program is not None and not part.spec.continual
    )


def continual_envs() -> tuple[str, ...]:
    """The continual supervised protocols (``envs/continual.py``, registered ``continual=True``):
    their own program, every intervention, the pause of the DQN runs; no agent or replay."""
    from . import registry

    return tuple(name for name, part in registry.parts("env").items() if part.spec.continual)


# --------------------------------------------------------------------------- architecture group
# Each architecture's schema lives beside its body (nets/<module>.py) and registers itself there
# (registry.register("architecture", ...)); schemas() below adds them to the ConfigStore.


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
    weight_decay: float = 0.0  # decoupled (AdamW): every parameter times (1 - lr * weight_decay) per step


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
    eps_outside_root: bool = False


# ---------------------------------------------------------------------------------- agent group


@dataclass
class DQNConfig:
    name: str = "dqn"
    double_dqn: bool = False
    gamma: float = 0.99
    batch_size: int = 512
    target_update_steps: int | None = 1000
    target_update_frames: int | None = None
    replay_capacity: int = 100_000
    learning_starts: int = 2048
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_decay_steps: int | None = 2000
    epsilon_decay_frames: int | None = None
    update_every_env_steps: int = 1
    replay_ratio: int = 1
    td_loss_scale: float = 1.0
    td_error_clip: float | None = None


# ---------------------------------------------------------------------------- intervention group


def _interventions_config() -> type:
    """``InterventionsConfig``: one ``Optional[<schema>] = None`` field per registered intervention
    (``interventions/<name>.py``), in the registered order; an entry that is set (not null) is active.

    Importing the interventions package here must not import this module back: the intervention
    modules depend on ``registry``, ``errors``, ``nets`` and ``optim`` only."""
    from . import registry

    fields = [
        (name, Optional[part.schema], field(default=None))  # noqa: UP045 (a runtime type OmegaConf reads)
        for name, part in registry.parts("intervention").items()
    ]
    cls = make_dataclass("InterventionsConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = (
        "One optional entry per intervention; an entry that is set (not null) is active. Interventions "
        "are applied in the order of the fields, the registered order (``interventions.REGISTRY``)."
    )
    return cls


InterventionsConfig = _interventions_config()


# ---------------------------------------------------------------------------- logger group (sinks/)


@dataclass
class TensorBoardConfig:
    """Mirror every metric row to TensorBoard event files (``sinks/tensorboard.py``)."""

    log_dir: str | None = None  # null: <run dir>/tensorboard; else <log_dir>/<run_id>
    flush_secs: int = 30


@dataclass
class WandbConfig:
    """Mirror every metric row to a Weights & Biases run (``sinks/wandb.py``)."""

    project: str = "plasticity-runner"
    entity: str | None = None
    mode: str | None = None  # null: $WANDB_MODE, else offline
    group: str | None = None  # null: derived from the multirun
    job_type: str | None = None  # null: derived from the multirun


@dataclass
class LoggersConfig:
    """One optional entry per sink; an entry that is set (not null) is active (``logger=[a,b]``)."""

    tensorboard: TensorBoardConfig | None = None
    wandb: WandbConfig | None = None


# --------------------------------------------------------------------------------- top level


@dataclass
class SpeedConfig:
    compile: bool = False
    cuda_graphs: bool = False
    step_graph: bool = False
    tf32: bool = True


class PopulationMode(str, enum.Enum):
    vmap = "vmap"
    sequential = "sequential"


@dataclass
class PopulationConfig:
    seeds: list[int] | None = None  # the members' run seeds (population.py); None: one run of ``seed``
    mode: PopulationMode = PopulationMode.vmap


@dataclass
class CheckpointConfig:
    enabled: bool = True
    keep: int = 2


# ------------------------------------------------------------------ diagnostics (probes/, registered)


def _diagnostics_schema() -> type:
    """``diagnostics.<name>`` for every registered diagnostic whose config sits there (all but the
    plasticity probe, at the top-level key ``probe``), in their order: each field the schema its
    module registered (``registry.register("diagnostic", ...)``)."""
    from . import registry

    fields = []
    for name, part in registry.parts("diagnostic").items():
        if part.build().config_key() == f"diagnostics.{name}":
            fields.append((name, part.schema, field(default_factory=part.schema)))
    schema = make_dataclass("DiagnosticsConfig", fields)
    schema.__module__ = __name__  # so that pickles of a config name it where it lives
    return schema


def _probe_schema() -> type:
    from . import registry

    return registry.get("diagnostic", "probe").schema  # probes/plasticity.py; its key stays ``probe``


ProbeConfig = _probe_schema()
DiagnosticsConfig = _diagnostics_schema()


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    total_steps: int = 5_000
    log_every_steps: int = 1000
    progress: Progress = Progress.auto
    torch_threads: int | None = None
    on_divergence: str = "stop"  # stop | continue (a str: `continue` cannot name an enum member)
    objective: str | None = None  # <phase>/<metric>@<reduction> returned to a sweeper (objective.py)
    env: Any = MISSING
    architecture: Any = MISSING
    optimizer: Any = MISSING
    agent: Any = MISSING
    intervention: InterventionsConfig = field(default_factory=InterventionsConfig)
    logger: LoggersConfig = field(default_factory=LoggersConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)


_STATIC_SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSPropConfig},
    "agent": {"dqn": DQNConfig},
}


def schemas() -> dict[str, dict[str, type]]:
    """group -> option -> schema dataclass: the options kept here plus every registered part
    (``registry``) of the groups chosen one option at a time (env, architecture)."""
    from . import registry

    out = {group: dict(options) for group, options in _STATIC_SCHEMAS.items()}
    for group in ("env", "architecture"):
        for name, part in registry.parts(group).items():
            out.setdefault(group, {})[name] = part.schema
    return out


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in schemas().items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def _check_registered(cfg: DictConfig) -> None:
    """The range checks each registered part declares: the chosen env and architecture, every
    active intervention, every diagnostic (at its config key; the case studies skip those marked
    ``trainer_only``)."""
    from . import registry

    for group in ("env", "architecture"):
        name = OmegaConf.select(cfg, f"{group}.name")
        part = registry.parts(group).get(name)
        if part is not None and part.check is not None:
            part.check(cfg, group)
    for name, part in registry.parts("intervention").items():
        if part.check is not None and OmegaConf.select(cfg, f"intervention.{name}") is not None:
            part.check(cfg, f"intervention.{name}")
    case_study = OmegaConf.select(cfg, "env.name") in case_study_envs()
    for part in registry.parts("diagnostic").values():
        key = part.build().config_key()  # diagnostics.<name>; the plasticity probe's: probe
        if part.spec.trainer_only and case_study:
            continue  # a part the case studies' own loops never run (the probe)
        if part.check is not None and OmegaConf.select(cfg, key) is not None:
            part.check(cfg, key)


# --------------------------------------------------------------------------------- validation


def _all_finite(node: Any, prefix: str = "") -> None:
    """Refuse NaN/inf in every numeric key of the config: no key of the schema takes one."""
    if isinstance(node, dict):
        for k, v in node.items():
            _all_finite(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _all_finite(v, f"{prefix}{i}.")
    else:
        _finite(prefix[:-1], node)


def validate(cfg: DictConfig) -> None:
    """Range checks that the schema's types cannot express; raises ``ConfigError`` naming the key.

    First of all, every float of the config must be finite: ``optimizer.lr=nan`` would otherwise
    train and "diverge", which reads like a result.
    """
    _all_finite(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    _positive(cfg, "total_steps", allow_zero=True)
    _positive(cfg, "log_every_steps")
    _positive(cfg, "checkpoint.keep")
    _positive(cfg, "torch_threads")  # null: torch's default
    if cfg.on_divergence not in ("stop", "continue"):
        raise ConfigError("on_divergence", f"must be 'stop' or 'continue', got {cfg.on_divergence!r}")
    if cfg.get("objective") is not None:
        from .objective import ObjectiveError, parse_objective

        try:
            parse_objective(cfg.objective)
        except ObjectiveError as exc:
            raise ConfigError("objective", str(exc)) from None
    env_name = OmegaConf.select(cfg, "env.name")
    if env_name in case_study_envs():
        _validate_case_study(cfg)
    elif env_name not in continual_envs():  # a continual protocol trains no agent: nothing of it to check
        _validate_agent(cfg)
    if OmegaConf.select(cfg, "speed.step_graph"):
        from .step_graph import check_config  # what one graph per training step cannot run

        check_config(cfg)
    for key in ("lr", "eps", "eps_root", "momentum", "weight_decay"):
        _positive(cfg, f"optimizer.{key}", allow_zero=True)
    for key in ("b1", "b2", "decay"):
        _unit(cfg, f"optimizer.{key}")
    _check_registered(cfg)
    from .sinks import check_loggers  # a logger asked for must import: a clear error before the run starts

    check_loggers(cfg)


def _validate_case_study(cfg: DictConfig) -> None:
    """What every case-study env of section 4 shares (its own ranges: its ``check`` in ``envs/``):
    they train no agent and take no intervention."""
    _unit(cfg, "agent.gamma")  # the Brownian study's Q-learning loss uses the agent's discount
    active = [k for k, v in cfg.intervention.items() if v is not None]
    if active:
        raise ConfigError(
            f"intervention.{active[0]}",
            f"env={cfg.env.name} (a case study of section 4) takes no intervention; got {active}",
        )


def _validate_agent(cfg: DictConfig) -> None:
    """The agent and its replay (DQN envs; the probe's own checks are in ``probes/plasticity.py``)."""
    agent = cfg.agent
    for key in (
        "batch_size",
        "target_update_steps",
        "replay_capacity",
        "learning_starts",
        "update_every_env_steps",
        "replay_ratio",
    ):
        _positive(cfg, f"agent.{key}")
    if int(agent.replay_ratio) > 1:  # K updates per env step: a step is one update, an env step every K of them
        if int(agent.update_every_env_steps) != 1:
            raise ConfigError(
                "agent.replay_ratio",
                f"is {agent.replay_ratio} (updates per env step), so "
                f"agent.update_every_env_steps must be 1, got {agent.update_every_env_steps}",
            )
        for key in ("target_update_frames", "epsilon_decay_frames"):
            if OmegaConf.select(cfg, f"agent.{key}") is not None:
                raise ConfigError(
                    "agent.replay_ratio",
                    f"> 1 counts schedules in updates; agent.{key} counts "
                    f"frames: use agent.{key.replace('_frames', '_steps')}",
                )
    _positive(cfg, "agent.epsilon_decay_steps", allow_zero=True)
    _validate_agent_time_and_loss(cfg)
    for key in ("gamma", "epsilon_start", "epsilon_end"):
        _unit(cfg, f"agent.{key}")
    replay_at_first_pause = min(agent.learning_starts, agent.replay_capacity)
    if agent.batch_size > replay_at_first_pause:
        raise ConfigError(
            "agent.batch_size",
            f"the batch ({agent.batch_size}) is larger than the replay contents when learning starts "
            f"(min(agent.learning_starts, agent.replay_capacity) = {replay_at_first_pause})",
        )


def _validate_agent_time_and_loss(cfg: DictConfig) -> None:
    """Each schedule in exactly one unit (training steps or emulator frames); DQN Zoo's loss options."""
    frames = OmegaConf.select(cfg, "env.frame_skip")
    for what in ("target_update", "epsilon_decay"):
        steps_key, frames_key = f"agent.{what}_steps", f"agent.{what}_frames"
        has_steps = OmegaConf.select(cfg, steps_key) is not None
        has_frames = OmegaConf.select(cfg, frames_key) is not None
        if has_steps == has_frames:
            raise ConfigError(frames_key, f"set exactly one of {steps_key} and {frames_key} (the other null)")
        if has_frames and not frames:
            raise ConfigError(frames_key, f"counts emulator frames, but env={cfg.env.name} has none; use {steps_key}")
    _positive(cfg, "agent.target_update_frames")
    _positive(cfg, "agent.epsilon_decay_frames", allow_zero=True)
    _positive(cfg, "agent.td_loss_scale")
    _positive(cfg, "agent.td_error_clip")
    dqn_zoo_loss = cfg.agent.td_error_clip is not None or cfg.agent.td_loss_scale != 1.0
    if dqn_zoo_loss and OmegaConf.select(cfg, "intervention.two_hot") is not None:
        raise ConfigError(
            "agent.td_error_clip",
            "agent.td_error_clip / agent.td_loss_scale shape a squared TD error; the two-hot head's loss is a "
            "cross-entropy: leave them at null / 1.0 with intervention two_hot",
        )
    if OmegaConf.select(cfg, "architecture.shared_bias") and OmegaConf.select(cfg, "intervention.two_hot") is not None:
        raise ConfigError("architecture.shared_bias", "the shared output bias is for the scalar head, not two_hot")
