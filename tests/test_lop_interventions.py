"""The field's interventions (CBP, L2-Init, NaP, scheduled resets, soft S&P, AdamW, ReDo restarts) against oracles that would fail if they were wrong: torch's
AdamW and Adam, a hand-written contribution utility on an explicit MLP forward, an unprojected
twin run, a fresh initialisation rebuilt from its recorded seed, a hand-written L2 gradient."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity_runner.config import ConfigError
from plasticity_runner.optim import Adam, build_optimizer, reset_state_entries
from plasticity_runner.trainer import build_train_state, prefill, train

from .conftest import make_cfg
from .test_interventions import (
    agent_with,
    cfg_with,
    learn,
    penalty_gradients,
    rebuild_fresh,
    snapshot,
)

# ------------------------------------------------------------------------------- AdamW, step counts


def _steps(opt, p, grads):
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach().clone()


def test_decoupled_weight_decay_equals_torch_adamw():
    """The fused path (eps_root 0) against torch's AdamW; the eps_root > 0 path against equation (6)
    with the decay: ``test_optim.test_adam_matches_equation_6``."""
    torch.manual_seed(0)
    start = torch.randn(7, 3)
    grads = [torch.randn(7, 3) for _ in range(6)]
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    p = torch.nn.Parameter(start.clone())
    ours = _steps(Adam([p], eps_root=0.0, weight_decay=0.1, **kw), p, grads)
    q = torch.nn.Parameter(start.clone())
    ref = _steps(torch.optim.AdamW([q], weight_decay=0.1, **kw), q, grads)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    r = torch.nn.Parameter(start.clone())  # and it is not Adam with coupled L2
    coupled = _steps(torch.optim.Adam([r], weight_decay=0.1, **kw), r, grads)
    assert (ours - coupled).abs().max() > 1e-4


def test_optimizer_adamw_config_builds_decoupled_decay():
    cfg = make_cfg(["optimizer=adamw"])
    assert cfg.optimizer.weight_decay == 0.01
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(cfg.optimizer, [p])
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert build_optimizer(make_cfg([]).optimizer, [p]).param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(ConfigError):
        from plasticity_runner.config import validate

        validate(make_cfg(["optimizer=adamw", "optimizer.weight_decay=-1"]))


def test_restarted_entries_step_like_a_fresh_adam_the_rest_like_the_old_one():
    """After 5 steps, rows 1 and 3 restart (moments and counts): the next steps of those rows equal
    a fresh torch Adam's on them, the other rows a continuing torch Adam's (with AdamW's decay too)."""
    torch.manual_seed(1)
    start = torch.randn(5, 4)
    grads = [torch.randn(5, 4) for _ in range(8)]
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    p = torch.nn.Parameter(start.clone())
    ours = Adam([p], **kw)
    _steps(ours, p, grads[:5])
    reset_state_entries(ours, p, torch.tensor([1, 3]), dim=0, restart_steps=True)
    assert ours.state[p]["unit_step"][[1, 3]].eq(0).all() and ours.state[p]["unit_step"][[0, 2, 4]].eq(5).all()
    after = _steps(ours, p, grads[5:])

    q = torch.nn.Parameter(start.clone())  # the continuing rows: torch's AdamW without a restart
    cont = torch.optim.AdamW([q], **kw)
    _steps(cont, q, grads[:5])
    restart_from = q.detach().clone()
    cont_after = _steps(cont, q, grads[5:])
    r = torch.nn.Parameter(restart_from.clone())  # the restarted rows: a fresh AdamW from there
    fresh_after = _steps(torch.optim.AdamW([r], **kw), r, grads[5:])
    torch.testing.assert_close(after[[0, 2, 4]], cont_after[[0, 2, 4]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after[[1, 3]], fresh_after[[1, 3]], rtol=1e-5, atol=1e-6)
    assert (fresh_after[[1, 3]] - cont_after[[1, 3]]).abs().max() > 1e-4  # the restart matters


def test_reset_without_restart_keeps_counts():
    p = torch.nn.Parameter(torch.randn(4, 2))
    opt = Adam([p])
    _steps(opt, p, [torch.randn(4, 2)] * 3)
    reset_state_entries(opt, p, torch.tensor([0]), dim=0)
    assert "unit_step" not in opt.state[p] and opt.state[p]["step"] == 3
    assert opt.state[p]["exp_avg"][0].eq(0).all() and opt.state[p]["exp_avg"][1:].ne(0).all()


@pytest.mark.parametrize("restart", [False, True])
def test_redo_restart_adam_steps_option(restart):
    extra = ["intervention.redo.tau=0.0", f"intervention.redo.restart_adam_steps={str(restart).lower()}"]
    state = agent_with(["redo"], extra=extra, steps=3)
    agent, redo = state.agent, state.agent.interventions[0]
    layer = agent.online.unit_groups()[0].incoming[0]
    with torch.no_grad():
        layer.weight[[2, 5]] = 0.0
        layer.bias[[2, 5]] = -1.0
    redo.recycle(agent.networks, state.replay.sample(16, state.replay_generator).o_tm1, state.step)
    st = agent.optimizer.state[layer.weight]
    if not restart:
        assert "unit_step" not in st  # today's default: the tensor's count
    else:
        assert st["unit_step"][[2, 5]].eq(0).all() and st["unit_step"][[0, 1, 3]].eq(3).all()


# ------------------------------------------------------------------------------ continual backprop

ETA = 0.9


def _hand_utility(net, obs):
    """Contribution of each hidden unit of a plain 2-layer MLP Q-network, written out by hand:
    mean_batch |h_i| * sum_k |W_next[k, i]|."""
    W1, b1 = net.body.net[1].weight, net.body.net[1].bias
    W2, b2 = net.body.net[3].weight, net.body.net[3].bias
    Wq = net.head.linear.weight
    x = obs.flatten(1)
    h1 = torch.relu(x @ W1.T + b1)
    h2 = torch.relu(h1 @ W2.T + b2)
    return [h1.abs().mean(0) * W2.abs().sum(0), h2.abs().mean(0) * Wq.abs().sum(0)]


def test_continual_backprop_replaces_the_lowest_bias_corrected_utilities_with_accumulated_counts():
    width = 16
    extra = ["intervention.continual_backprop.maturity_threshold=1000"]  # no replacement while warming up
    state = agent_with(["continual_backprop"], extra=extra, steps=3)
    agent, cbp = state.agent, state.agent.interventions[0]
    cbp.cfg.maturity_threshold, cbp.cfg.replacement_rate, cbp.cfg.decay_rate = 0, 2.5 / width, ETA
    cbp.utility, cbp.age, cbp.pending = {}, {}, {}
    names = ["body.net.2", "body.net.4"]
    layers = [agent.online.body.net[1], agent.online.body.net[3]]
    readers = [agent.online.body.net[3], agent.online.head.linear]

    # step A: u = (1 - eta) c, age 1: corrected = c; rho * 16 = 2.5 -> replace 2, keep 0.5
    obs = state.replay.sample(32, state.replay_generator).o_tm1
    c = [t.detach() for t in _hand_utility(agent.online, obs)]
    before = snapshot(agent.online)
    cbp.generate_and_test(agent.networks, obs, step=100)
    fresh = rebuild_fresh(state, cbp.last_fresh_seed)
    fresh_layers = [fresh.body.net[1], fresh.body.net[3]]
    u_hand = []
    for name, ck, layer, reader, fl in zip(names, c, layers, readers, fresh_layers):
        got = cbp.last_replaced[name].sort().values
        _assert_lowest(ck, got, 2)
        torch.testing.assert_close(layer.weight[got], fl.weight[got], rtol=0, atol=0)  # incoming: fresh
        torch.testing.assert_close(layer.bias[got], fl.bias[got], rtol=0, atol=0)
        # outgoing: zero, except in the rows of the reader's own units that were replaced after
        # (layers in order, as Dohare et al.'s gen_new_features: a new unit's fresh row reads everything)
        rows = torch.ones(reader.weight.shape[0], dtype=torch.bool)
        if reader is layers[1]:
            rows[cbp.last_replaced[names[1]]] = False
        assert reader.weight[rows][:, got].eq(0).all()
        keep = torch.tensor([i for i in range(width) if i not in got.tolist()])
        torch.testing.assert_close(
            reader.weight[rows][:, keep], before[_pname(agent.online, reader)][rows][:, keep], rtol=0, atol=0
        )
        st = agent.optimizer.state[layer.weight]
        assert st["exp_avg"][got].eq(0).all() and st["exp_avg_sq"][got].eq(0).all()
        assert st["unit_step"][got].eq(0).all()  # AdamGnT: counts restart
        cols = torch.ones(
            layer.weight.shape[1], dtype=torch.bool
        )  # not the columns of an earlier layer's replaced units
        if layer is layers[1]:
            cols[cbp.last_replaced[names[0]]] = False
        assert st["unit_step"][keep][:, cols].eq(3).all() and st["unit_step"][keep][:, ~cols].eq(0).all()
        assert agent.optimizer.state[reader.weight]["exp_avg"][:, got].eq(0).all()
        u = (1 - ETA) * ck
        u[got] = 0.0
        u_hand.append((u, got))
        torch.testing.assert_close(cbp.utility[name], u, rtol=1e-5, atol=1e-7)
        assert cbp.age[name][got].eq(0).all() and cbp.age[name][keep].eq(1).all()
        assert cbp.pending[name] == pytest.approx(0.5)

    # step B: u = eta u + (1 - eta) c; corrected u / (1 - eta^age), ages 1 (replaced) or 2; 0.5 + 2.5 -> 3
    c2 = [t.detach() for t in _hand_utility(agent.online, obs)]
    cbp.generate_and_test(agent.networks, obs, step=101)
    for name, ck, (u, replaced) in zip(names, c2, u_hand):
        u = ETA * u + (1 - ETA) * ck
        age = torch.full((width,), 2.0)
        age[replaced] = 1.0
        corrected = u / (1 - ETA**age)
        _assert_lowest(corrected, cbp.last_replaced[name], 3)
        assert cbp.pending[name] == pytest.approx(0.0)
    assert cbp.replaced_total == 2 * 2 + 2 * 3

    # step C: ages 1..16 make the bias correction decide (ranking the raw u would pick other units)
    gen = torch.Generator().manual_seed(0)
    u_start = {name: torch.rand(width, generator=gen) * 0.05 for name in names}
    ages = {name: torch.arange(width, 0, -1) for name in names}
    cbp.load_state_dict({"utility": u_start, "age": ages, "pending": {n: 0.0 for n in names}}, agent.networks)
    c3 = [t.detach() for t in _hand_utility(agent.online, obs)]
    cbp.cfg.replacement_rate = 3.0 / width
    cbp.generate_and_test(agent.networks, obs, step=102)
    for name, ck in zip(names, c3):
        u = ETA * u_start[name] + (1 - ETA) * ck
        age = torch.arange(width, 0, -1).double() + 1
        corrected = u / (1 - ETA**age).float()
        chosen = cbp.last_replaced[name]
        _assert_lowest(corrected, chosen, 3)
        assert set(torch.argsort(u)[:3].tolist()) != set(chosen.tolist())  # the correction mattered


def _assert_lowest(values: torch.Tensor, chosen: torch.Tensor, k: int) -> None:
    """``chosen`` holds ``k`` units whose values are the ``k`` smallest (ties broken either way)."""
    assert chosen.numel() == k
    rest = torch.ones_like(values, dtype=torch.bool)
    rest[chosen] = False
    torch.testing.assert_close(values[chosen].sort().values, values.sort().values[:k], rtol=1e-5, atol=1e-8)
    assert values[chosen].max() <= values[rest].min() * (1 + 1e-5) + 1e-8


def _pname(net, module):
    return next(f"{n}.weight" for n, m in net.named_modules() if m is module)


def test_continual_backprop_waits_for_maturity():
    extra = [
        "intervention.continual_backprop.maturity_threshold=5",
        "intervention.continual_backprop.replacement_rate=0.5",
    ]
    state = agent_with(["continual_backprop"], extra=extra, steps=5)
    cbp = state.agent.interventions[0]
    assert cbp.replaced_total == 0  # ages 1..5: none older than 5
    learn(state, 1)
    assert cbp.replaced_total > 0


@pytest.mark.parametrize("threshold", [0, 3, 7])
def test_mature_count_follows_the_ages_without_reading_them(threshold):
    """The host count of units older than the threshold against the ages themselves (the oracle),
    from mixed ages (a resume), through steps and replacements of mature units."""
    from plasticity_runner.interventions.continual_backprop import MatureCount

    gen = torch.Generator().manual_seed(threshold)
    ages = torch.randint(0, 12, (40,), generator=gen)
    count = MatureCount(ages, threshold)
    for _ in range(30):
        ages += 1
        mature = torch.nonzero(ages > threshold).flatten()
        assert count.tick() == mature.numel()
        k = int(torch.randint(0, mature.numel() + 1, (), generator=gen))
        ages[mature[torch.randperm(mature.numel(), generator=gen)[:k]]] = 0
        count.restart(k)
    assert count.mature == int((ages > threshold).sum())


# -------------------------------------------------------------------------------------- L2-Init


def test_l2_init_adds_two_lambda_theta_minus_theta0_to_every_gradient():
    state = build_train_state(cfg_with(["l2_init"], extra=["intervention.l2_init.coeff=0.05"]), torch.device("cpu"))
    theta0 = snapshot(state.agent.online)  # as built
    prefill(state, 64)
    learn(state, 3)
    agent = state.agent
    added = penalty_gradients(agent, state.replay.sample(16, state.replay_generator))
    for name, p in agent.online.named_parameters():
        expected = 2 * 0.05 * (p.detach() - theta0[name])
        assert expected.abs().max() > 0  # the parameters moved: the term is not trivially zero
        torch.testing.assert_close(added[name], expected, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------- NaP


def one_step_from_the_same_state(ours, twin) -> None:
    """``twin`` takes ``ours``' parameters, optimizer state and next batch, then both learn one step
    (the oracle of an after-step hook: the same step without it)."""
    with torch.no_grad():
        for p, q in zip(twin.agent.online.parameters(), ours.agent.online.parameters()):
            p.copy_(q)
    twin.agent.optimizer.load_state_dict(copy.deepcopy(ours.agent.optimizer.state_dict()))  # no shared moments
    twin.replay_generator.set_state(ours.replay_generator.get_state())  # the same next batch
    learn(ours, 1)
    learn(twin, 1)


@pytest.mark.parametrize("project_output", [False, True])
def test_nap_projects_each_body_weight_to_its_initial_norm_and_nothing_else(project_output):
    """One step from the same state with and without the projection (the twin: layer_norm alone,
    the same network): projected weights are the twin's rescaled to their norm at build; every
    other parameter equals the twin's."""
    opt = [f"intervention.nap.project_output_layer={str(project_output).lower()}"]
    nap_state = build_train_state(cfg_with(["nap"], extra=opt), torch.device("cpu"))
    twin = build_train_state(cfg_with(["layer_norm"]), torch.device("cpu"))
    initial = snapshot(twin.agent.online)
    for s in (nap_state, twin):
        prefill(s, 64)
    for (_, p), (_, q) in zip(nap_state.agent.online.named_parameters(), twin.agent.online.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)  # same network as built
    for _ in range(2):  # the second step starts from a projected network: compare one step at a time
        one_step_from_the_same_state(nap_state, twin)
        projected = {"body.net.1.weight", "body.net.4.weight"} | ({"head.linear.weight"} if project_output else set())
        ours = dict(nap_state.agent.online.named_parameters())
        for name, q in twin.agent.online.named_parameters():
            if name in projected:
                expected = q * initial[name].norm() / q.norm()
                torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-7)
                torch.testing.assert_close(ours[name].norm(), initial[name].norm(), rtol=1e-5, atol=0)
                assert (q.norm() - initial[name].norm()).abs() > 1e-6  # the step changed the norm
            else:
                torch.testing.assert_close(ours[name], q, rtol=0, atol=0)


# --------------------------------------------------------------------------------- scheduled reset


def test_scheduled_reset_last_k_layers_fresh_rest_shrunk_optimizer_state_of_reset_params_reset():
    extra = [
        "intervention.scheduled_reset.every_steps=4",
        "intervention.scheduled_reset.last_k_layers=2",
        "intervention.scheduled_reset.shrink=0.5",
        "intervention.scheduled_reset.perturb=0.3",
    ]
    state = agent_with(["scheduled_reset"], extra=extra, steps=3)
    agent, sr = state.agent, state.agent.interventions[0]
    assert sr.resets == 0 and sr.last_fresh_seed is None
    moments = {n: agent.optimizer.state[p]["exp_avg"].clone() for n, p in agent.online.named_parameters()}
    target = snapshot(agent.target)
    real_after_step = type(sr).after_step
    before: dict = {}

    def spy(self, networks, step):  # the parameters right after step 4's optimizer step
        before.update(snapshot(networks.online))
        real_after_step(self, networks, step)

    type(sr).after_step = spy
    try:
        learn(state, 1)  # step 4
    finally:
        type(sr).after_step = real_after_step
    assert sr.resets == 1
    fresh = dict(rebuild_fresh(state, sr.last_fresh_seed).named_parameters())
    reset = {"body.net.3.weight", "body.net.3.bias", "head.linear.weight", "head.linear.bias"}
    for name, p in agent.online.named_parameters():
        if name in reset:
            torch.testing.assert_close(p, fresh[name], rtol=0, atol=0)
            assert p not in agent.optimizer.state  # reset
        else:
            torch.testing.assert_close(p, 0.5 * before[name] + 0.3 * fresh[name], rtol=1e-6, atol=1e-7)
            assert p in agent.optimizer.state and not torch.equal(agent.optimizer.state[p]["exp_avg"], moments[name])
    for name, p in agent.target.named_parameters():  # decoupled from target updates: untouched
        torch.testing.assert_close(p, target[name], rtol=0, atol=0)
    learn(state, 3)
    assert sr.resets == 1  # next at step 8
    learn(state, 1)
    assert sr.resets == 2


def test_scheduled_reset_of_the_whole_network():
    state = agent_with(["scheduled_reset"], extra=["intervention.scheduled_reset.every_steps=3"], steps=3)
    agent, sr = state.agent, state.agent.interventions[0]
    fresh = dict(rebuild_fresh(state, sr.last_fresh_seed).named_parameters())
    for name, p in agent.online.named_parameters():
        torch.testing.assert_close(p, fresh[name], rtol=0, atol=0)
    assert len(agent.optimizer.state) == 0


# ---------------------------------------------------------------------------- soft shrink-perturb


def test_soft_shrink_perturb_every_step_against_an_untouched_twin():
    extra = ["intervention.soft_shrink_perturb.shrink=0.1", "intervention.soft_shrink_perturb.perturb=0.2"]
    a = build_train_state(cfg_with(["soft_shrink_perturb"], extra=extra), torch.device("cpu"))
    b = build_train_state(cfg_with([]), torch.device("cpu"))
    for s in (a, b):
        prefill(s, 64)
    for _ in range(2):
        one_step_from_the_same_state(a, b)
        ssp = a.agent.interventions[0]
        fresh = dict(rebuild_fresh(a, ssp.last_fresh_seed).named_parameters())
        for (name, p), (_, q) in zip(a.agent.online.named_parameters(), b.agent.online.named_parameters()):
            torch.testing.assert_close(p, 0.9 * q + 0.2 * fresh[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["scheduled_reset", "soft_shrink_perturb"])
def test_resets_refuse_plasticity_injection_naming_both(name, tmp_path):
    with pytest.raises(ConfigError) as info:
        train(cfg_with([name, "plasticity_injection"]), tmp_path / "run")
    assert name in str(info.value) and "plasticity_injection" in str(info.value)
