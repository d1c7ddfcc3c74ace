"""HL-Gauss (``interventions/hl_gauss.py``, ``nets.heads.hl_gauss``) against scipy: the histogram
probabilities are differences of ``scipy.stats.norm.cdf`` at the bin edges around two-hot's atoms,
normalised over the support; sigma = 0.75 x the spacing by default; the head's loss is the
cross-entropy to them; the probe's cross-entropy fit uses them; two_hot and hl_gauss refuse to
compose, naming both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions import build_interventions
from plasticity_runner.nets.heads import HLGaussHead, TwoHotHead, hl_gauss
from plasticity_runner.probes.plasticity_fit import categorical_head, fit_loss

from .conftest import make_cfg
from .test_interventions import agent_with


def oracle(value: float, v_min: float, v_max: float, k: int, sigma: float) -> np.ndarray:
    atoms = np.linspace(v_min, v_max, k)
    d = atoms[1] - atoms[0]
    edges = np.concatenate([atoms - d / 2, [atoms[-1] + d / 2]])
    v = min(max(value, v_min), v_max)
    mass = norm.cdf(edges[1:], loc=v, scale=sigma) - norm.cdf(edges[:-1], loc=v, scale=sigma)
    return mass / (norm.cdf(edges[-1], loc=v, scale=sigma) - norm.cdf(edges[0], loc=v, scale=sigma))


@pytest.mark.parametrize("value", [-7.0, -2.0, -0.3, 0.0, 1.25, 2.0, 9.0])
def test_histogram_equals_scipy_normal_cdf_differences(value):
    support = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    sigma = 0.75 * 0.5
    got = hl_gauss(torch.tensor([value], dtype=torch.float64), support, sigma)[0].numpy()
    np.testing.assert_allclose(got, oracle(value, -2.0, 2.0, 9, sigma), rtol=1e-10, atol=1e-12)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_head_sigma_and_loss_are_the_cross_entropy_to_the_histogram():
    torch.manual_seed(0)
    head = HLGaussHead(4, 3, v_min=-1.0, v_max=1.0, num_bins=5)  # spacing 0.5
    assert head.sigma == pytest.approx(0.375)
    features = torch.randn(6, 4)
    a = torch.tensor([0, 1, 2, 0, 1, 2])
    target = torch.tensor([-1.5, -0.6, 0.0, 0.2, 0.99, 3.0])
    logits = head.raw(features).detach().double().numpy()
    expected = []
    for i in range(6):
        p = oracle(float(target[i]), -1.0, 1.0, 5, 0.375)
        z = logits[i, int(a[i])]
        log_softmax = z - np.log(np.exp(z).sum())
        expected.append(-(p * log_softmax).sum())
    np.testing.assert_allclose(head.td_loss(features, a, target).detach().numpy(), expected, rtol=1e-5)
    q = head(features).detach().double().numpy()
    np.testing.assert_allclose(
        q, (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) * np.linspace(-1, 1, 5)).sum(-1), rtol=1e-5
    )


def test_an_agent_with_hl_gauss_has_that_head_and_the_probe_fits_its_histogram():
    state = agent_with(
        ["hl_gauss"], extra=["intervention.hl_gauss.num_bins=7", "intervention.hl_gauss.sigma_ratio=1.5"], steps=1
    )
    head = state.agent.online.head
    assert isinstance(head, HLGaussHead) and head.num_bins == 7
    assert head.sigma == pytest.approx(1.5 * float(head.support[1] - head.support[0]))
    assert categorical_head(state.agent.online) is head
    logits, y = torch.randn(2, 3, head.num_actions, 7), torch.randn(2, 3, head.num_actions) * 50
    expected = -(head.target_distribution(y) * torch.log_softmax(logits, -1)).sum(-1).mean(dim=(-2, -1))
    torch.testing.assert_close(fit_loss(logits, y, head), expected)
    two_hot = TwoHotHead(4, 2, num_bins=7)  # a two-hot head still fits two_hot(y)
    assert not torch.allclose(
        fit_loss(logits[..., :2, :], y[..., :2], two_hot), fit_loss(logits[..., :2, :], y[..., :2], head)
    )


def test_two_hot_and_hl_gauss_are_refused_naming_both_and_bad_sigma_names_its_key():
    with pytest.raises(ConfigError) as info:
        build_interventions(make_cfg(["intervention=[two_hot,hl_gauss]"]).intervention)
    assert "two_hot" in str(info.value) and "hl_gauss" in str(info.value)
    with pytest.raises(ConfigError, match="intervention.hl_gauss.sigma_ratio"):
        validate(make_cfg(["intervention=[hl_gauss]", "intervention.hl_gauss.sigma_ratio=0"]))
    with pytest.raises(ConfigError, match="intervention.hl_gauss.num_bins"):
        validate(make_cfg(["intervention=[hl_gauss]", "intervention.hl_gauss.num_bins=1"]))


def test_the_probe_fits_an_hl_gauss_head_by_cross_entropy_through_a_real_pause(tmp_path):
    from .test_pause_grid import one_pause

    one_pause("mlp", ("hl_gauss",), tmp_path, ["probe.two_hot_fit=cross_entropy"])
