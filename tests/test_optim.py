"""Optimizers against torch's Adam and a numpy transcription of the paper's equation (6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from plasticity_runner.optim import Adam, RMSProp, build_optimizer, reset_state


def _run(opt_cls, steps=5, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(7, 3))
    grads = [torch.randn(7, 3) for _ in range(steps)]
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach(), grads


def test_adam_without_eps_root_equals_torch_adam():
    ours, _ = _run(Adam, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, eps_root=0.0)
    ref, _ = _run(torch.optim.Adam, lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])  # > 0: AdamW's decoupled decay, before the update
@pytest.mark.parametrize("eps_root", [0.0, 1e-3])  # 0: torch's fused kernel; > 0: the _foreach path
def test_adam_matches_equation_6(eps_root, weight_decay):
    lr, b1, b2, eps = 1e-2, 0.9, 0.9, 1e-9
    ours, grads = _run(Adam, lr=lr, betas=(b1, b2), eps=eps, eps_root=eps_root, weight_decay=weight_decay)
    torch.manual_seed(0)
    p = torch.randn(7, 3).double().numpy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.double().numpy()
        p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat + eps_root) + eps)
    np.testing.assert_allclose(ours.numpy(), p, rtol=1e-5, atol=1e-6)


def test_centred_rmsprop_eps_inside_root():
    lr, d, eps = 1e-2, 0.95, 1e-4
    ours, grads = _run(RMSProp, lr=lr, decay=d, eps=eps, centered=True)
    torch.manual_seed(0)
    p = torch.randn(7, 3).double().numpy()
    nu = np.zeros_like(p)
    mu = np.zeros_like(p)
    for g in grads:
        g = g.double().numpy()
        nu = d * nu + (1 - d) * g * g
        mu = d * mu + (1 - d) * g
        p = p - lr * g / np.sqrt(nu - mu * mu + eps)
    np.testing.assert_allclose(ours.numpy(), p, rtol=1e-5, atol=1e-6)


def test_reset_state_by_parameter_not_position():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(
        OmegaConf.create(dict(kind="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0)), [a, b]
    )
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    reset_state(opt, [b])
    assert a in opt.state and opt.state[a]["step"] == 1
    assert b not in opt.state
    opt.step()
    assert opt.state[b]["step"] == 1 and opt.state[a]["step"] == 2


def _adam_cfg(eps_root):
    return OmegaConf.create(dict(kind="adam", lr=1e-2, b1=0.9, b2=0.99, eps=1e-8, eps_root=eps_root))


@pytest.mark.parametrize("eps_root", [0.0, 1e-3])
def test_adam_resumes_from_a_state_dict_exactly(eps_root):
    """A restart from the state dict, also one written before the fused path kept ``step_t``
    (older checkpoints), continues the bias corrections where they were."""
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(6)]
    start = torch.randn(4, 3)

    def run(split, drop_step_t):
        p = torch.nn.Parameter(start.clone())
        opt = build_optimizer(_adam_cfg(eps_root), [p])
        for i, g in enumerate(grads):
            if i == split:
                sd = opt.state_dict()
                if drop_step_t:
                    for st in sd["state"].values():
                        st.pop("step_t", None)
                opt = build_optimizer(_adam_cfg(eps_root), [p])
                opt.load_state_dict(sd)
            p.grad = g.clone()
            opt.step()
        return p.detach()

    straight = run(None, False)
    assert torch.equal(run(3, False), straight)
    assert torch.equal(run(3, True), straight)


@pytest.mark.parametrize("eps_root", [0.0, 1e-3])
def test_adam_reset_restarts_the_bias_correction(eps_root):
    """After ``reset_state`` a parameter steps as under a fresh optimizer; the other keeps its count."""
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    opt = build_optimizer(_adam_cfg(eps_root), [a, b])
    for _ in range(3):
        a.grad, b.grad = torch.randn(5), torch.randn(5)
        opt.step()
    reset_state(opt, [b])
    fresh_b = torch.nn.Parameter(b.detach().clone())
    fresh = build_optimizer(_adam_cfg(eps_root), [fresh_b])
    for _ in range(2):
        a.grad, b.grad = torch.randn(5), torch.randn(5)
        fresh_b.grad = b.grad.clone()
        opt.step()
        fresh.step()
    assert torch.equal(b.detach(), fresh_b.detach())
    assert opt.state[a]["step"] == 5 and opt.state[b]["step"] == 2


def test_adam_on_a_strided_parameter_equals_contiguous():
    """The probe keeps some stacked weights as transposed views; the fused step is elementwise."""
    torch.manual_seed(0)
    base = torch.randn(3, 6, 4)
    strided = torch.nn.Parameter(base.mT.contiguous().mT)  # [3, 6, 4] with transposed strides
    dense = torch.nn.Parameter(base.clone())
    assert not strided.is_contiguous()
    o1, o2 = build_optimizer(_adam_cfg(0.0), [strided]), build_optimizer(_adam_cfg(0.0), [dense])
    for _ in range(4):
        g = torch.randn(3, 6, 4)
        strided.grad, dense.grad = g.mT.contiguous().mT, g.clone()
        o1.step()
        o2.step()
    assert torch.equal(strided.detach(), dense.detach())
