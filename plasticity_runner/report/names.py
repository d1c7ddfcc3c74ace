"""Every config key, metric name, array name and config value the report reads, in one place.

The producers (trainer, probes, statistics) are written separately; when one of their names
changes, change it here and nothing else in the report has to move.
"""

from __future__ import annotations

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

# Values of those keys that select the runs of a figure.
ENV_CLASSIFICATION = "classification"
ENV_ATARI = "atari"
ENV_MEMORIZATION = "memorization"
ENV_BROWNIAN = "brownian"
OPTIMIZER_DEFAULT_ADAM = "adam"
OPTIMIZER_TUNED_ADAM = "adam_tuned"
NO_INTERVENTION = "none"
LAYER_NORM = "layer_norm"

# Config keys that never separate two runs into different groups (a group is the set of runs
# whose config is equal except for these): the seed and anything derived from it, and settings of
# where and how a run executes that do not change its numbers.
GROUP_IGNORE_KEYS = frozenset({
    SEED, "device", "run_dir", "output_dir", "resume", "progress", "torch_threads",
    "log_every_steps", "env.data_dir", "env.download", "objective",
})
GROUP_IGNORE_PREFIXES = ("hydra.", "logging.", "paths.", "checkpoint.")
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
PROBE_LOSS = ("probe", "probe_loss")
PROBE_BASELINE = ("probe", "probe_baseline")
PLASTICITY = ("probe", "plasticity")  # = probe_baseline - probe_loss (eq. 5 of the paper)

ACCURACY = ("eval", "accuracy")  # figure 1 (memorization), once per iteration
EVAL_DEAD_FRAC = ("eval", "dead_frac")
ADAM_UPDATE_NORM = ("eval", "adam_update_norm")

HUMAN_NORMALIZED_SCORE = ("eval", "human_normalized_score")  # figure 7 (Atari)
EPISODE_RETURN = ("eval", "episode_return")

TD_LOSS = ("train", "td_loss")  # figures 15 / 16
REWARD_MEAN = ("train", "reward_mean")  # figures 12 / 13: the classification MDP's return per step
HESSIAN_TOP_EIG = ("curvature", "hessian_top_eig")  # figure 14: the sharpness lambda_1
STATS_PHASE = "stats"  # every per-pause network statistic (probes/statistics.py): the stats figure
DYNAMICS_PHASE = "dynamics"  # per-pause training dynamics (probes/dynamics.py): also in the stats figure
TWO_HOT = "two_hot"  # the categorical output encoding of figures 8 / 9 (an intervention)
# The 'easy' and 'hard' reward structures of appendix B.1 (our reading: the paper names no task).
TASK_EASY = "true_label"
TASK_HARD = "sparse_reward"
TASK_LABELS = {TASK_EASY: "easy (true_label)", TASK_HARD: "hard (sparse_reward)"}

# Figure 3: the statistics put to the falsification test, display name -> (phase, metric).
STATISTICS = {
    "weight norm": ("stats", "param_norm"),
    "feature rank": ("stats", "feature_srank_delta0.01"),
    "weight rank": ("stats", "weight_rank_mean"),
    "dead units": ("stats", "dead_frac"),
}

# The metrics of the field's other tools (Plasticine, Dohare et al. 2024, ReDo), display
# name -> (phase, metric), at their default thresholds (the README defines each). ``stats`` and
# ``dynamics`` are written at pauses, ``train`` at every log point.
FIELD_METRICS = {
    "feature norm": ("stats", "feature_norm_mean"),
    "feature stable rank": ("stats", "feature_stable_rank"),
    "active units": ("stats", "active_frac_p0.01"),
    "activation rate": ("stats", "activation_rate_mean"),
    "duplicate units": ("stats", "duplicate_frac_rtol0.01"),
    "gradient norm (pause)": ("dynamics", "grad_norm_eval"),
    "weight change from init": ("dynamics", "weight_change_from_init"),
    "relative weight change from init": ("dynamics", "weight_change_from_init_rel"),
    "policy churn": ("dynamics", "policy_churn_frac"),
    "gradient norm (window mean)": ("train", "grad_norm_window_mean"),
    "effective learning rate (window)": ("train", "eff_lr_window"),
}

# Figure 2: the two coupled processes (phase names, also the prefixes of their arrays) and the
# scalar metrics each writes.
PROCESSES = {"gd": "gradient descent", "brownian": "Brownian motion"}
PROCESS_METRICS = {
    "hessian_top_eig": "Hessian top eigenvalue",
    "gradcov_offdiag_mean": "mean off-diagonal gradient covariance",
    "gradcov_neg_frac": "fraction of negative gradient covariances",
}

# ------------------------------------------------------------------------------ arrays (npz keys)
PROBE_CURVE_LOSS = "probe/curve_loss"  # [num_targets, K]
PROBE_CURVE_STEPS = "probe/curve_steps"  # [K]
HESSIAN_DENSITY = "hessian/density"  # [G]
HESSIAN_GRID = "hessian/grid"  # [G]
GRADCOV_MATRIX = "gradcov/matrix"  # [k, k], rows already k-means ordered


def process_array(process: str, name: str) -> str:
    """Array key of one figure 2 process, e.g. ``gd/hessian/density``."""
    return f"{process}/{name}"
