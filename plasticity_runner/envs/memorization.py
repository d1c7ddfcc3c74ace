"""``env=memorization``: memorisation of re-randomised labels, section 4.1 / appendix A.1 (figure 1).

Not an environment the DQN agent steps: a case study with its own program
(``case_studies/memorization.py``), which ``trainer.train`` runs instead of the DQN loop because
this registration names it. Its keys are documented in
``configs/env/memorization.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import positive
from ..registry import register
from .datasets import Dataset


@dataclass
class MemorizationEnvConfig:
    """Memorisation of re-randomised labels, section 4.1 / appendix A.1 (``case_studies/memorization.py``)."""

    name: str = "memorization"
    dataset: Dataset = Dataset.digits
    data_dir: str = "data"
    download: bool = False
    num_images: int | None = None
    iteration_steps: int = 2000
    num_iterations: int = 20
    batch_size: int = 128
    eval_samples: int = 4096
    label_seed: int | None = None  # null: the run seed's stream memorization/labels


def check(cfg: Any, key: str) -> None:
    """Sizes and counts are positive."""
    for name in ("num_images", "iteration_steps", "num_iterations", "batch_size", "eval_samples"):
        positive(cfg, f"{key}.{name}")


# The program runs the case study's loop; its module is imported when the program runs, because it
# imports this package back (the envs it steps), so importing it here would make a cycle.


def run_memorization(cfg: Any, run: Any) -> dict[str, Any]:
    """``case_studies.memorization.run_memorization`` (imported when it runs: that module imports this package back)."""
    from ..case_studies.memorization import run_memorization as program

    return program(cfg, run)


register("env", "memorization", MemorizationEnvConfig, check=check, program=run_memorization)
