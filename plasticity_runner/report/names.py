"""Every config key, metric name, array name and config value the report reads, in one place.

Metric and array names come from the modules that write them (each diagnostic of ``probes/``,
``evaluation``, the case studies), which declare what they write: rename a metric there and the
report follows (``tests/test_metric_names.py`` checks that every name read here is declared by a
producer), the trainer's log-point metrics included (``TRAINER_METRICS``).
"""

from __future__ import annotations

from .. import evaluation as _evaluation
from .. import trainer as _trainer
from ..case_studies import brownian as _brownian
from ..case_studies import memorization as _memorization
from ..probes import curvature as _curvature
from ..probes import dynamics as _dynamics
from ..probes import gradcov as _gradcov
from ..probes import plasticity as _plasticity
from ..probes import statistics as _statistics

# ------------------------------------------------------------------------------ config columns
# Dotted keys of the flattened run config, as they appear as columns of ``load_sweep``.
SEED = "seed"
ENV = "env.name"
DATASET = "env.dataset"
TASK = "env.task"
GAME = "env.game"
ARCH = "architecture.name"
WIDTH = "architecture.width"
WIDTH_MULTIPLIER = "architecture.width_multiplier"  # x every width of the body (nets/scaling.py)
TARGET_UPDATE = "agent.target_update_steps"
OPTIMIZER = "optimizer.name"
INTERVENTIONS = "interventions"
TOTAL_STEPS = "total_steps"  # training (optimizer) steps of a run: the budget every figure names
PROBE_ENABLED = "probe.enabled"
PROBE_STEPS = "probe.steps"  # optimizer steps fitting each probe target
PROBE_TARGETS = "probe.num_targets"
MEM_ITERATIONS = "env.num_iterations"  # the memorisation study's budget: iterations x steps each
MEM_ITERATION_STEPS = "env.iteration_steps"

# Values of those keys that select the runs of a figure.
ENV_CLASSIFICATION = "classification"
ENV_ATARI = "atari"
ENV_MINATAR = "minatar"
ENV_MEMORIZATION = "memorization"
ENV_BROWNIAN = "brownian"
OPTIMIZER_DEFAULT_ADAM = "adam"
OPTIMIZER_TUNED_ADAM = "adam_tuned"
NO_INTERVENTION = "none"
LAYER_NORM = "layer_norm"

# Config keys that never separate two runs into different groups (a group is the set of runs
# whose config is equal except for these): the seed and anything derived from it, and settings of
# where and how a run executes that do not change its numbers.
GROUP_IGNORE_KEYS = frozenset(
    {
        SEED,
        "device",
        "run_dir",
        "output_dir",
        "resume",
        "progress",
        "torch_threads",
        "log_every_steps",
        "env.data_dir",
        "env.download",
        "objective",
    }
)
GROUP_IGNORE_PREFIXES = (
    "hydra.",
    "logging.",
    "paths.",
    "checkpoint.",
    "population.",
)  # a member of a population is its seed's run
GROUP_IGNORE_SUFFIXES = ("seed",)  # e.g. ``env.label_seed``, ``probe.seed``

# Group labels name the fewest config keys that tell the groups apart, tried in this order (then
# the remaining keys in config order); e.g. ``architecture.channels`` is left out of a label once
# ``architecture.name`` is in it, since the name already determines it.
LABEL_PRIORITY = (ENV, DATASET, TASK, GAME, ARCH, WIDTH, TARGET_UPDATE, OPTIMIZER, INTERVENTIONS)

# Run statuses (``run.json`` key ``status``) whose runs are left out of every figure.
STATUS_KEY = "status"
SKIP_STATUSES = frozenset({"failed"})

# ------------------------------------------------------------------------------ scalar metrics
# (phase, metric) pairs of the long-format metric shards.
_PROBE = _plasticity.Probe.phase
PROBE_LOSS = (_PROBE, _plasticity.PROBE_LOSS)
PROBE_BASELINE = (_PROBE, _plasticity.PROBE_BASELINE)
PLASTICITY = (_PROBE, _plasticity.PLASTICITY)  # = probe_baseline - probe_loss (eq. 5 of the paper)

ACCURACY = (_memorization.PHASE, _memorization.ACCURACY)  # figure 1 (memorization), once per iteration
EVAL_DEAD_FRAC = (_memorization.PHASE, _statistics.DEAD_FRAC)
ADAM_UPDATE_NORM = (_memorization.PHASE, _memorization.UPDATE_NORM)

HUMAN_NORMALIZED_SCORE = (_evaluation.PHASE, _evaluation.HUMAN_NORMALIZED_SCORE)  # figure 7 (Atari)
EPISODE_RETURN = (_evaluation.PHASE, _evaluation.EPISODE_RETURN)

# Written by the trainer at each log point (``trainer.run_dqn``).
TD_LOSS = (_trainer.TRAIN_PHASE, _trainer.TD_LOSS)  # figures 15 / 16
REWARD_MEAN = (_trainer.TRAIN_PHASE, _trainer.REWARD_MEAN)  # figures 12 / 13: the classification MDP's return per step
TRAINER_METRICS = (TD_LOSS, REWARD_MEAN)

HESSIAN_TOP_EIG = (_curvature.Curvature.phase, _curvature.HESSIAN_TOP_EIG)  # figure 14: the sharpness lambda_1
STATS_PHASE = _statistics.Statistics.phase  # every per-pause network statistic: the stats figure
DYNAMICS_PHASE = _dynamics.Dynamics.phase  # per-pause training dynamics: also in the stats figure
TWO_HOT = "two_hot"  # the categorical output encoding of figures 8 / 9 (an intervention)
# The 'easy' and 'hard' reward structures of appendix B.1 (our reading: the paper names no task).
TASK_EASY = "true_label"
TASK_HARD = "sparse_reward"
TASK_LABELS = {TASK_EASY: "easy (true_label)", TASK_HARD: "hard (sparse_reward)"}

# Figure 3: the statistics put to the falsification test, display name -> (phase, metric).
STATISTICS = {
    "weight norm": (STATS_PHASE, _statistics.PARAM_NORM),
    "feature rank": (STATS_PHASE, _statistics.FEATURE_SRANK),
    "weight rank": (STATS_PHASE, _statistics.WEIGHT_RANK_MEAN),
    "dead units": (STATS_PHASE, _statistics.DEAD_FRAC),
}

# The metrics of the field's other tools (Plasticine, Dohare et al. 2024, ReDo), display
# name -> (phase, metric), at their default thresholds (docs/metrics.md defines each). ``stats`` and
# ``dynamics`` are written at pauses, ``train`` at every log point.
FIELD_METRICS = {
    "feature norm": (STATS_PHASE, _statistics.FEATURE_NORM),
    "feature stable rank": (STATS_PHASE, _statistics.FEATURE_STABLE_RANK),
    "active units": (STATS_PHASE, _statistics.ACTIVE),
    "activation rate": (STATS_PHASE, _statistics.ACTIVATION_RATE),
    "duplicate units": (STATS_PHASE, _statistics.DUPLICATE),
    "gradient norm (pause)": (DYNAMICS_PHASE, _dynamics.GRAD_NORM_EVAL),
    "weight change from init": (DYNAMICS_PHASE, _dynamics.WEIGHT_CHANGE),
    "relative weight change from init": (DYNAMICS_PHASE, _dynamics.WEIGHT_CHANGE_REL),
    "greedy-action change between pauses": (DYNAMICS_PHASE, _dynamics.GREEDY_ACTION_CHANGE),
    "gradient norm (window mean)": (_dynamics.LOG_POINT_PHASE, _dynamics.GRAD_NORM_WINDOW),
    "relative parameter change (window)": (_dynamics.LOG_POINT_PHASE, _dynamics.REL_PARAM_CHANGE_WINDOW),
}

# Figure 2: the two coupled processes (phase names, also the prefixes of their arrays) and the
# scalar metrics each writes.
PROCESSES = dict(zip(_brownian.PROCESSES, ("gradient descent", "Brownian motion")))
PROCESS_METRICS = {
    _curvature.HESSIAN_TOP_EIG: "Hessian top eigenvalue",
    _gradcov.OFFDIAG_MEAN: "mean off-diagonal gradient covariance",
    _gradcov.NEG_FRAC: "fraction of negative gradient covariances",
}

# ------------------------------------------------------------------------------ arrays (npz keys)
PROBE_CURVE_LOSS = _plasticity.CURVE_LOSS  # [num_targets, K]
PROBE_CURVE_STEPS = _plasticity.CURVE_STEPS  # [K]
HESSIAN_DENSITY = _curvature.HESSIAN_DENSITY  # [G]
HESSIAN_GRID = _curvature.HESSIAN_GRID  # [G]
GRADCOV_MATRIX = _gradcov.MATRIX  # [k, k], rows already k-means ordered


def figure_metrics() -> set[tuple[str, str]]:
    """Every (phase, metric) a figure reads (the constants above)."""
    pairs = {
        v for v in globals().values() if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, str) for x in v)
    }
    pairs |= set(STATISTICS.values()) | set(FIELD_METRICS.values())
    pairs |= {(process, metric) for process in PROCESSES for metric in PROCESS_METRICS}
    return pairs


def figure_arrays() -> set[str]:
    """Every array name a figure reads (a figure-2 process's under ``<process>/``)."""
    names = {PROBE_CURVE_LOSS, PROBE_CURVE_STEPS, HESSIAN_DENSITY, HESSIAN_GRID, GRADCOV_MATRIX}
    return names | {process_array(p, n) for p in PROCESSES for n in (HESSIAN_DENSITY, HESSIAN_GRID, GRADCOV_MATRIX)}


def process_array(process: str, name: str) -> str:
    """Array key of one figure 2 process, e.g. ``gd/hessian/density``."""
    return f"{process}/{name}"
