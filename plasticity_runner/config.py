"""The typed config schema (dataclasses in Hydra's ConfigStore) and range checks.

Every group option in ``configs/<group>/<option>.yaml`` starts its defaults list with
``/schema/<group>/<schema>@_here_``, so its keys and types come from a dataclass below: a typo
or a wrong type fails at composition with Hydra's message naming the key. ``validate`` adds the
range checks that types cannot express; it raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from .errors import ConfigError, finite as _finite, positive as _positive, unit as _unit  # noqa: F401  (re-exported: it lives in a module that depends on nothing)


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


class Stem(str, enum.Enum):
    auto = "auto"  # small for inputs with side <= 32, imagenet otherwise
    small = "small"  # one 3x3 stride-1 conv (He et al.'s CIFAR ResNets)
    imagenet = "imagenet"  # 7x7 stride-2 conv and 3x3 stride-2 max-pool


class Pool(str, enum.Enum):
    cls = "cls"  # the class token
    mean = "mean"  # the mean of the patch tokens


class GradCovLoss(str, enum.Enum):
    td = "td"  # the agent's TD loss of each transition (eq. 1; A.1)
    perturbation = "perturbation"  # [f(x) - sg(f(x) + eps)]^2 of section 4.2, eps per input (signs: coin flips)
    perturbation_shared = "perturbation_shared"  # the same loss, one eps per output shared by all inputs


class TwoHotFit(str, enum.Enum):
    expected_q = "expected_q"  # the squared error of the expected Q-values, as a scalar head is fitted
    cross_entropy = "cross_entropy"  # the two-hot cross-entropy of the head's logits to two_hot(g)


class ProbeAt(str, enum.Enum):
    before_interventions = "before_interventions"  # the network as trained, before the step's hooks
    after_interventions = "after_interventions"  # after the step's after-step and target-update hooks


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
    schedule: Optional[list[Any]] = None  # a chain of segments {task, label_seed, permutation_seed, steps} (envs/schedule.py)
    pause_at_switch: bool = False  # chains: a probe pause right before and right after each switch


def case_study_envs() -> tuple[str, ...]:
    """The env options that run their own program (``registry`` parts with ``program=``: the case
    studies of section 4) instead of the DQN trainer: no agent, replay, plasticity probe or
    checkpoint, so validation skips those groups' cross-checks for them."""
    from . import registry

    return tuple(name for name, part in registry.parts("env").items() if part.extra.get("program"))


def __getattr__(name: str) -> Any:
    if name == "CASE_STUDY_ENVS":  # derived from the registry when read (the env modules import this one)
        return case_study_envs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- architecture group


@dataclass
class MLPConfig:
    name: str = "mlp"
    width: int = 512
    num_layers: int = 2
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: int = 64
    hidden: int = 256
    conv_stride: int = 1
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class ResNet18Config:
    name: str = "resnet18"
    width: int = 64
    stem: Stem = Stem.auto
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class ViTConfig:
    name: str = "vit"
    patch_size: int = 3
    dim: int = 256
    ff_dim: int = 1024
    num_blocks: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    pool: Pool = Pool.cls
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class MinAtarCNNConfig:
    name: str = "minatar_cnn"
    channels: int = 16
    hidden: int = 128
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


@dataclass
class NatureCNNConfig:
    name: str = "nature_cnn"
    hidden: int = 512
    shared_bias: bool = False
    width_multiplier: float = 1.0  # scales every width of the body (nets.scaled); 1 = the paper's network


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
    target_update_steps: Optional[int] = 1000
    target_update_frames: Optional[int] = None
    replay_capacity: int = 100_000
    learning_starts: int = 2048
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_decay_steps: Optional[int] = 2000
    epsilon_decay_frames: Optional[int] = None
    update_every_env_steps: int = 1
    td_loss_scale: float = 1.0
    td_error_clip: Optional[float] = None


# ---------------------------------------------------------------------------- intervention group


@dataclass
class CReLUConfig:
    """Concatenated ReLU activations (no options)."""


@dataclass
class LayerNormConfig:
    """Layer norm after each conv and fully-connected hidden layer (no options)."""


@dataclass
class SpectralNormConfig:
    n_power_iterations: int = 1
    eps: float = 1e-12


@dataclass
class TwoHotConfig:
    v_min: float = -100.0
    v_max: float = 100.0
    num_bins: int = 201


@dataclass
class WeightDecayConfig:
    coeff: float = 1e-5


@dataclass
class ShrinkPerturbConfig:
    shrink: float = 0.4
    perturb: float = 0.1


@dataclass
class ResetLastLayerConfig:
    """Re-initialise the output layer at each target update (no options)."""


@dataclass
class L2InitConfig:
    coeff: float = 1e-4


@dataclass
class ReDoConfig:
    tau: float = 0.1
    every_steps: int = 1000
    restart_adam_steps: bool = False


@dataclass
class ContinualBackpropConfig:
    replacement_rate: float = 1e-4
    decay_rate: float = 0.99
    maturity_threshold: int = 100
    restart_adam_steps: bool = True


@dataclass
class ScheduledResetConfig:
    every_steps: int = 40_000
    last_k_layers: Optional[int] = None
    shrink: float = 1.0
    perturb: float = 0.0


@dataclass
class SoftShrinkPerturbConfig:
    shrink: float = 1e-4
    perturb: float = 0.01414


@dataclass
class NaPConfig:
    project_output_layer: bool = False


@dataclass
class PlasticityInjectionConfig:
    at_step: int = 50_000


@dataclass
class ResetOptimizerConfig:
    """Reset the optimizer state at each target update (no options)."""


@dataclass
class InterventionsConfig:
    """One optional entry per intervention; an entry that is set (not null) is active.

    Interventions are applied in the order of the fields below, which is the order of
    ``interventions.REGISTRY`` (see ``interventions/__init__.py`` and the README).
    """

    crelu: Optional[CReLUConfig] = None
    layer_norm: Optional[LayerNormConfig] = None
    spectral_norm: Optional[SpectralNormConfig] = None
    two_hot: Optional[TwoHotConfig] = None
    weight_decay: Optional[WeightDecayConfig] = None
    l2_init: Optional[L2InitConfig] = None
    shrink_perturb: Optional[ShrinkPerturbConfig] = None
    reset_last_layer: Optional[ResetLastLayerConfig] = None
    redo: Optional[ReDoConfig] = None
    continual_backprop: Optional[ContinualBackpropConfig] = None
    scheduled_reset: Optional[ScheduledResetConfig] = None
    soft_shrink_perturb: Optional[SoftShrinkPerturbConfig] = None
    plasticity_injection: Optional[PlasticityInjectionConfig] = None
    nap: Optional[NaPConfig] = None
    reset_optimizer: Optional[ResetOptimizerConfig] = None


# ---------------------------------------------------------------------------- logger group (sinks/)


@dataclass
class TensorBoardConfig:
    """Mirror every metric row to TensorBoard event files (``sinks/tensorboard.py``)."""

    log_dir: Optional[str] = None  # null: <run dir>/tensorboard; else <log_dir>/<run_id>
    flush_secs: int = 30


@dataclass
class WandbConfig:
    """Mirror every metric row to a Weights & Biases run (``sinks/wandb.py``)."""

    project: str = "plasticity-runner"
    entity: Optional[str] = None
    mode: Optional[str] = None  # null: $WANDB_MODE, else offline
    group: Optional[str] = None  # null: derived from the multirun
    job_type: Optional[str] = None  # null: derived from the multirun


@dataclass
class LoggersConfig:
    """One optional entry per sink; an entry that is set (not null) is active (``logger=[a,b]``)."""

    tensorboard: Optional[TensorBoardConfig] = None
    wandb: Optional[WandbConfig] = None


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
    at: ProbeAt = ProbeAt.before_interventions
    two_hot_fit: TwoHotFit = TwoHotFit.expected_q


@dataclass
class SpeedConfig:
    compile: bool = False
    cuda_graphs: bool = False
    tf32: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True
    keep: int = 2


# ------------------------------------------------------------------ diagnostics (probes/diagnostics.py)


@dataclass
class StatisticsConfig:
    """Parameter and activation statistics of section 5.2 (``probes/statistics.py``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 1024
    srank_delta: float = 0.01
    weight_rank_rtol: float = 1e-3
    dormant_tau: float = 0.025
    active_min_frac: float = 0.01  # active_frac_p<p>: output > 0 on at least this fraction of inputs
    # duplicate_frac_rtol<rtol>: ||h_u - h_v|| <= rtol * max(||h_u||, ||h_v||); null: not computed
    duplicate_rtol: Optional[float] = 0.01


@dataclass
class CurvatureConfig:
    """Hessian spectrum of the probe loss by stochastic Lanczos quadrature (``probes/curvature.py``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 512
    iterations: int = 30
    num_vectors: int = 2
    sigma_rel: float = 0.01
    grid_points: int = 512
    grid_min: Optional[float] = None
    grid_max: Optional[float] = None
    chunk_size: int = 512


@dataclass
class GradCovConfig:
    """Gradient covariance C_k of eq. (3) (``probes/gradcov.py``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    k: int = 512
    loss: GradCovLoss = GradCovLoss.td
    num_clusters: int = 10
    chunk_size: int = 64
    max_memory_mb: int = 512


@dataclass
class DynamicsConfig:
    """Training dynamics (``probes/dynamics.py``): gradient norms, weight change since init, effective
    learning rate per log window, policy churn."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 512  # transitions of the evaluation batch in grad_norm_eval (the training batch: 512)
    reference_inputs: int = 512  # replay observations of the fixed policy-churn reference batch
    log_point_metrics: bool = True  # grad_norm_window_mean (accumulated on the device) and eff_lr_window


@dataclass
class DiagnosticsConfig:
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    gradcov: GradCovConfig = field(default_factory=GradCovConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    total_steps: int = 5_000
    log_every_steps: int = 1000
    progress: Progress = Progress.auto
    torch_threads: Optional[int] = None
    on_divergence: str = "stop"  # stop | continue (a str: `continue` cannot name an enum member)
    objective: Optional[str] = None  # <phase>/<metric>@<reduction> returned to a sweeper (objective.py)
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


_STATIC_SCHEMAS: dict[str, dict[str, type]] = {
    "env": {"classification": ClassificationEnvConfig},
    "architecture": {
        "mlp": MLPConfig,
        "cnn": CNNConfig,
        "resnet18": ResNet18Config,
        "vit": ViTConfig,
        "nature_cnn": NatureCNNConfig,
        "minatar_cnn": MinAtarCNNConfig,
    },
    "optimizer": {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSPropConfig},
    "agent": {"dqn": DQNConfig},
}


def schemas() -> dict[str, dict[str, type]]:
    """group -> option -> schema dataclass: the options kept here plus every registered part
    (``registry``) of the groups chosen one option at a time (env, architecture)."""
    from . import registry
    from .envs.atari import AtariEnvConfig  # the schema lives beside the environment (ale-py is imported lazily)
    from .envs.minatar import MinAtarEnvConfig  # likewise (the minatar package is imported lazily)

    out = {group: dict(options) for group, options in _STATIC_SCHEMAS.items()}
    out["env"].update(atari=AtariEnvConfig, minatar=MinAtarEnvConfig)
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
    active intervention, every diagnostic."""
    from . import registry

    for group in ("env", "architecture"):
        name = OmegaConf.select(cfg, f"{group}.name")
        part = registry.parts(group).get(name)
        if part is not None and part.check is not None:
            part.check(cfg, group)
    for name, part in registry.parts("intervention").items():
        if part.check is not None and OmegaConf.select(cfg, f"intervention.{name}") is not None:
            part.check(cfg, f"intervention.{name}")
    for name, part in registry.parts("diagnostic").items():
        if part.check is not None and OmegaConf.select(cfg, f"diagnostics.{name}") is not None:
            part.check(cfg, f"diagnostics.{name}")


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
    if OmegaConf.select(cfg, "env.name") in case_study_envs():
        _validate_case_study(cfg)
    else:
        _validate_agent(cfg)
    if OmegaConf.select(cfg, "env.name") in ("minatar", "classification"):
        from .envs.schedule import check_env

        check_env(cfg.env)  # the MinAtar game and env.schedule's segments
    for key in ("lr", "eps", "eps_root", "momentum", "weight_decay"):
        _positive(cfg, f"optimizer.{key}", allow_zero=True)
    for key in ("b1", "b2", "decay"):
        _unit(cfg, f"optimizer.{key}")
    for key in ("width", "num_layers", "channels", "hidden", "conv_stride"):
        _positive(cfg, f"architecture.{key}")
    for key in ("patch_size", "dim", "ff_dim", "num_blocks", "num_heads", "width_multiplier"):
        _positive(cfg, f"architecture.{key}")
    _unit(cfg, "architecture.dropout")
    if OmegaConf.select(cfg, "architecture.name") == "vit":
        from .nets.scaling import scaled

        dim = scaled(cfg.architecture.dim, cfg.architecture.width_multiplier)
        if dim % cfg.architecture.num_heads:
            raise ConfigError(
                "architecture.num_heads",
                f"must divide architecture.dim x width_multiplier ({dim}), got {cfg.architecture.num_heads}",
            )
    _validate_interventions(cfg)
    _validate_diagnostics(cfg)
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
    """The agent, its replay and the plasticity probe that reads the replay (DQN envs)."""
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
    _validate_agent_time_and_loss(cfg)
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
            raise ConfigError(
                frames_key, f"counts emulator frames, but env={cfg.env.name} has none; use {steps_key}"
            )
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
    protocol = OmegaConf.select(cfg, "env.eval_protocol")
    if str(getattr(protocol, "value", protocol)) == "frames":
        per_step = int(cfg.env.num_envs) * int(cfg.env.frame_skip)
        if cfg.env.eval_frames <= 0 or cfg.env.eval_frames % per_step:
            raise ConfigError(
                "env.eval_frames",
                f"must be a positive multiple of env.num_envs x env.frame_skip ({per_step}), got {cfg.env.eval_frames}",
            )


def _validate_interventions(cfg: DictConfig) -> None:
    """Ranges of the intervention options (compatibility is checked by the interventions)."""
    _positive(cfg, "intervention.spectral_norm.n_power_iterations")
    _positive(cfg, "intervention.spectral_norm.eps")
    _positive(cfg, "intervention.weight_decay.coeff", allow_zero=True)
    _positive(cfg, "intervention.shrink_perturb.shrink", allow_zero=True)
    _positive(cfg, "intervention.shrink_perturb.perturb", allow_zero=True)
    _positive(cfg, "intervention.redo.tau", allow_zero=True)
    _positive(cfg, "intervention.redo.every_steps")
    _positive(cfg, "intervention.plasticity_injection.at_step")
    _positive(cfg, "intervention.l2_init.coeff", allow_zero=True)
    _unit(cfg, "intervention.continual_backprop.replacement_rate")
    _unit(cfg, "intervention.continual_backprop.decay_rate")
    _positive(cfg, "intervention.continual_backprop.maturity_threshold", allow_zero=True)
    _positive(cfg, "intervention.scheduled_reset.every_steps")
    _positive(cfg, "intervention.scheduled_reset.last_k_layers")  # null: the whole network
    _positive(cfg, "intervention.scheduled_reset.shrink", allow_zero=True)
    _positive(cfg, "intervention.scheduled_reset.perturb", allow_zero=True)
    _unit(cfg, "intervention.soft_shrink_perturb.shrink")
    _positive(cfg, "intervention.soft_shrink_perturb.perturb", allow_zero=True)
    decay = OmegaConf.select(cfg, "intervention.continual_backprop.decay_rate")
    if decay is not None and decay >= 1.0:
        raise ConfigError("intervention.continual_backprop.decay_rate", f"must be < 1 (a running mean), got {decay}")
    two_hot = OmegaConf.select(cfg, "intervention.two_hot")
    if two_hot is not None:
        if two_hot.num_bins < 2:
            raise ConfigError("intervention.two_hot.num_bins", f"must be >= 2, got {two_hot.num_bins}")
        if not two_hot.v_max > two_hot.v_min:
            raise ConfigError(
                "intervention.two_hot.v_max",
                f"must be > intervention.two_hot.v_min ({two_hot.v_min}), got {two_hot.v_max}",
            )


def _validate_diagnostics(cfg: DictConfig) -> None:
    """Cadences are multiples of the pause interval; sizes and widths are positive."""
    pause = int(cfg.probe.every_steps)
    for name in ("statistics", "curvature", "gradcov", "dynamics"):
        if not OmegaConf.select(cfg, f"diagnostics.{name}.enabled"):
            continue
        key = f"diagnostics.{name}.every_steps"
        every = OmegaConf.select(cfg, key)
        if every is None or every <= 0 or every % pause:
            raise ConfigError(key, f"must be a positive multiple of probe.every_steps ({pause}), got {every}")
    for key in (
        "statistics.num_inputs",
        "statistics.srank_delta",
        "statistics.weight_rank_rtol",
        "curvature.num_inputs",
        "curvature.iterations",
        "curvature.num_vectors",
        "curvature.sigma_rel",
        "curvature.chunk_size",
        "gradcov.num_clusters",
        "gradcov.chunk_size",
        "gradcov.max_memory_mb",
        "dynamics.num_inputs",
        "dynamics.reference_inputs",
    ):
        _positive(cfg, f"diagnostics.{key}")
    _unit(cfg, "diagnostics.statistics.srank_delta")
    _unit(cfg, "diagnostics.statistics.active_min_frac")
    _positive(cfg, "diagnostics.statistics.duplicate_rtol", allow_zero=True)
    _positive(cfg, "diagnostics.statistics.dormant_tau", allow_zero=True)
    d = cfg.diagnostics
    if d.curvature.grid_points < 2:
        raise ConfigError("diagnostics.curvature.grid_points", f"must be >= 2, got {d.curvature.grid_points}")
    grid_min, grid_max = d.curvature.grid_min, d.curvature.grid_max
    if grid_min is not None and grid_max is not None and not grid_max > grid_min:
        raise ConfigError(
            "diagnostics.curvature.grid_max", f"must be > diagnostics.curvature.grid_min ({grid_min}), got {grid_max}"
        )
    if d.gradcov.k < 2:
        raise ConfigError("diagnostics.gradcov.k", f"C_k needs at least 2 samples, got {d.gradcov.k}")
    if d.gradcov.num_clusters > d.gradcov.k:
        raise ConfigError(
            "diagnostics.gradcov.num_clusters",
            f"must be <= diagnostics.gradcov.k ({d.gradcov.k}), got {d.gradcov.num_clusters}",
        )
