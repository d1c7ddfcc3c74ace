"""C-CHAIN, continual churn approximated reduction (Tang, Obando-Ceron, Castro, Courville &
Berseth 2025, "Mitigating plasticity loss in continual reinforcement learning by reducing churn"):
a penalty on the change of the network's outputs, between updates, on a reference batch.

Loss at optimizer step ``t + 1`` (the online network is ``theta_t``):

    ``coeff * mean_{x in X_ref, a} (Q_theta(x, a) - Q_{theta_{t-1}}(x, a))^2``

``theta_{t-1}``: the online network one update before the current one (a frozen copy, no
gradient), so the penalty acts on the churn of the last update, as in the authors' double DQN
(``crl_minatar/agents/double_dqn_c_chain.py``: the Q-network kept two updates back in their
history list, ``reg_his_idx = 2``). Every action's Q-value (the scalar head's outputs, the
expected Q of a categorical head), mean over the batch and the actions (their ``F.mse_loss``).
``X_ref``: ``num_reference`` observations (default 32, the authors' batch size) drawn uniformly from the replay after every step
(stream ``c_chain/reference`` of the run seed), for the next step: independent of the training
batch, as the authors draw a second batch. No penalty at the first step (no earlier network yet).
Both networks are called in eval mode (the agent's convention outside the TD forward).

Coefficient: fixed, ``coeff`` (default 50, the authors' starting value). The authors then adapt
it, after 10k updates, to ``0.01 * mean|TD loss| / mean(churn loss)`` over the last 50k updates
(their ``target_rel_loss_scale``); that adaptive rule is not implemented here: sweep ``coeff``.

Optimizer state: untouched. Order: its after-step bookkeeping (which records ``theta_t`` and
draws the next reference batch) runs after every other after-step hook, so ``theta_t`` is the
network as the next step starts from. The two copies, the reference batch and the generator are
kept in the checkpoint. Cannot compose with ``plasticity_injection`` (its new head is missing from
the copies).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from .. import registry
from ..errors import positive
from ..seeding import generator
from .base import NEEDS_ONE_HEAD, Intervention, Networks, incompatible


@dataclass
class CChainConfig:
    coeff: float = (
        50.0  # lambda on the churn loss (the authors' starting value; their adaptive rule is not implemented)
    )
    num_reference: int = 32  # observations of the reference batch (the authors: a second batch of their batch size, 32)


class CChain(Intervention):
    name = "c_chain"
    functional_unsupported = (
        "its penalty reads per-run tensors outside the online network (the previous network and the "
        "reference batch), which the pure step does not take as inputs"
    )

    def __init__(self, cfg):
        super().__init__(cfg)
        self.previous: torch.nn.Module | None = None  # theta_{t-1}: frozen, eval mode
        self.latest: list[
            torch.Tensor
        ] = []  # theta_t's parameters and buffers (the online network after the last step)
        self.reference: torch.Tensor | None = None  # X_ref for the next step
        self.generator: torch.Generator | None = None

    def check_compatible(self, active: list[Intervention]) -> None:
        incompatible(self, active, NEEDS_ONE_HEAD)

    def on_build(self, networks: Networks) -> None:
        self.previous = copy.deepcopy(networks.online).eval().requires_grad_(False)
        self.latest = [t.detach().clone() for t in self._tensors(networks.online)]
        device = next(networks.online.parameters()).device
        self.generator = generator(device, networks.seed, "c_chain/reference")

    @staticmethod
    def _tensors(net: torch.nn.Module) -> list[torch.Tensor]:
        return [*net.parameters(), *net.buffers()]

    def loss_penalty(self, networks: Networks) -> torch.Tensor | None:
        if self.reference is None:
            return None
        with torch.no_grad():
            frozen = self.previous(self.reference)
        return float(self.cfg.coeff) * (networks.online(self.reference) - frozen).square().mean()

    @torch.no_grad()
    def after_step(self, networks: Networks, step: int) -> None:
        torch._foreach_copy_(self._tensors(self.previous), self.latest)
        torch._foreach_copy_(self.latest, [t.detach() for t in self._tensors(networks.online)])
        if networks.replay is not None:
            self.reference = networks.replay.sample_obs(int(self.cfg.num_reference), self.generator)

    def state_dict(self) -> dict:
        return {
            "previous": {k: v.clone() for k, v in self.previous.state_dict().items()},
            "latest": [t.clone() for t in self.latest],
            "reference": None if self.reference is None else self.reference.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        self.previous.load_state_dict(state["previous"])
        for t, s in zip(self.latest, state["latest"]):
            t.copy_(s)
        self.reference = state["reference"]
        self.generator.set_state(state["generator"])


def check(cfg: Any, key: str) -> None:
    """``coeff`` >= 0, ``num_reference`` > 0."""
    positive(cfg, f"{key}.coeff", allow_zero=True)
    positive(cfg, f"{key}.num_reference")


registry.register("intervention", "c_chain", CChainConfig, build=CChain, check=check, phase="loss")
