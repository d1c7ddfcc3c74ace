"""The logged loss is split into what it is made of: ``train/td_loss`` is the TD term alone,
``train/penalty/<intervention>`` each penalty, ``train/loss_total`` what the optimizer minimised;
each checked against a hand computation on the networks and batch of the logged step."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity_runner.agents.dqn import DQNAgent
from plasticity_runner.trainer import LOG_POINT_SCALARS, train

from .conftest import make_cfg
from .test_trainer import values

WD, L2 = 0.5, 0.25  # coefficients large enough that a penalty in td_loss would show


def recorded_run(tmp_path, monkeypatch, extra=()):
    """A run logging every step (``log_every_steps=1``) with weight decay and L2-Init; returns the
    train metrics and, per step, the online and target networks and the batch before its update."""
    seen: dict[int, tuple] = {}
    real_learn = DQNAgent.learn

    def recording_learn(self, batch, step, run_hooks=True):
        seen[step] = (copy.deepcopy(self.online), copy.deepcopy(self.target), batch)
        return real_learn(self, batch, step, run_hooks)

    monkeypatch.setattr(DQNAgent, "learn", recording_learn)
    cfg = make_cfg(
        [
            "intervention=[weight_decay,l2_init]",
            f"intervention.weight_decay.coeff={WD}",
            f"intervention.l2_init.coeff={L2}",
            "total_steps=12",
            "log_every_steps=1",
            "probe.every_steps=12",
            *extra,
        ]
    )
    train(cfg, tmp_path)
    rows = values(tmp_path).query("phase == 'train'")
    return cfg, {(int(s), m): v for s, m, v in zip(rows.step, rows.metric, rows.value)}, seen


def hand_terms(cfg, online, target, batch, theta_0) -> tuple[float, float, float]:
    """Eq. (1) on the batch, ``(coeff / 2) ||theta||^2`` and ``coeff ||theta - theta_0||^2``, by hand."""
    with torch.no_grad():
        q_sa = online(batch.o_tm1)[torch.arange(len(batch.a_tm1)), batch.a_tm1]
        y = batch.r_t + float(cfg.agent.gamma) * batch.discount_t * target(batch.o_t).max(dim=1).values
        td = ((q_sa - y) ** 2).mean().item()
        params = list(online.parameters())
        wd = WD / 2 * sum((p.double() ** 2).sum().item() for p in params)
        l2 = L2 * sum(((p.double() - p0.double()) ** 2).sum().item() for p, p0 in zip(params, theta_0))
    return td, wd, l2


def test_td_loss_is_the_td_term_alone_and_each_penalty_is_logged_apart(tmp_path, monkeypatch):
    cfg, logged, seen = recorded_run(tmp_path, monkeypatch)
    theta_0 = [p.detach().clone() for p in seen[1][0].parameters()]  # the network as built
    for step in (1, 5, 12):
        online, target, batch = seen[step]
        td, wd, l2 = hand_terms(cfg, online, target, batch, theta_0)
        assert wd > 10 * td  # the penalty dominates: a td_loss holding it would be far off
        assert logged[step, "td_loss"] == pytest.approx(td, rel=1e-5)
        assert logged[step, "penalty/weight_decay"] == pytest.approx(wd, rel=1e-5)
        assert logged[step, "penalty/l2_init"] == pytest.approx(l2, rel=1e-4, abs=1e-9)
        assert logged[step, "loss_total"] == pytest.approx(td + wd + l2, rel=1e-5)


def test_a_run_without_penalties_logs_td_loss_and_an_equal_total(tmp_path):
    train(make_cfg([]), tmp_path)
    rows = values(tmp_path).query("phase == 'train'")
    td = rows[rows.metric == "td_loss"].value.to_numpy()
    assert (rows[rows.metric == "loss_total"].value.to_numpy() == td).all()
    assert not rows.metric.str.startswith("penalty/").any()
    assert {"td_loss", "penalty/*", "loss_total"} <= set(LOG_POINT_SCALARS)


@pytest.mark.slow
def test_the_compiled_loss_logs_the_same_split(tmp_path):
    """``speed.compile`` (``fastpath``: the agent's ``loss_terms`` under ``torch.compile``) logs
    the same names and, to fp32 reordering, the same values as the eager loss."""
    overrides = [
        "intervention=[weight_decay,l2_init]",
        f"intervention.weight_decay.coeff={WD}",
        f"intervention.l2_init.coeff={L2}",
        "total_steps=20",
        "probe.enabled=false",
    ]
    train(make_cfg(overrides), tmp_path / "eager")
    train(make_cfg([*overrides, "speed.compile=true"]), tmp_path / "compiled")
    eager = values(tmp_path / "eager").query("phase == 'train'")
    compiled = values(tmp_path / "compiled").query("phase == 'train'")
    for name in ("td_loss", "penalty/weight_decay", "penalty/l2_init", "loss_total"):
        e, c = eager[eager.metric == name].value.to_numpy(), compiled[compiled.metric == name].value.to_numpy()
        assert len(e) == 2 and e == pytest.approx(c, rel=1e-4)
