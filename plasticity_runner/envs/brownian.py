"""``env=brownian``: gradient descent vs Brownian motion, section 4.2 / appendix A.1 (figure 2).

Not an environment the DQN agent steps: a case study with its own program
(``case_studies/brownian.py``), which ``trainer.train`` runs instead of the DQN loop because this
registration names it. It steps the classification MDP of section 3.2 itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError, choice, positive
from ..registry import register
from .classification import Task
from .datasets import Dataset


@dataclass
class BrownianEnvConfig:
    """Gradient descent vs Brownian motion, section 4.2 / appendix A.1 (``case_studies/brownian.py``)."""

    name: str = "brownian"
    dataset: Dataset = Dataset.digits
    task: Task = Task.true_label
    data_dir: str = "data"
    download: bool = False
    num_images: int | None = None
    label_seed: int | None = None  # null: derived from the run seed (seeding.label_seed)
    batch_size: int = 512
    target_update_steps: int = 5000
    measure_every_steps: int = 5000


def check(cfg: Any, key: str) -> None:
    """Sizes and cadences are positive; C_k is measured on the probe loss of section 4.2."""
    for name in ("num_images", "batch_size", "target_update_steps", "measure_every_steps"):
        positive(cfg, f"{key}.{name}")
    loss = OmegaConf.select(cfg, "diagnostics.gradcov.loss")
    if choice(loss) == "td":
        raise ConfigError(
            "diagnostics.gradcov.loss",
            "env=brownian measures C_k on the probe loss of section "
            "4.2, not the TD loss; choose perturbation_shared (experiment=fig2_brownian) or perturbation",
        )


# The program runs the case study's loop; its module is imported when the program runs, because it
# imports this package back (the envs it steps), so importing it here would make a cycle.


def run_brownian(cfg: Any, run: Any) -> dict[str, Any]:
    """``case_studies.brownian.run_brownian`` (imported when it runs: that module imports this package back)."""
    from ..case_studies.brownian import run_brownian as program

    return program(cfg, run)


register("env", "brownian", BrownianEnvConfig, check=check, program=run_brownian)
