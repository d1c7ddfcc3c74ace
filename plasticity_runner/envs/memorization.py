"""``env=memorization``: memorisation of re-randomised labels, section 4.1 / appendix A.1 (figure 1).

Not an environment the DQN agent steps: a case study with its own program
(``case_studies/memorization.py``), which ``trainer.train`` runs instead of the DQN loop because
this registration names it. Its keys are documented in
``configs/env/memorization.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .datasets import Dataset
from ..errors import positive
from ..case_studies.memorization import run_memorization
from ..registry import register


@dataclass
class MemorizationEnvConfig:
    """Memorisation of re-randomised labels, section 4.1 / appendix A.1 (``case_studies/memorization.py``)."""

    name: str = "memorization"
    dataset: Dataset = Dataset.digits
    data_dir: str = "data"
    download: bool = False
    num_images: Optional[int] = None
    iteration_steps: int = 2000
    num_iterations: int = 20
    batch_size: int = 128
    eval_samples: int = 4096
    label_seed: Optional[int] = None  # null: the run seed's stream memorization/labels


def check(cfg: Any, key: str) -> None:
    """Sizes and counts are positive."""
    for name in ("num_images", "iteration_steps", "num_iterations", "batch_size", "eval_samples"):
        positive(cfg, f"{key}.{name}")


register("env", "memorization", MemorizationEnvConfig, check=check,
         program=run_memorization)
