"""Architectures and heads: every body on every observation space with both heads, against oracles
(hand-computed two-hot readout, torch's fused attention, finite-difference Hessian-vector
products, numpy SVD, the probe's sequential fit)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner import registry
from plasticity_runner.nets import build_network
from plasticity_runner.nets.heads import InjectedHead, TwoHotHead, two_hot
from plasticity_runner.nets.layers import CReLU, SpectralNorm, apply_spectral_norm, first_layer
from plasticity_runner.nets.vit import SelfAttention
from plasticity_runner.probes.plasticity import fit_targets_sequential, fit_targets_vectorised, make_targets

OBS = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "atari": (4, 84, 84)}
# the architectures at test sizes (same code paths as the paper's sizes, a few thousand parameters):
# the ``tiny`` sizes each body registers (nets/), so a new body is tested here without an edit
ARCHITECTURES = registry.parts("architecture")
TINY_ARCH = {name: {"name": name, **part.spec.tiny} for name, part in ARCHITECTURES.items()}
ADAM = OmegaConf.create(dict(kind="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-9, eps_root=0.0))


def arch(name: str, **overrides):
    return OmegaConf.create({**TINY_ARCH[name], **overrides})


def test_every_registered_architecture_has_a_tiny_config():
    assert set(TINY_ARCH) == set(ARCHITECTURES), "register the body with tiny={...} (its sizes for the tests)"


@pytest.mark.parametrize("head", ["scalar", "two_hot"])
@pytest.mark.parametrize("obs", list(OBS))
@pytest.mark.parametrize("name", list(TINY_ARCH))
def test_every_architecture_on_every_observation_space_with_both_heads(name, obs, head):
    torch.manual_seed(0)
    head_options = dict(v_min=-5.0, v_max=5.0, num_bins=11) if head == "two_hot" else None
    net = build_network(arch(name), OBS[obs], 6, head=head, head_options=head_options)
    x = torch.rand(3, *OBS[obs])
    net.eval()
    q = net(x)
    assert q.shape == (3, 6) and torch.isfinite(q).all()
    torch.testing.assert_close(net(x), q)  # eval mode is deterministic (no dropout, running BN stats)
    net.train()
    loss = net.td_loss(x, torch.tensor([0, 5, 2]), torch.tensor([0.5, -1.0, 2.0])).mean()
    loss.backward()
    grad = first_layer(net.body).weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the loss reaches the layer reading the observation


def test_two_hot_projection_then_readout_returns_the_target_inside_the_support():
    support = torch.linspace(-10.0, 10.0, 41, dtype=torch.float64)
    values = torch.cat([torch.empty(1000, dtype=torch.float64).uniform_(-10, 10), support, torch.tensor([-10.0, 10.0])])
    probs = two_hot(values, support)
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(-1), torch.ones_like(values))
    assert ((probs > 0).sum(-1) <= 2).all()  # mass on at most two (adjacent) atoms
    torch.testing.assert_close((probs * support).sum(-1), values, rtol=0, atol=1e-12)
    # outside the support: clipped to its ends
    torch.testing.assert_close(
        (two_hot(torch.tensor([-50.0, 50.0], dtype=torch.float64), support) * support).sum(-1),
        torch.tensor([-10.0, 10.0], dtype=torch.float64),
    )


def test_two_hot_head_q_is_expectation_and_loss_is_cross_entropy_to_the_projection():
    torch.manual_seed(0)
    head = TwoHotHead(5, 3, v_min=-2.0, v_max=2.0, num_bins=9)
    z = torch.randn(4, 5)
    logits = head.linear(z).view(4, 3, 9)
    support = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(head(z), (logits.softmax(-1) * support).sum(-1))
    a, target = torch.tensor([0, 2, 1, 1]), torch.tensor([0.3, -1.75, 2.0, 0.0])
    # oracle: the two-hot distribution written out by hand, and torch's soft-label cross-entropy
    expected_probs = torch.zeros(4, 9)
    for i, t in enumerate(target.tolist()):
        pos = (t + 2) / 0.5
        lo = min(int(np.floor(pos)), 7)
        expected_probs[i, lo], expected_probs[i, lo + 1] = 1 - (pos - lo), pos - lo
    expected = F.cross_entropy(logits[torch.arange(4), a], expected_probs, reduction="none")
    torch.testing.assert_close(head.td_loss(z, a, target), expected)


def test_injected_head_is_unchanged_at_injection():
    torch.manual_seed(0)
    net = build_network(arch("mlp"), (1, 8, 8), 4, head="two_hot", head_options=dict(v_min=-1, v_max=1, num_bins=5))
    x = torch.rand(7, 1, 8, 8)
    before = net(x)
    fresh = copy.deepcopy(
        build_network(arch("mlp"), (1, 8, 8), 4, head="two_hot", head_options=dict(v_min=-1, v_max=1, num_bins=5)).head
    )
    net.head = InjectedHead(net.head, fresh, copy.deepcopy(fresh))
    torch.testing.assert_close(net(x), before)


def test_crelu_concatenates_both_signs_and_doubles_the_features():
    x = torch.randn(5, 3)
    torch.testing.assert_close(CReLU(1)(x), torch.cat([x.clamp_min(0), (-x).clamp_min(0)], 1))
    for name in ("mlp", "cnn", "nature_cnn"):
        plain = build_network(arch(name), (1, 8, 8), 3)
        crelu = build_network(arch(name), (1, 8, 8), 3, activation="crelu")
        assert crelu.body.feature_dim == 2 * plain.body.feature_dim
        assert not any(isinstance(m, nn.ReLU) for m in crelu.body.modules())
    vit = build_network(arch("vit"), (1, 8, 8), 3, activation="crelu")
    assert vit.body.blocks[0].fc2.in_features == 2 * 16 and isinstance(vit.body.blocks[0].act, CReLU)


def test_vit_pads_sides_that_are_not_a_multiple_of_the_patch_with_zeros():
    torch.manual_seed(0)
    net = build_network(arch("vit"), (1, 8, 8), 3).eval()
    assert net.body.padded_hw == (9, 9) and net.body.pos_embed.shape[1] == 9 + 1
    x = torch.rand(2, 1, 8, 8)
    padded = torch.zeros(2, 1, 9, 9)
    padded[..., :8, :8] = x
    tokens = net.body.patch_embed(padded).flatten(2).transpose(1, 2)
    assert tokens.shape[1] == 9
    torch.testing.assert_close(net.body.patch_embed(F.pad(x, (0, 1, 0, 1))), net.body.patch_embed(padded))
    for side, patches in ((28, 100), (32, 121), (84, 784)):
        assert build_network(arch("vit"), (1, side, side), 3).body.pos_embed.shape[1] == patches + 1


def test_attention_equals_torch_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = SelfAttention(8, 2, dropout=0.0)
    x = torch.randn(3, 5, 8)
    q, k, v = attn.qkv(x).reshape(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    expected = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 5, 8))
    torch.testing.assert_close(attn(x), expected)


def test_vit_hessian_vector_product_matches_finite_differences():
    torch.manual_seed(0)
    net = build_network(arch("vit", dropout=0.0), (1, 6, 6), 3).double()
    x, a = torch.rand(4, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    y = torch.rand(4, dtype=torch.float64)
    params = dict(net.named_parameters())
    vec = {k: torch.randn_like(p) for k, p in params.items()}

    def loss_fn(p):
        out = torch.func.functional_call(net, p, (x,))
        return ((out.gather(1, a[:, None]).squeeze(1) - y) ** 2).mean()

    grads = torch.func.grad(loss_fn)
    _, hvp = torch.func.jvp(grads, (params,), (vec,))  # forward-over-reverse: needs double backward
    eps = 1e-5
    plus = grads({k: p + eps * vec[k] for k, p in params.items()})
    minus = grads({k: p - eps * vec[k] for k, p in params.items()})
    for k in params:
        torch.testing.assert_close(hvp[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-3, atol=1e-5)
    # reverse-over-reverse as well
    loss = loss_fn(params)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    hv = torch.autograd.grad(sum((gi * vec[k]).sum() for gi, k in zip(g, params)), list(params.values()))
    for h, k in zip(hv, params):
        torch.testing.assert_close(h, hvp[k], rtol=1e-6, atol=1e-9)


def test_resnet_stem_adapts_to_small_inputs_and_layer_norm_replaces_batch_norm():
    small = build_network(arch("resnet18"), (1, 8, 8), 3)
    big = build_network(arch("resnet18"), (4, 84, 84), 3)
    assert small.body.stem[0].kernel_size == (3, 3) and len(small.body.stem) == 3
    assert big.body.stem[0].kernel_size == (7, 7) and isinstance(big.body.stem[-1], nn.MaxPool2d)
    sides = []
    h = small.body.stem(torch.rand(2, 1, 8, 8))
    for block in small.body.blocks:
        h = block(h)
        sides.append(h.shape[-1])
    assert sides == [8, 8, 4, 4, 2, 2, 1, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in small.modules()) == 1 + 8 * 2 + 3
    ln = build_network(arch("resnet18"), (1, 8, 8), 3, layer_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ln.modules())
    assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in ln.modules()) == 1 + 8 * 2 + 3


def test_layer_norm_normalises_every_hidden_layer_of_mlp_and_cnn():
    torch.manual_seed(0)
    for name, expected_norms in (("mlp", 2), ("cnn", 4), ("nature_cnn", 4)):
        net = build_network(arch(name), (1, 8, 8), 3, layer_norm=True)
        layers = list(net.body.net)
        norms = [i for i, m in enumerate(layers) if isinstance(m, nn.LayerNorm)]
        assert len(norms) == expected_norms
        # each norm sits between a conv / linear layer and its activation
        assert all(isinstance(layers[i - 1], (nn.Linear, nn.Conv2d)) for i in norms)
        assert all(isinstance(layers[i + 1], nn.ReLU) for i in norms)
        outs = []
        hooks = [layers[i].register_forward_hook(lambda m, i, o: outs.append(o.flatten(1))) for i in norms]
        net(torch.rand(4, 1, 8, 8))
        for h in hooks:
            h.remove()
        for o in outs:  # per sample: mean 0, variance 1 over the layer's units (affine at its init)
            torch.testing.assert_close(o.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
            torch.testing.assert_close(o.var(1, unbiased=False), torch.ones(4), atol=1e-2, rtol=0)


def test_spectral_norm_bounds_the_top_singular_value():
    torch.manual_seed(0)
    layer = apply_spectral_norm(nn.Linear(20, 30))
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(10.0)
    raw = layer.parametrizations.weight.original.detach().numpy()
    assert np.linalg.svd(raw, compute_uv=False)[0] > 5  # without the parametrisation it would fail
    layer.train()
    for _ in range(30):  # power iteration: one step per training forward
        layer(torch.randn(2, 20))
    layer.eval()
    top = np.linalg.svd(layer.weight.detach().numpy(), compute_uv=False)[0]
    assert abs(top - 1.0) < 1e-3
    conv = apply_spectral_norm(nn.Conv2d(3, 8, 5))
    for _ in range(50):
        conv(torch.randn(1, 3, 5, 5))
    conv.eval()
    assert np.linalg.svd(conv.weight.detach().reshape(8, -1).numpy(), compute_uv=False)[0] <= 1 + 1e-3


@pytest.mark.parametrize(
    "name,options",
    [
        ("resnet18", {}),  # BatchNorm: running statistics stacked per copy
        ("mlp", {"spectral_norm": {}}),  # spectral norm: power-iteration vector stacked per copy
        ("cnn", {"spectral_norm": {}, "layer_norm": True, "activation": "crelu"}),
        ("nature_cnn", {"head": "two_hot", "head_options": dict(v_min=-1.0, v_max=1.0, num_bins=5)}),
    ],
)
def test_vectorised_probe_fit_equals_sequential_for_new_architectures(name, options):
    torch.manual_seed(0)

    def fresh():
        return build_network(arch(name), (1, 8, 8), 4, **options)

    net = fresh()
    inputs = torch.rand(32, 1, 8, 8)
    targets = make_targets(fresh, inputs, [3, 4, 5], offset=0.1, sin_scale=1e5)
    args = (ADAM, inputs, targets)
    kwargs = dict(steps=4, batch_size=8, seed=1, curve_every_steps=2)
    vec = fit_targets_vectorised(net, *args, **kwargs)
    seq = fit_targets_sequential(net, *args, **kwargs)
    for v, s in zip(vec, seq):
        torch.testing.assert_close(v, s, rtol=1e-4, atol=1e-5)
    assert not torch.equal(vec[0], vec[1])  # the fit moved the copies


def test_probe_fit_keeps_frozen_parameters_frozen():
    torch.manual_seed(0)
    net = build_network(arch("mlp"), (1, 8, 8), 4)
    fresh_head = build_network(arch("mlp"), (1, 8, 8), 4).head
    net.head = InjectedHead(net.head, copy.deepcopy(fresh_head), copy.deepcopy(fresh_head))
    net.head.old.requires_grad_(False)
    net.head.new_frozen.requires_grad_(False)
    inputs = torch.rand(32, 1, 8, 8)
    targets = torch.rand(2, 32, 4)
    vec = fit_targets_vectorised(net, ADAM, inputs, targets, steps=5, batch_size=8, seed=0, curve_every_steps=5)
    seq = fit_targets_sequential(net, ADAM, inputs, targets, steps=5, batch_size=8, seed=0, curve_every_steps=5)
    for v, s in zip(vec, seq):
        torch.testing.assert_close(v, s, rtol=1e-4, atol=1e-5)


def test_vit_probe_runs_with_dropout_and_measures_losses_deterministically():
    torch.manual_seed(0)

    def fresh():
        return build_network(arch("vit"), (1, 8, 8), 4)

    net = fresh().eval()
    inputs = torch.rand(32, 1, 8, 8)
    targets = make_targets(fresh, inputs, [1, 2], offset=0.0, sin_scale=1e5)
    initial, final, curve = fit_targets_vectorised(net, ADAM, inputs, targets, 5, 8, 0, 5)
    with torch.no_grad():
        expected = ((net(inputs) - targets) ** 2).mean(dim=(1, 2))  # eval mode: no dropout
    torch.testing.assert_close(initial, expected)
    assert torch.isfinite(final).all() and torch.isfinite(curve).all()


def test_spectral_norm_parametrisation_under_vmap_updates_each_copy():
    torch.manual_seed(0)
    sn = SpectralNorm(torch.randn(4, 3))
    w = torch.randn(2, 4, 3)
    u = sn._u.expand(2, 4).clone()
    out = torch.func.vmap(lambda w_, u_: torch.func.functional_call(sn, {"_u": u_}, (w_,)))(w, u)
    assert out.shape == (2, 4, 3) and not torch.allclose(u[0], u[1])  # each copy wrote its own vector


def test_parameter_table_in_the_docs_matches_the_code():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("param_counts", root / "scripts" / "param_counts.py")
    counts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counts)
    doc = (root / "docs" / "interventions.md").read_text()
    for name in ARCHITECTURES:
        row = next(
            (line for line in doc.splitlines() if line.startswith(f"| `{name}` | ") and line.endswith(" M |")), None
        )
        assert row is not None, (
            f"docs/interventions.md's parameter table has no row for {name}: add the one scripts/param_counts.py prints"
        )
        expected = [f"{counts.count(name, shape, a) / 1e6:.3f} M" for shape, a in counts.OBS.values()]
        assert [c.strip() for c in row.split("|")[2:-1]] == expected


def test_architectures_register_in_the_report_order():
    from plasticity_runner.report.figures import ARCH_ORDER

    assert list(ARCHITECTURES)[:6] == ["mlp", "cnn", "resnet18", "vit", "nature_cnn", "minatar_cnn"]
    assert ARCH_ORDER == tuple(ARCHITECTURES)


@pytest.mark.parametrize(
    "override,key",
    [
        (["architecture=mlp", "architecture.width=0"], "architecture.width"),
        (["architecture=mlp", "architecture.num_layers=0"], "architecture.num_layers"),
        (["architecture=cnn", "architecture.conv_stride=0"], "architecture.conv_stride"),
        (["architecture=cnn", "architecture.hidden=-3"], "architecture.hidden"),
        (["architecture=resnet18", "architecture.width=0"], "architecture.width"),
        (["architecture=vit", "architecture.patch_size=0"], "architecture.patch_size"),
        (["architecture=vit", "architecture.dropout=1.5"], "architecture.dropout"),
        (["architecture=vit", "architecture.num_heads=3"], "architecture.num_heads"),
        (["architecture=nature_cnn_shared_bias", "architecture.hidden=0"], "architecture.hidden"),
        (["architecture=minatar_cnn", "architecture.channels=0"], "architecture.channels"),
        (["architecture=minatar_cnn", "architecture.width_multiplier=-1"], "architecture.width_multiplier"),
    ],
)
def test_each_architecture_checks_its_ranges_naming_the_key(override, key):
    from plasticity_runner.cli import compose_config
    from plasticity_runner.config import ConfigError, validate

    validate(compose_config(override[:1]))
    with pytest.raises(ConfigError) as exc:
        validate(compose_config(override))
    assert exc.value.key == key
