"""Curvature against oracles: dense eigendecomposition, and the dense Hessian of a tiny network."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf
from torch.func import functional_call

from plasticity_runner.nets import build_network
from plasticity_runner.probes.curvature import (
    hessian_spectrum,
    lanczos,
    perturbation_hvp,
    perturbation_target,
    ritz,
)


def spectrum_cfg(**kw):
    base = dict(
        iterations=100, num_vectors=2, sigma_rel=0.01, grid_points=2000, grid_min=None, grid_max=None, chunk_size=16
    )
    return SimpleNamespace(**{**base, **kw})


def tiny_net():
    """A float64 ReLU QNetwork with 62 parameters (3 -> 5 -> 5 -> 2) and 32 inputs."""
    torch.manual_seed(1)
    net = build_network(OmegaConf.create(dict(name="mlp", width=5, num_layers=2)), (3,), 2).double()
    return net, torch.randn(32, 3, dtype=torch.float64)


def dense_hessian(net, inputs, target):
    """The oracle: torch.autograd.functional.hessian of mean (f(X) - target)^2 over the flat parameters."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        return ((functional_call(net, params, (inputs,)) - target) ** 2).mean()

    return torch.autograd.functional.hessian(loss, flat0, vectorize=True)


def test_lanczos_matches_dense_eigendecomposition():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = a + a.T
    v = torch.randn(30, generator=g, dtype=torch.float64)
    alpha, beta = lanczos(lambda x: a @ x, v, 30)
    values, weights = ritz(alpha, beta)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(a), rtol=0, atol=1e-9)
    # Gauss quadrature of the spectral measure of v: sum_i w_i lambda_i^p = v^T A^p v / |v|^2
    u = v / v.norm()
    for p in range(4):
        exact = u @ torch.linalg.matrix_power(a, p) @ u
        torch.testing.assert_close((weights * values**p).sum(), exact, rtol=1e-9, atol=1e-9)
    # fewer iterations: the extreme Ritz values already bracket the spectrum from inside
    values8, _ = ritz(*lanczos(lambda x: a @ x, v, 8))
    eig = torch.linalg.eigvalsh(a)
    assert values8.max() <= eig.max() + 1e-9 and values8.min() >= eig.min() - 1e-9


def test_hvp_and_spectrum_match_the_dense_hessian():
    net, inputs = tiny_net()
    target = perturbation_target(net, inputs, eps_seed=3)
    hessian = dense_hessian(net, inputs, target)
    eig = torch.linalg.eigvalsh(hessian)
    d = hessian.shape[0]
    # forward-over-reverse HVP (in chunks of 12 inputs) == dense H v
    hvp, n = perturbation_hvp(net, inputs, target, chunk_size=12)
    v = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert n == d == 62
    torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-10, atol=1e-12)
    # with as many iterations as parameters, every Ritz value is an eigenvalue of the dense Hessian
    result = hessian_spectrum(net, inputs, eps_seed=3, cfg=spectrum_cfg(num_vectors=1))
    ritz_values = result.ritz_values[~torch.isnan(result.ritz_values)]
    assert ritz_values.numel() >= 40  # fewer than d only where eigenvalues repeat (the zero eigenvalue)
    distance = (ritz_values[:, None] - eig[None, :]).abs()
    assert distance.min(1).values.max() < 1e-8 * eig.abs().max()  # each Ritz value is an eigenvalue
    assert distance.min(0).values.max() < 1e-8 * eig.abs().max()  # and each eigenvalue is found
    s = result.scalars()
    assert abs(s["hessian_top_eig"] - eig.max()) < 1e-10 and abs(s["hessian_min_eig"] - eig.min()) < 1e-10
    assert torch.allclose(result.ritz_weights.sum(1), torch.ones(1, dtype=torch.float64))
    # the default-sized run (fewer iterations than parameters) still finds the top eigenvalue
    short = hessian_spectrum(net, inputs, eps_seed=3, cfg=spectrum_cfg(iterations=20, num_vectors=1))
    assert short.ritz_values.shape == (1, 20)
    assert abs(short.scalars()["hessian_top_eig"] - eig.max()) < 1e-6 * eig.max()


def test_density_integrates_to_one():
    net, inputs = tiny_net()
    for cfg in (spectrum_cfg(iterations=15), spectrum_cfg(iterations=15, sigma_rel=0.1, grid_points=500)):
        result = hessian_spectrum(net, inputs, eps_seed=5, cfg=cfg)
        assert result.grid.shape == result.density.shape == (cfg.grid_points,)
        assert bool((result.density >= 0).all())
        assert abs(float(torch.trapezoid(result.density, result.grid)) - 1.0) < 1e-4
    # a fixed grid shared between measurements
    fixed = hessian_spectrum(net, inputs, eps_seed=5, cfg=spectrum_cfg(iterations=15, grid_min=-5.0, grid_max=10.0))
    assert fixed.grid[0] == -5.0 and fixed.grid[-1] == 10.0
    assert abs(float(torch.trapezoid(fixed.density, fixed.grid)) - 1.0) < 1e-4


def test_no_side_effects_and_deterministic():
    net, inputs = tiny_net()
    net.train()
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    a = hessian_spectrum(net, inputs, eps_seed=9, cfg=spectrum_cfg(iterations=10))
    assert torch.equal(torch.get_rng_state(), rng) and net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    b = hessian_spectrum(net, inputs, eps_seed=9, cfg=spectrum_cfg(iterations=10))
    assert torch.equal(a.density, b.density)
    c = hessian_spectrum(net, inputs, eps_seed=10, cfg=spectrum_cfg(iterations=10))
    assert not torch.equal(a.ritz_values, c.ritz_values)


def forward_over_reverse_hvp(net, inputs, target):
    """The products as they were computed before (torch.func jvp of grad, per call): the reference
    the retained reverse-over-reverse products must equal."""
    from torch.func import grad, jvp

    from plasticity_runner.probes.curvature import _dict_to_flat, _flat_to_dict, trainable_parameters

    model = copy.deepcopy(net).eval()
    params = {k: p.detach() for k, p in trainable_parameters(model).items()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss(p):
        return ((functional_call(model, (p, buffers), (inputs,)) - target) ** 2).sum() / target.numel()

    return lambda v: _dict_to_flat(jvp(grad(loss), (params,), (_flat_to_dict(v, params),))[1])


def test_retained_hvp_equals_the_dense_hessian_and_the_old_products():
    """Inputs in one chunk (the default sizes): the gradient is computed once with its graph and
    each product is reverse-over-reverse on it. Same H v as the dense Hessian, as the per-chunk
    products, and as the forward-over-reverse products it replaced, for every body; same spectrum."""
    net, inputs = tiny_net()
    target = perturbation_target(net, inputs, eps_seed=3)
    hessian = dense_hessian(net, inputs, target)
    v = torch.randn(hessian.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    hvp, _ = perturbation_hvp(net, inputs, target, chunk_size=32)
    assert hvp.__name__ == "retained_hvp"
    torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-10, atol=1e-12)
    bodies = [
        (dict(name="cnn", channels=3, hidden=8, conv_stride=1), (1, 5, 5)),
        (dict(name="resnet18", width=2, stem="small"), (1, 6, 6)),
        (
            dict(name="vit", patch_size=3, dim=8, ff_dim=12, num_blocks=1, num_heads=2, dropout=0.1, pool="cls"),
            (1, 5, 5),
        ),
    ]
    for arch, shape in bodies:
        torch.manual_seed(0)
        net = build_network(OmegaConf.create(arch), shape, 3).double()
        inputs = torch.randn(10, *shape, dtype=torch.float64)
        target = perturbation_target(net, inputs, eps_seed=1)
        once, d = perturbation_hvp(net, inputs, target, chunk_size=10)
        chunked, _ = perturbation_hvp(net, inputs, target, chunk_size=4)
        old = forward_over_reverse_hvp(net, inputs, target)
        assert once.__name__ == "retained_hvp" and chunked.__name__ == "hvp", arch["name"]
        for seed in (0, 1):
            v = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            torch.testing.assert_close(once(v), old(v), rtol=1e-10, atol=1e-12, msg=arch["name"])
            torch.testing.assert_close(chunked(v), old(v), rtol=1e-10, atol=1e-12, msg=arch["name"])
        a = hessian_spectrum(net, inputs, 2, spectrum_cfg(iterations=6, num_vectors=2, chunk_size=10))
        b = hessian_spectrum(net, inputs, 2, spectrum_cfg(iterations=6, num_vectors=2, chunk_size=4))
        torch.testing.assert_close(a.ritz_values, b.ritz_values, rtol=1e-8, atol=1e-10, equal_nan=True)


def test_spectral_norm_hvp_is_the_dense_hessian():
    """Spectral norm computes its power iteration under torch.no_grad: the gradient (and the dense
    autograd Hessian) treat u, v as constants. The products do too; forward-mode products (the
    old ones) differentiated through the power iteration and missed the dense Hessian by ~0.5%."""
    torch.manual_seed(0)
    net = build_network(
        OmegaConf.create(dict(name="mlp", width=6, num_layers=2)), (3,), 3, layer_norm=True, spectral_norm={}
    ).double()
    inputs = torch.randn(10, 3, dtype=torch.float64)
    target = perturbation_target(net, inputs, eps_seed=1)
    hessian = dense_hessian(net.eval(), inputs, target)
    for chunk_size in (10, 4):
        hvp, d = perturbation_hvp(net, inputs, target, chunk_size=chunk_size)
        v = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-10, atol=1e-12)


def test_lanczos_in_place_equals_the_allocating_loop_bit_for_bit():
    """The in-place Lanczos does the arithmetic of the loop it replaced, in the same order."""

    def reference(matvec, v0, iterations):
        v = v0.double() / torch.linalg.vector_norm(v0.double())
        basis = torch.empty(iterations, v.numel(), dtype=torch.float64)
        alphas, betas, scale = [], [], 0.0
        for j in range(iterations):
            basis[j] = v
            w = matvec(v)
            alpha = torch.dot(w, v)
            alphas.append(alpha)
            w = w - alpha * v
            if j > 0:
                w = w - betas[-1] * basis[j - 1]
            for _ in range(2):
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            beta = torch.linalg.vector_norm(w)
            scale = max(scale, abs(float(alpha)), float(beta))
            if j == iterations - 1 or float(beta) <= 1e-10 * max(scale, 1e-300):
                break
            betas.append(beta)
            v = w / beta
        return torch.stack(alphas), torch.stack(betas) if betas else torch.zeros(0, dtype=torch.float64)

    g = torch.Generator().manual_seed(0)
    m = torch.randn(300, 300, generator=g, dtype=torch.float64)
    a = m @ m.T / 300 - torch.eye(300, dtype=torch.float64)
    v0 = torch.randn(300, generator=g, dtype=torch.float64)
    for op, its in ((lambda x: a @ x, 40), (lambda x: x * torch.arange(3.0, dtype=torch.float64).repeat(100), 10)):
        got, want = lanczos(op, v0, its), reference(op, v0, its)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
