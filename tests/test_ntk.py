"""Empirical NTK rank (``probes/ntk.py``) against numpy: the Gram matrix of per-input gradients of
``Q(o_i, a_i)`` equals ``J J^T`` of a Jacobian written out with one backward per input, and the
rank equals ``np.linalg.matrix_rank`` of the float32 matrix (numpy's default tolerance, the
definition); a network whose gradients span a known dimension has exactly that rank."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from plasticity_runner.metrics import load_run
from plasticity_runner.probes.ntk import NTK_RANK, NTK_RANK_FRAC, ntk_gram, ntk_rank
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_interventions import agent_with


def test_gram_and_rank_against_numpy():
    state = agent_with([], steps=2)
    batch = state.replay.sample(12, torch.Generator().manual_seed(0))
    net = state.agent.online
    gram = ntk_gram(net, batch.o_tm1, batch.a_tm1)
    rows = []
    for i in range(12):  # the oracle: one backward per input, a plain Jacobian
        net.zero_grad(set_to_none=True)
        net(batch.o_tm1[i : i + 1])[0, batch.a_tm1[i]].backward()
        rows.append(np.concatenate([p.grad.double().numpy().ravel() for p in net.parameters()]))
    jac = np.stack(rows)
    np.testing.assert_allclose(
        gram.numpy(), jac @ jac.T, rtol=1e-5, atol=1e-6
    )  # float32 gradients, batched vs one by one
    assert ntk_rank(gram) == np.linalg.matrix_rank((jac @ jac.T).astype(np.float32))


def test_a_linear_model_has_the_rank_of_its_inputs():
    """``Q = W x``: the gradient of ``Q(x_i, a)`` is ``x_i`` in row ``a`` of ``W``, so with every
    input taking action 0 the rank is the rank of the inputs: 3 of 8 here."""
    net = nn.Linear(5, 2, bias=False)
    basis = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    obs = torch.randn(8, 3, generator=torch.Generator().manual_seed(2)) @ basis
    gram = ntk_gram(net, obs, torch.zeros(8, dtype=torch.long))
    assert ntk_rank(gram) == 3 == np.linalg.matrix_rank(gram.float().numpy())
    assert ntk_rank(ntk_gram(net, obs, torch.tensor([0, 1] * 4))) == 6  # two rows of W: 3 + 3


def test_a_run_writes_it_at_every_pause(tmp_path):
    train(make_cfg(["total_steps=20", "probe.every_steps=10", "diagnostics.ntk.num_inputs=8"]), tmp_path)
    rows = load_run(tmp_path)
    rank = rows[rows.metric == NTK_RANK]
    assert sorted(rank.step.tolist()) == [0, 10, 20] and set(rank.phase) == {"stats"}
    assert ((rank.value >= 1) & (rank.value <= 8)).all()
    frac = rows[rows.metric == NTK_RANK_FRAC].value.to_numpy()
    np.testing.assert_allclose(frac, rank.value.to_numpy() / 8)
