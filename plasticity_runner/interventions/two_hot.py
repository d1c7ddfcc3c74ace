"""Two-hot categorical head (paper 6.2): a distribution over a fixed support per action.

Build time only: selects ``nets.heads.TwoHotHead`` (Q = expectation over the support) and with it
the loss, the cross-entropy to the two-hot projection of the TD target. Optimizer state:
untouched.
"""

from __future__ import annotations

from typing import Any

from .base import Intervention


class TwoHot(Intervention):
    name = "two_hot"

    def network_options(self, options: dict[str, Any]) -> None:
        options["head"] = "two_hot"
        options["head_options"] = {
            "v_min": float(self.cfg.v_min),
            "v_max": float(self.cfg.v_max),
            "num_bins": int(self.cfg.num_bins),
        }
