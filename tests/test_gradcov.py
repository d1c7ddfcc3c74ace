"""Gradient covariance C_k (eq. 3) against a loop of single-sample backward passes."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner.agents.dqn import DQNAgent, td_sample_losses
from plasticity_runner.envs.base import Batch
from plasticity_runner.nets import build_network
from plasticity_runner.probes.curvature import hessian_spectrum
from plasticity_runner.probes.gradcov import (
    gradient_covariance,
    gradient_gram,
    kmeans_order,
    normalise,
    perturbation_sample_losses,
)


def loop_gram(net, loss_of_sample, k):
    """The oracle: one backward pass per sample, gradients flattened and multiplied."""
    rows = []
    for i in range(k):
        grads = torch.autograd.grad(loss_of_sample(i), list(net.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    g = torch.stack(rows).double()
    return g @ g.T


def test_perturbation_gram_matches_loop_for_mlp_and_cnn():
    archs = [
        (dict(name="mlp", width=16, num_layers=2), (3,), {}),
        (dict(name="cnn", channels=3, hidden=8, conv_stride=1), (1, 4, 4), {}),
        # layer norm, and a spectral-norm first layer (not factorisable: W / sigma(W))
        (dict(name="mlp", width=8, num_layers=2), (3,), dict(layer_norm=True, spectral_norm={})),
    ]
    for arch, shape, options in archs:
        torch.manual_seed(0)
        net = build_network(OmegaConf.create(arch), shape, 4, **options).double().eval()
        inputs = torch.randn(16, *shape, dtype=torch.float64)
        losses = perturbation_sample_losses(net, inputs, eps_seed=5)
        y = losses.samples[1]
        expected = loop_gram(net, lambda i: ((net(inputs[i : i + 1])[0] - y[i]) ** 2).mean(), 16)
        # factorised fully-connected layers + vmap for the rest, and vmap for everything; with a
        # budget that fits and one that forces parameter groups and row blocks (2 to 5 rows)
        for factorise in (True, False):
            for budget_mb in (64, 0.02):
                gram = gradient_gram(losses, chunk_size=5, max_memory_mb=budget_mb, factorise_linear=factorise)
                torch.testing.assert_close(gram, expected, rtol=1e-10, atol=1e-12)


def td_setup(arch: dict, obs_shape: tuple[int, ...], num_actions: int, k: int, double_dqn: bool, prepare=None):
    """A float64 DQN agent (online and target built from ``arch``; ``prepare(online)`` before the
    agent is built) and a random batch of ``k`` transitions."""
    torch.manual_seed(0)
    arch = OmegaConf.create(arch)
    online = build_network(arch, obs_shape, num_actions).double()
    target = build_network(arch, obs_shape, num_actions).double()
    if prepare is not None:
        prepare(online)
    cfg = OmegaConf.create(dict(gamma=0.9, double_dqn=double_dqn))
    agent = DQNAgent(cfg, online, target, torch.optim.SGD(online.parameters(), lr=0.1), [], num_actions)
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        o_tm1=torch.rand(k, *obs_shape, generator=g, dtype=torch.float64),
        a_tm1=torch.randint(num_actions, (k,), generator=g),
        r_t=torch.rand(k, generator=g, dtype=torch.float64),
        discount_t=torch.ones(k, dtype=torch.float64),
        o_t=torch.rand(k, *obs_shape, generator=g, dtype=torch.float64),
    )
    return agent, batch


def td_loop_gram(agent, batch):
    """The oracle for the TD loss: one backward pass per transition against the fixed target."""
    y = agent.td_target(batch)
    online = agent.online
    return loop_gram(
        online,
        lambda i: online.td_loss(batch.o_tm1[i : i + 1], batch.a_tm1[i : i + 1], y[i : i + 1]).sum(),
        batch.o_tm1.shape[0],
    )


def test_td_gram_matches_loop():
    k = 20
    agent, batch = td_setup(dict(name="mlp", width=12, num_layers=2), (1, 3, 3), 4, k, double_dqn=True)
    online = agent.online
    expected = td_loop_gram(agent, batch)
    before = copy.deepcopy(online.state_dict())
    losses = td_sample_losses(agent.online, agent.target, batch, gamma=agent.gamma, double_dqn=agent.double_dqn)
    torch.testing.assert_close(gradient_gram(losses, chunk_size=6), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        gradient_gram(losses, chunk_size=6, factorise_linear=False), expected, rtol=1e-10, atol=1e-12
    )
    assert all(torch.equal(v, before[n]) for n, v in online.state_dict().items())
    assert all(p.grad is None for p in online.parameters())
    # C_k and its summaries, against numpy on the oracle's Gram
    result = gradient_covariance(losses, num_clusters=3, chunk_size=6, seed=0)
    gram = expected.numpy()
    norms = np.sqrt(np.diag(gram))
    c = gram / np.outer(norms, norms)
    np.testing.assert_allclose(result.matrix.numpy(), c, rtol=1e-9, atol=1e-12)
    off = c[~np.eye(k, dtype=bool)]
    s = result.scalars()
    assert abs(s["gradcov_offdiag_mean"] - off.mean()) < 1e-9
    assert s["gradcov_neg_frac"] == (off < 0).mean()
    order = result.order.numpy()
    np.testing.assert_array_equal(result.ordered().numpy(), result.matrix.numpy()[order][:, order])


def test_normalise_handles_zero_gradients():
    gram = torch.tensor([[4.0, 0.0, -2.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 1.0]], dtype=torch.float64)
    c, norms = normalise(gram)
    assert norms.tolist() == [2.0, 0.0, 1.0]
    assert c.tolist() == [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]


def test_kmeans_order_recovers_planted_blocks():
    # three blocks of sizes 6, 4, 2 (similarity 0.9 within, -0.2 across), shuffled
    labels = np.repeat([0, 1, 2], [6, 4, 2])
    perm = np.random.default_rng(0).permutation(12)
    planted = labels[perm]
    c = np.where(planted[:, None] == planted[None, :], 0.9, -0.2)
    np.fill_diagonal(c, 1.0)
    order, found = kmeans_order(torch.from_numpy(c), num_clusters=3, seed=0)
    # clusters by decreasing size, stable within a cluster; the found labels are the planted ones
    np.testing.assert_array_equal(found.numpy(), planted)
    np.testing.assert_array_equal(found.numpy()[order.numpy()], labels)
    assert (np.diff(order.numpy()[:6]) > 0).all()


def test_frozen_parameters_are_left_out():
    """Parameters that do not train (plasticity injection freezes some) are not differentiated."""
    torch.manual_seed(0)
    net = build_network(OmegaConf.create(dict(name="mlp", width=8, num_layers=2)), (3,), 4).double()
    net.body.net[1].requires_grad_(False)
    inputs = torch.randn(12, 3, dtype=torch.float64)
    losses = perturbation_sample_losses(net, inputs, eps_seed=2)
    y = losses.samples[1]
    trainable = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for i in range(12):
        grads = torch.autograd.grad(((net(inputs[i : i + 1])[0] - y[i]) ** 2).mean(), trainable)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    expected = torch.stack(rows) @ torch.stack(rows).T
    for factorise in (True, False):
        torch.testing.assert_close(gradient_gram(losses, factorise_linear=factorise), expected, rtol=1e-10, atol=1e-12)
    cfg = SimpleNamespace(
        iterations=4, num_vectors=1, sigma_rel=0.01, grid_points=16, grid_min=None, grid_max=None, chunk_size=64
    )
    spectrum = hessian_spectrum(net, inputs, 2, cfg)
    assert spectrum.num_params == sum(p.numel() for p in trainable)


# ------------------------------------------------------------------------ eps shared vs per input


def test_shared_eps_gram_matches_the_tangent_kernel_along_eps():
    """eps shared by the inputs: g_i = -(2/A) J_i^T eps, so G = (4/A^2) [eps^T J_i J_j^T eps]."""
    torch.manual_seed(0)
    num_outputs, k = 4, 16
    net = build_network(OmegaConf.create(dict(name="mlp", width=16, num_layers=2)), (3,), num_outputs).double().eval()
    inputs = torch.randn(k, 3, dtype=torch.float64)
    losses = perturbation_sample_losses(net, inputs, eps_seed=5, shared=True)
    eps = losses.samples[1] - net(inputs).detach()
    torch.testing.assert_close(eps, eps[:1].expand_as(eps), rtol=0, atol=1e-12)  # one eps for every input
    # the oracle: the gradient of f(x_i) . eps, one input at a time, times -2/A
    expected = loop_gram(net, lambda i: -(2 / num_outputs) * (net(inputs[i : i + 1])[0] * eps[0]).sum(), k)
    for factorise in (True, False):
        gram = gradient_gram(losses, chunk_size=5, factorise_linear=factorise)
        torch.testing.assert_close(gram, expected, rtol=1e-10, atol=1e-12)
    # the per-input variant draws a different eps for each input
    per_input = perturbation_sample_losses(net, inputs, eps_seed=5)
    assert (per_input.samples[1] - net(inputs).detach()).std(0).min() > 0.1


def _two_cluster_linear(k_a: int, k_b: int):
    """f(x) = w . x + b on inputs +-2 e_1: grad f = [x, 1], so <g_i, g_j> ~ x_i . x_j + 1 = 5 or -3."""
    net = torch.nn.Linear(3, 1).double()
    x = torch.zeros(k_a + k_b, 3, dtype=torch.float64)
    x[:k_a, 0], x[k_a:, 0] = 2.0, -2.0
    x[:, 1:] = 0.0
    return net, x


def test_shared_eps_neg_frac_is_the_hand_computed_interference():
    k_a, k_b = 12, 4
    net, x = _two_cluster_linear(k_a, k_b)
    cov = gradient_covariance(perturbation_sample_losses(net, x, eps_seed=3, shared=True), num_clusters=2)
    # one output: C_ij = (x_i . x_j + 1) / (|x_i|^2 + 1) = 1 within a cluster, -3/5 across
    same = (torch.arange(k_a + k_b) < k_a)[:, None] == (torch.arange(k_a + k_b) < k_a)[None, :]
    expected = torch.full(same.shape, -3 / 5, dtype=torch.float64)
    expected[same] = 1.0
    torch.testing.assert_close(cov.matrix, expected, rtol=0, atol=1e-12)
    k = k_a + k_b
    assert cov.scalars()["gradcov_neg_frac"] == pytest.approx(2 * k_a * k_b / (k * (k - 1)))  # 0.4, not 0.5


def test_per_input_eps_neg_frac_is_a_coin_flip_whatever_the_interference():
    """Why per-input eps is not the default for C_k: its neg_frac sits near 0.5 at parameters where
    the shared-eps C_k has no negative entry and where it has 40% of them."""
    torch.manual_seed(0)
    mlp = build_network(OmegaConf.create(dict(name="mlp", width=16, num_layers=2)), (3,), 1).double().eval()
    mlp_inputs = torch.randn(64, 3, dtype=torch.float64)
    linear, linear_inputs = _two_cluster_linear(48, 16)
    for net, inputs, shared_neg_frac in ((mlp, mlp_inputs, 0.0), (linear, linear_inputs, 2 * 48 * 16 / (64 * 63))):
        shared = gradient_covariance(perturbation_sample_losses(net, inputs, 3, shared=True), num_clusters=2)
        assert shared.scalars()["gradcov_neg_frac"] == pytest.approx(shared_neg_frac, abs=1e-12)
        for eps_seed in range(4):
            per_input = gradient_covariance(perturbation_sample_losses(net, inputs, eps_seed), num_clusters=2)
            # one output: C_ij = s_i s_j C^shared_ij with s_i = sign(eps_i), a coin flip per input
            assert abs(per_input.scalars()["gradcov_neg_frac"] - 0.5) < 0.1, eps_seed


def test_the_trainer_passes_the_shared_eps_choice_to_the_gradient_covariance(tmp_path, monkeypatch):
    from plasticity_runner.probes import gradcov
    from plasticity_runner.trainer import train

    from .conftest import make_cfg

    seen = []
    original = gradcov.perturbation_sample_losses

    def recording(net, inputs, eps_seed, shared=False):
        losses = original(net, inputs, eps_seed, shared=shared)
        seen.append((shared, losses.samples[1] - net(inputs).detach()))
        return losses

    monkeypatch.setattr(gradcov, "perturbation_sample_losses", recording)
    off = ["diagnostics.statistics.enabled=false", "diagnostics.curvature.enabled=false", "probe.enabled=false"]
    for loss, shared in (("perturbation_shared", True), ("perturbation", False)):
        seen.clear()
        train(make_cfg(off + [f"diagnostics.gradcov.loss={loss}", "checkpoint.enabled=false"]), tmp_path / loss)
        assert seen and all(s == shared for s, _ in seen), loss
        eps = seen[-1][1]
        assert (eps.std(0).max() < 1e-5) == shared  # one eps for every input, or one per input


# ------------------------------------------------------------------------ the per-layer Gram (speed)


def _every_arch():
    """Small versions of every body, with the layers the per-layer Gram handles: convolutions
    (strided, padded), batch norm on running statistics, token-wise fully-connected layers and
    layer norm (ViT), layer norm after convolutions and fully-connected layers."""
    return [
        (dict(name="cnn", channels=3, hidden=8, conv_stride=1), (1, 5, 5), {}),
        (dict(name="cnn", channels=3, hidden=8, conv_stride=2), (2, 6, 6), dict(layer_norm=True)),
        (dict(name="resnet18", width=2, stem="small"), (1, 6, 6), {}),
        (
            dict(name="vit", patch_size=3, dim=8, ff_dim=12, num_blocks=1, num_heads=2, dropout=0.1, pool="cls"),
            (1, 5, 5),
            {},
        ),
        (
            dict(name="vit", patch_size=2, dim=8, ff_dim=6, num_blocks=2, num_heads=2, dropout=0.0, pool="mean"),
            (1, 4, 4),
            dict(layer_norm=True),
        ),
        (dict(name="nature_cnn", hidden=6), (1, 8, 8), {}),
        (dict(name="minatar_cnn", channels=3, hidden=5), (2, 5, 5), {}),
    ]


def _randomise_batch_norm(net):
    """Running statistics and affine parameters away from their initial 0 / 1, so that a wrong
    x_hat or a missing weight gradient would show."""
    g = torch.Generator().manual_seed(7)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=m.running_var.dtype) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=m.bias.dtype))


def test_layer_gram_matches_the_loop_and_the_vmap_path_for_every_body():
    """The per-layer Gram (convolutions, token-wise layers, norms from batched passes) equals the
    loop oracle and the vmap(grad) path it replaced (``factorise_linear=False``), with budgets that
    fit and that force row blocks; and it leaves nothing to vmap except what it cannot factorise."""
    from plasticity_runner.probes.curvature import trainable_parameters
    from plasticity_runner.probes.gram import _layer_gram

    for arch, shape, options in _every_arch():
        torch.manual_seed(0)
        net = build_network(OmegaConf.create(arch), shape, 3, **options).double().eval()
        _randomise_batch_norm(net)
        k = 11
        inputs = torch.randn(k, *shape, dtype=torch.float64)
        losses = perturbation_sample_losses(net, inputs, eps_seed=5)
        y = losses.samples[1]
        expected = loop_gram(net, lambda i: ((net(inputs[i : i + 1])[0] - y[i]) ** 2).mean(), k)
        reference = gradient_gram(losses, chunk_size=4, factorise_linear=False)
        torch.testing.assert_close(reference, expected, rtol=1e-10, atol=1e-12)
        for budget_mb in (64, 0.001):
            gram = gradient_gram(losses, chunk_size=4, max_memory_mb=budget_mb)
            torch.testing.assert_close(gram, expected, rtol=1e-10, atol=1e-12, msg=f"{arch['name']} {budget_mb}")
        _, covered = _layer_gram(losses, 4)
        rest = set(trainable_parameters(losses.model)) - covered
        if arch["name"] == "vit":
            assert rest == {"net.body.cls_token", "net.body.pos_embed"}, rest
        else:
            assert rest == set(), (arch["name"], rest)


def test_weight_gram_direct_and_ghost_equal_the_per_sample_gradients():
    """Both ways of ``_weight_gram`` (per-sample gradients in row blocks; the ghost Gram) against
    ``<D_i^T A_i, D_j^T A_j>`` written out."""
    from plasticity_runner.probes.gram import _weight_gram

    g = torch.Generator().manual_seed(0)
    a = torch.randn(9, 5, 7, generator=g, dtype=torch.float64)
    d = torch.randn(9, 5, 4, generator=g, dtype=torch.float64)
    per_sample = torch.einsum("kpn,kpi->kni", d, a).reshape(9, -1)
    expected = per_sample @ per_sample.T
    for method in ("auto", "direct", "ghost"):
        for budget in (10**9, 1, 600):  # all rows; one row at a time; a few rows
            torch.testing.assert_close(_weight_gram(a, d, budget, method), expected, rtol=1e-12, atol=1e-12)


def test_td_gram_of_a_resnet_matches_the_loop_and_the_vmap_path():
    """The default loss (TD) through a ResNet body with batch norm: the per-layer path equals the
    loop oracle and the vmap path it replaced."""
    agent, batch = td_setup(
        dict(name="resnet18", width=2, stem="small"), (1, 5, 5), 3, 10, double_dqn=False, prepare=_randomise_batch_norm
    )
    expected = td_loop_gram(agent, batch)
    losses = td_sample_losses(agent.online, agent.target, batch, gamma=agent.gamma, double_dqn=agent.double_dqn)
    torch.testing.assert_close(gradient_gram(losses, chunk_size=3), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        gradient_gram(losses, chunk_size=3, factorise_linear=False), expected, rtol=1e-10, atol=1e-12
    )
