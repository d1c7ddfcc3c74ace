"""Empirical NTK rank (as C-CHAIN, Tang et al. 2025, tracks it): the rank of the Gram matrix of the
per-input gradients of the online network on a small probe batch.

On the first ``num_inputs`` transitions ``(o_i, a_i)`` of the pause's evaluation batch, with
``f_i = Q(o_i, a_i)`` (the output the TD loss regresses: the taken action's Q-value; the expected
Q of a categorical head) and ``j_i = d f_i / d theta`` over every trainable parameter (the
network in eval mode, on a copy):

    K = J J^T                     ([n, n], K_ij = j_i . j_j)
    ntk_rank = #{k : sigma_k(K) > sigma_max(K) * n * eps_32}
    ntk_rank_frac = ntk_rank / n

``eps_32`` is float32's machine epsilon (1.19e-7): the threshold is numpy's default for
``np.linalg.matrix_rank`` of a float32 matrix, the precision the gradients are computed in (a
float64 threshold would count rounding noise as rank). ``K`` is summed in float64; its singular
values by ``torch.linalg.svdvals``. Choices named: one output per input (the taken action's
Q-value, not every action's, so ``K`` is ``n x n`` and costs ``n`` backward passes); eval mode.
Memory: ``n`` gradients of the whole network (``n x P`` floats).

Written at each pause where due (``diagnostics.ntk.every_steps``, default: every pause) under
phase ``stats``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import II
from torch import nn

from .. import registry
from ..errors import positive
from .base import Diagnostic, Output, PauseView, check_cadence

NTK_RANK, NTK_RANK_FRAC = "ntk_rank", "ntk_rank_frac"
EPS_32 = float(np.finfo(np.float32).eps)


def ntk_gram(net: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``K = J J^T`` in float64, ``J`` the gradients of ``Q(o_i, a_i)`` of an eval-mode copy of ``net``."""
    model = copy.deepcopy(net).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    q = model(obs).gather(1, actions[:, None]).squeeze(1)
    rows = []
    for i in range(q.shape[0]):
        grads = torch.autograd.grad(q[i], params, retain_graph=i + 1 < q.shape[0], allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
    jac = torch.stack(rows).double()
    return jac @ jac.T


def ntk_rank(gram: torch.Tensor) -> int:
    """``#{sigma_k > sigma_max * n * eps_32}`` of the ``n x n`` matrix ``gram``."""
    s = torch.linalg.svdvals(gram)
    return int((s > s.max() * gram.shape[0] * EPS_32).sum())


@dataclass
class NTKConfig:
    """Empirical NTK rank (config key ``diagnostics.ntk``)."""

    enabled: bool = True
    every_steps: int = II("probe.every_steps")
    num_inputs: int = 16  # transitions of the evaluation batch: K is num_inputs x num_inputs


def check(cfg: Any, key: str) -> None:
    check_cadence(cfg, key)
    positive(cfg, f"{key}.num_inputs")


class NTK(Diagnostic):
    name, phase = "ntk", "stats"
    scalars = (NTK_RANK, NTK_RANK_FRAC)

    def inputs(self, cfg: Any) -> int:
        return int(self.config(cfg).num_inputs)

    def run(self, view: PauseView) -> Output:
        batch = view.batch
        rank = ntk_rank(ntk_gram(view.online, batch.o_tm1, batch.a_tm1))
        n = int(batch.o_tm1.shape[0])
        return Output({NTK_RANK: float(rank), NTK_RANK_FRAC: rank / n})


registry.register("diagnostic", "ntk", NTKConfig, build=NTK, check=check, order=56)
