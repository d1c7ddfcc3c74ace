"""Interventions (section 6.2 and three from the peers): each against an oracle that would fail if
it did nothing (a fresh init rebuilt from the recorded seed, lambda * theta + sigma * theta_fresh
computed by hand, numpy SVD, a hand-written L2 gradient), the optimizer following the live
parameters with its state reset where promised, and composition / incompatibility at start."""

from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch import nn

from plasticity_runner import interventions as interventions_lib
from plasticity_runner import registry
from plasticity_runner.config import ConfigError, InterventionsConfig
from plasticity_runner.interventions import REGISTRY
from plasticity_runner.nets.heads import InjectedHead, TwoHotHead
from plasticity_runner.nets.layers import CReLU, first_layer, raw_weight
from plasticity_runner.trainer import build_train_state, prefill, train

from .conftest import TINY, make_cfg

CPU = torch.device("cpu")
BASE = [o for o in TINY if not o.startswith("architecture.")] + ["torch_threads=1"]
# each body selected with the overrides a test run on it needs (its registered ``test_overrides``,
# nets/): a new body runs every intervention here without an edit
ARCH_OVERRIDES = {
    name: [f"architecture={name}", *part.spec.test_overrides] for name, part in registry.parts("architecture").items()
}


def cfg_with(names: list[str], arch: str = "mlp", extra: list[str] | None = None):
    selected = f"intervention=[{','.join(names) or 'none'}]"
    return make_cfg(BASE + ARCH_OVERRIDES[arch] + [selected] + (extra or []), tiny=False)


def agent_with(names: list[str], arch: str = "mlp", extra: list[str] | None = None, steps: int = 3, device=CPU):
    """A built run whose agent has taken ``steps`` optimizer steps (so the optimizer has state)."""
    state = build_train_state(cfg_with(names, arch, extra), device)
    prefill(state, 64)
    learn(state, steps)
    return state


def learn(state, n: int) -> None:
    for _ in range(n):
        batch = state.replay.sample(16, state.replay_generator)
        state.step += 1
        state.agent.learn(batch, state.step)


def rebuild_fresh(state, seed: int) -> nn.Module:
    """The oracle: the fresh initialisation an intervention drew, rebuilt from its recorded seed."""
    torch.manual_seed(seed)
    return state.build_fresh()


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def penalty_gradients(agent, batch) -> dict[str, torch.Tensor]:
    """What the active interventions' loss penalties add to each gradient on ``batch``: the
    gradient of the total loss minus the gradient of the TD term alone (``loss_terms``' first)."""

    def grads(index: int) -> dict[str, torch.Tensor]:
        agent.online.zero_grad(set_to_none=True)
        agent.loss_terms(batch)[index].backward()
        return {n: p.grad.clone() for n, p in agent.online.named_parameters()}

    with_penalty, without = grads(-1), grads(0)
    return {n: with_penalty[n] - without[n] for n in with_penalty}


def optimizer_params(optimizer) -> set[int]:
    return {id(p) for g in optimizer.param_groups for p in g["params"]}


def assert_optimizer_tracks_live_parameters(agent) -> None:
    trainable = [p for p in agent.online.parameters() if p.requires_grad]
    assert optimizer_params(agent.optimizer) == {id(p) for p in trainable}
    assert all(id(p) in {id(q) for q in trainable} for p in agent.optimizer.state)


# ------------------------------------------------------------------------------- configuration


def test_registry_order_is_the_config_field_order_and_every_option_has_a_yaml():
    fields = [f.name for f in dataclasses.fields(InterventionsConfig)]
    assert list(REGISTRY) == fields
    for name in REGISTRY:
        cfg = make_cfg([f"intervention=[{name}]"])
        assert cfg.intervention[name] is not None
        assert [i.name for i in interventions_lib.build_interventions(cfg.intervention)] == [name]


# the order of application before the interventions registered themselves (oracle: a new
# intervention may sit anywhere, but these keep their relative order)
ORDER_BEFORE_REGISTRATION = [
    "crelu",
    "layer_norm",
    "spectral_norm",
    "two_hot",
    "weight_decay",
    "l2_init",
    "shrink_perturb",
    "reset_last_layer",
    "redo",
    "continual_backprop",
    "scheduled_reset",
    "soft_shrink_perturb",
    "plasticity_injection",
    "nap",
    "reset_optimizer",
]


def test_the_registered_order_keeps_the_order_of_application():
    assert [n for n in REGISTRY if n in ORDER_BEFORE_REGISTRATION] == ORDER_BEFORE_REGISTRATION
    parts = registry.parts("intervention")
    assert list(parts) == list(REGISTRY)
    assert all(REGISTRY[n] is parts[n].build for n in REGISTRY)
    for f in dataclasses.fields(InterventionsConfig):  # the config schema is each registration's
        assert f.type == Optional[parts[f.name].schema] and f.default is None  # noqa: UP045


@pytest.mark.parametrize(
    "name,override",
    [
        ("spectral_norm", "n_power_iterations=0"),
        ("spectral_norm", "eps=0"),
        ("spectral_norm", "layer=last"),
        ("two_hot", "num_bins=1"),
        ("two_hot", "margin=-1"),
        ("weight_decay", "coeff=-1"),
        ("l2_init", "coeff=-1"),
        ("shrink_perturb", "shrink=-1"),
        ("shrink_perturb", "perturb=-1"),
        ("redo", "tau=-1"),
        ("redo", "every_steps=0"),
        ("continual_backprop", "replacement_rate=2"),
        ("continual_backprop", "decay_rate=1.0"),
        ("continual_backprop", "maturity_threshold=-1"),
        ("scheduled_reset", "every_steps=0"),
        ("scheduled_reset", "last_k_layers=0"),
        ("scheduled_reset", "shrink=-1"),
        ("scheduled_reset", "perturb=-1"),
        ("soft_shrink_perturb", "shrink=1.5"),
        ("soft_shrink_perturb", "perturb=-1"),
        ("plasticity_injection", "at_step=0"),
    ],
)
def test_each_registered_range_check_names_its_key(name, override):
    """The range checks moved from ``config`` into each module's ``check``: a value out of range
    is a ``ConfigError`` naming the full key; the default passes."""
    from plasticity_runner.config import validate

    validate(make_cfg([f"intervention=[{name}]"]))
    with pytest.raises(ConfigError) as info:
        validate(make_cfg([f"intervention=[{name}]", f"intervention.{name}.{override}"]))
    assert info.value.key == f"intervention.{name}.{override.split('=')[0]}"


def test_a_registration_that_breaks_the_hook_contract_fails_at_import(monkeypatch):
    """A class whose name differs from its registration, an unknown phase, or a phase whose hook
    the class does not implement: a ValueError naming the intervention, not a silent skip."""
    from plasticity_runner.interventions.crelu import CReLU, CReLUConfig

    parts = registry._PARTS["intervention"]
    for bogus, message in [
        (
            registry.Part("intervention", "bogus", CReLUConfig, CReLU, spec=registry.InterventionSpec(phase="build")),
            "name 'bogus'",
        ),
        (
            registry.Part("intervention", "crelu", CReLUConfig, CReLU, spec=registry.InterventionSpec(phase="later")),
            "phase='later'",
        ),
        (
            registry.Part("intervention", "crelu", CReLUConfig, CReLU, spec=registry.InterventionSpec(phase="loss")),
            "loss_penalty",
        ),
    ]:
        monkeypatch.setitem(parts, bogus.name, bogus)
        with pytest.raises(ValueError, match=message):
            interventions_lib._registered()
        monkeypatch.undo()


def test_the_intervention_modules_import_neither_config_nor_the_agent():
    """``config`` builds its schema from the intervention registrations, so importing them must not
    import ``config`` back (no cycle); the hooks see a ``Networks``, never ``agents``."""
    import ast
    import pathlib
    import subprocess
    import sys

    code = (
        "import sys, plasticity_runner.interventions; "
        "bad = [m for m in sys.modules if m.startswith(('plasticity_runner.config', 'plasticity_runner.agents'))]; "
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for path in pathlib.Path(interventions_lib.__file__).parent.glob("*.py"):  # not even under TYPE_CHECKING
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "agents" not in (node.module or "").split("."), (path.name, node.module)


def test_interventions_compose_from_the_cli_in_registry_order():
    cfg = make_cfg(["intervention=[two_hot,layer_norm]"])
    active = interventions_lib.build_interventions(cfg.intervention)
    assert [i.name for i in active] == ["layer_norm", "two_hot"]
    assert interventions_lib.network_options(active) == {
        "layer_norm": True,
        "head": "two_hot",
        "head_options": {"v_min": None, "v_max": None, "margin": 0.1, "num_bins": 201},
    }
    assert interventions_lib.build_interventions(make_cfg([]).intervention) == []


@pytest.mark.parametrize("override", ["intervention.layer_norm.foo=1", "intervention.shrink_perturb.lambda=1"])
def test_unknown_intervention_keys_fail_at_composition(override):
    name = override.split(".")[1]
    with pytest.raises(ConfigCompositionException):
        make_cfg([f"intervention=[{name}]", override])


@pytest.mark.parametrize(
    "pair",
    [
        ("plasticity_injection", "reset_last_layer"),
        ("shrink_perturb", "plasticity_injection"),
        ("crelu", "fourier"),
        ("two_hot", "hl_gauss"),
        ("hare_tortoise", "plasticity_injection"),
        ("c_chain", "plasticity_injection"),
    ],
)
def test_incompatible_pairs_fail_at_start_naming_both(pair, tmp_path):
    cfg = cfg_with(list(pair))
    with pytest.raises(ConfigError, match=f"{pair[0]}|{pair[1]}") as info:
        train(cfg, tmp_path / "run")
    assert pair[0] in str(info.value) and pair[1] in str(info.value)
    assert not (tmp_path / "run" / "metrics").exists()  # nothing was written: it failed at start


def test_out_of_range_intervention_options_are_config_errors(tmp_path):
    for overrides in (
        ["intervention=[two_hot]", "intervention.two_hot.v_min=0", "intervention.two_hot.v_max=-200"],
        ["intervention=[two_hot]", "intervention.two_hot.margin=-0.5"],
        ["intervention=[redo]", "intervention.redo.every_steps=0"],
    ):
        with pytest.raises(ConfigError):
            train(make_cfg(overrides), tmp_path / "run")


# ---------------------------------------------------------------------- the seven of section 6.2


def test_reset_last_layer_restores_a_fresh_head_and_resets_only_its_optimizer_state():
    state = agent_with(["reset_last_layer"])
    agent = state.agent
    head_before = snapshot(agent.online.head)
    body_before = snapshot(agent.online.body)
    body_state = {id(p): agent.optimizer.state[p]["exp_avg"].clone() for p in agent.online.body.parameters()}
    agent.update_target(state.step)
    fresh = rebuild_fresh(state, agent.interventions[0].last_fresh_seed)
    for name, p in agent.online.head.named_parameters():
        torch.testing.assert_close(p, dict(fresh.head.named_parameters())[name], rtol=0, atol=0)
        assert not torch.equal(p, head_before[name])
        assert p not in agent.optimizer.state  # its state was reset
    for name, p in agent.online.body.named_parameters():
        torch.testing.assert_close(p, body_before[name], rtol=0, atol=0)
        torch.testing.assert_close(agent.optimizer.state[p]["exp_avg"], body_state[id(p)])  # kept
    # the target keeps the trained head until the next update
    for name, p in agent.target.head.named_parameters():
        torch.testing.assert_close(p, head_before[name])
    # the optimizer trains the live (reset) head
    assert_optimizer_tracks_live_parameters(agent)
    reset_head = snapshot(agent.online.head)
    learn(state, 1)
    assert all(not torch.equal(p, reset_head[n]) for n, p in agent.online.head.named_parameters())
    assert agent.optimizer.state[agent.online.head.linear.weight]["step"] == 1


def test_fresh_initialisations_leave_the_training_rng_untouched(device):
    state = agent_with(["reset_last_layer"], device=device)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    seed = state.agent.interventions[0].last_fresh_seed if state.agent.interventions else None
    state.agent.update_target(state.step)
    assert torch.equal(torch.get_rng_state(), rng)
    if cuda_rng is not None:  # fork_rng forked the run's device, not only the CPU
        assert torch.equal(torch.cuda.get_rng_state(device), cuda_rng)
    head = state.agent.online.head
    assert all(p.device.type == device.type for p in head.parameters())
    assert state.agent.interventions[0].last_fresh_seed not in (None, seed)


@pytest.mark.parametrize("shrink,perturb", [(0.4, 0.1), (0.8, 0.2)])
def test_shrink_perturb_sets_lambda_theta_plus_sigma_fresh_and_keeps_optimizer_state(shrink, perturb):
    state = agent_with(
        ["shrink_perturb"],
        extra=[f"intervention.shrink_perturb.shrink={shrink}", f"intervention.shrink_perturb.perturb={perturb}"],
    )
    agent = state.agent
    before = snapshot(agent.online)
    moments = {n: agent.optimizer.state[p]["exp_avg"].clone() for n, p in agent.online.named_parameters()}
    agent.update_target(state.step)
    fresh = dict(rebuild_fresh(state, agent.interventions[0].last_fresh_seed).named_parameters())
    for name, p in agent.online.named_parameters():
        expected = shrink * before[name] + perturb * fresh[name]
        torch.testing.assert_close(p, expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(agent.optimizer.state[p]["exp_avg"], moments[name])  # state kept
        torch.testing.assert_close(dict(agent.target.named_parameters())[name], before[name])  # target: pre-update copy
    assert_optimizer_tracks_live_parameters(agent)


def test_layer_norm_and_two_hot_change_the_network_they_build():
    two_hot = ["intervention.two_hot.num_bins=11", "intervention.two_hot.v_min=-1", "intervention.two_hot.v_max=4"]
    state = agent_with(["layer_norm", "two_hot"], extra=two_hot)
    net = state.agent.online
    assert sum(isinstance(m, nn.LayerNorm) for m in net.body.modules()) == 2
    assert isinstance(net.head, TwoHotHead)
    torch.testing.assert_close(net.head.support, torch.linspace(-1, 4, 11))
    assert net.head.linear.out_features == 10 * 11


def test_spectral_norm_keeps_the_first_layer_top_singular_value_at_most_one():
    state = agent_with(["spectral_norm"], steps=0)
    layer = first_layer(state.agent.online.body)
    with torch.no_grad():
        raw_weight(layer).mul_(20.0)  # without the normalisation the top singular value is far above 1
    assert np.linalg.svd(raw_weight(layer).detach().numpy(), compute_uv=False)[0] > 5
    learn(state, 25)  # one power-iteration step per training forward
    top = np.linalg.svd(layer.weight.detach().numpy(), compute_uv=False)[0]
    assert top <= 1 + 1e-3
    assert top > 0.99  # normalised, not merely shrunk
    # the trained tensor is the parametrisation's original, and the optimizer holds it
    assert id(raw_weight(layer)) in optimizer_params(state.agent.optimizer)


def test_weight_decay_adds_coeff_theta_to_every_gradient():
    state = agent_with(["weight_decay"], extra=["intervention.weight_decay.coeff=0.01"], steps=1)
    agent = state.agent
    added = penalty_gradients(agent, state.replay.sample(16, state.replay_generator))
    for name, p in agent.online.named_parameters():
        torch.testing.assert_close(added[name], 0.01 * p.detach(), rtol=1e-4, atol=1e-7)


def test_reset_optimizer_clears_all_state_and_nothing_else():
    state = agent_with(["reset_optimizer"])
    agent = state.agent
    before = snapshot(agent.online)
    assert len(agent.optimizer.state) > 0
    agent.update_target(state.step)
    assert len(agent.optimizer.state) == 0
    for name, p in agent.online.named_parameters():
        torch.testing.assert_close(p, before[name], rtol=0, atol=0)
    learn(state, 1)
    assert all(s["step"] == 1 for s in agent.optimizer.state.values())  # Adam's bias correction restarts


# ----------------------------------------------------------------------- the three from the peers


def test_crelu_builds_concatenated_relu_everywhere():
    state = agent_with(["crelu"])
    body = state.agent.online.body
    assert not any(isinstance(m, nn.ReLU) for m in body.modules())
    assert sum(isinstance(m, CReLU) for m in body.modules()) == 2
    assert state.agent.online.head.linear.in_features == 2 * 16


def _kill_units(layer: nn.Module, units: list[int], bias: float = -1.0) -> None:
    """Zero incoming weights and a bias: relu(-1) = 0 on every input; with bias 0 CReLU's both halves are 0."""
    with torch.no_grad():
        raw_weight(layer)[units] = 0.0
        layer.bias[units] = bias


@pytest.mark.parametrize("arch,activation", [("mlp", None), ("mlp", "crelu"), ("cnn", None)])
def test_redo_recycles_dormant_units_incoming_fresh_outgoing_zero_state_reset(arch, activation):
    names = ["redo"] + (["crelu"] if activation else [])
    state = agent_with(names, arch=arch, extra=["intervention.redo.tau=0.0"], steps=3)
    agent = state.agent
    redo = next(i for i in agent.interventions if i.name == "redo")
    g = agent.online.unit_groups()[1]  # the second hidden layer (CNN: the second conv, read through a flatten)
    layer, reader = g.incoming[0], g.outgoing[0]
    dead = [0, 2]
    with torch.no_grad():  # inputs >= 0, weights >= 0, biases 1: every other unit alive on every input
        for other in agent.online.unit_groups():
            raw_weight(other.incoming[0]).abs_()
            other.incoming[0].bias.fill_(1.0)
    _kill_units(layer, dead, bias=0.0 if activation else -1.0)
    obs = state.replay.sample(32, state.replay_generator).o_tm1
    before = snapshot(agent.online)
    names_of = {id(p): n for n, p in agent.online.named_parameters()}
    in_w, out_w = raw_weight(layer), raw_weight(reader)
    in_state = agent.optimizer.state[in_w]["exp_avg"].clone()
    out_state = agent.optimizer.state[out_w]["exp_avg"].clone()
    with torch.no_grad():
        q_before = agent.online(obs)
    n = redo.recycle(agent.networks, obs, state.step)
    expected = {other.name: (dead if other.name == g.name else []) for other in agent.online.unit_groups()}
    assert redo.last_recycled == expected
    assert n == len(dead)
    fresh = dict(rebuild_fresh(state, redo.last_fresh_seed).named_parameters())
    live = [u for u in range(g.num_units) if u not in dead]
    # incoming: the fresh rows for dormant units, untouched elsewhere
    for p in (in_w, layer.bias):
        name = names_of[id(p)]
        torch.testing.assert_close(p[dead], fresh[name][dead], rtol=0, atol=0)
        torch.testing.assert_close(p[live], before[name][live], rtol=0, atol=0)
    torch.testing.assert_close(agent.optimizer.state[in_w]["exp_avg"][dead], torch.zeros_like(in_state[dead]))
    torch.testing.assert_close(agent.optimizer.state[in_w]["exp_avg"][live], in_state[live])
    # outgoing: every column that reads a dormant unit is zero (both CReLU halves; all H*W positions)
    expand = 2 if activation else 1
    spatial = out_w.shape[1] // (expand * g.num_units)
    cols = torch.zeros(out_w.shape[1], dtype=torch.bool)
    for e in range(expand):
        for u in dead:
            start = (e * g.num_units + u) * spatial
            cols[start : start + spatial] = True
    assert torch.all(out_w[:, cols] == 0)
    torch.testing.assert_close(out_w[:, ~cols], before[names_of[id(out_w)]][:, ~cols], rtol=0, atol=0)
    assert torch.all(agent.optimizer.state[out_w]["exp_avg"][:, cols] == 0)
    torch.testing.assert_close(agent.optimizer.state[out_w]["exp_avg"][:, ~cols], out_state[:, ~cols])
    # the network's function is unchanged (the recycled units are read by zero weights)
    with torch.no_grad():
        torch.testing.assert_close(agent.online(obs), q_before, rtol=1e-5, atol=1e-6)
    assert_optimizer_tracks_live_parameters(agent)


def test_redo_runs_every_n_steps_from_the_training_loop():
    state = agent_with(["redo"], extra=["intervention.redo.every_steps=2", "intervention.redo.tau=0.0"], steps=0)
    redo = state.agent.interventions[0]
    _kill_units(state.agent.online.unit_groups()[0].incoming[0], [1])
    learn(state, 1)
    assert redo.last_dormant == {}
    learn(state, 1)
    assert redo.last_dormant["body.net.2"] >= 1 and 1 in redo.last_recycled["body.net.2"]


def test_plasticity_injection_keeps_the_function_freezes_the_old_head_and_trains_the_new():
    state = agent_with(["plasticity_injection"], extra=["intervention.plasticity_injection.at_step=4"], steps=3)
    agent = state.agent
    obs = state.replay.sample(32, state.replay_generator).o_tm1
    old_head = agent.online.head
    learn(state, 1)  # step 4: injection after the optimizer step
    old_params = snapshot(old_head)
    inj = agent.interventions[0]
    assert inj.injected_at == 4 and isinstance(agent.online.head, InjectedHead)
    assert agent.online.head.old is old_head and isinstance(agent.target.head, InjectedHead)
    with torch.no_grad():
        q_online, q_target = agent.online(obs), agent.target(obs)
        # oracle: the network with the pre-injection head
        plain = copy.deepcopy(agent.online)
        plain.head = copy.deepcopy(old_head)
        torch.testing.assert_close(q_online, plain(obs), rtol=1e-5, atol=1e-6)
    fresh_head = rebuild_fresh(state, inj.last_fresh_seed).head
    for name, p in fresh_head.named_parameters():
        torch.testing.assert_close(dict(agent.online.head.new.named_parameters())[name], p, rtol=0, atol=0)
        torch.testing.assert_close(dict(agent.online.head.new_frozen.named_parameters())[name], p, rtol=0, atol=0)
    # the optimizer: old head out (with its state), new head in, the rest kept
    assert_optimizer_tracks_live_parameters(agent)
    assert all(id(p) not in optimizer_params(agent.optimizer) for p in old_head.parameters())
    new_before = snapshot(agent.online.head.new)
    frozen_before = snapshot(agent.online.head.new_frozen)
    learn(state, 2)
    for name, p in agent.online.head.old.named_parameters():
        torch.testing.assert_close(p, old_params[name], rtol=0, atol=0)
    for name, p in agent.online.head.new_frozen.named_parameters():
        torch.testing.assert_close(p, frozen_before[name], rtol=0, atol=0)
    assert all(not torch.equal(p, new_before[n]) for n, p in agent.online.head.new.named_parameters())
    # the target network follows the new structure at the next update
    agent.update_target(state.step)
    assert list(agent.target.state_dict()) == list(agent.online.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(agent.target(obs), agent.online(obs))
    del q_target


# ------------------------------------------------------------------------------- composition


def test_order_of_application_shrink_perturb_then_reset_last_layer_then_reset_optimizer():
    state = agent_with(["reset_optimizer", "reset_last_layer", "shrink_perturb"])
    agent = state.agent
    assert [i.name for i in agent.interventions] == ["shrink_perturb", "reset_last_layer", "reset_optimizer"]
    before = snapshot(agent.online)
    agent.update_target(state.step)
    sp, rl = agent.interventions[0], agent.interventions[1]
    fresh_sp = dict(rebuild_fresh(state, sp.last_fresh_seed).named_parameters())
    fresh_rl = dict(rebuild_fresh(state, rl.last_fresh_seed).named_parameters())
    for name, p in agent.online.named_parameters():
        if name.startswith("head."):  # reset after shrink-perturb: exactly a fresh init
            torch.testing.assert_close(p, fresh_rl[name], rtol=0, atol=0)
        else:
            torch.testing.assert_close(p, 0.4 * before[name] + 0.1 * fresh_sp[name], rtol=1e-6, atol=1e-7)
    assert len(agent.optimizer.state) == 0


ARCHS = list(ARCH_OVERRIDES)
# per intervention, the overrides that make its hooks act within the first steps of a tiny run
# (its registration's ``test_overrides``: a new intervention brings its own)
EXTRA = {name: list(part.spec.test_overrides) for name, part in registry.parts("intervention").items()}
WITH_INJECTION = ["crelu", "two_hot", "redo", "plasticity_injection", "reset_optimizer"]


def compatible_sets(names: list[str]) -> list[list[str]]:
    """``names`` (registry order) packed greedily into sets that compose: each joins the first set
    that still builds with it (pairs refused at start, e.g. crelu / fourier or two_hot / hl_gauss,
    land in different sets), so every intervention runs composed with as many others as it can."""
    sets: list[list[str]] = []
    for name in names:
        for group in sets:
            try:
                interventions_lib.build_interventions(
                    make_cfg([f"intervention=[{','.join(group + [name])}]"]).intervention
                )
            except ConfigError:
                continue
            group.append(name)
            break
        else:
            sets.append([name])
    return sets


# every intervention but injection in compatible sets (injection excludes the resets that need one head)
ALL_BUT_INJECTION = compatible_sets([n for n in REGISTRY if n != "plasticity_injection"])


def run_with_probe(names: list[str], arch: str) -> None:
    """Build, learn (firing the step hooks), update the target, learn, then the vectorised probe."""
    from plasticity_runner.probes.plasticity import plasticity_probe

    extra = [o for n in names for o in EXTRA.get(n, [])]
    state = agent_with(names, arch=arch, extra=extra, steps=2)
    state.agent.update_target(state.step)
    learn(state, 1)
    assert_optimizer_tracks_live_parameters(state.agent)
    cfg = make_cfg(BASE)
    probe_cfg = cfg.probe
    probe_cfg.num_targets, probe_cfg.steps, probe_cfg.batch_size = 2, 2, 8
    inputs = state.replay.sample_obs(16, torch.Generator().manual_seed(0))
    before = copy.deepcopy(state.agent.online.state_dict())
    result = plasticity_probe(state.agent.online, state.build_fresh, cfg.optimizer, inputs, probe_cfg, seed=3)
    assert np.isfinite(result.scalars()["probe_loss"])
    for k, v in state.agent.online.state_dict().items():  # the probe wrote nothing (BN stats, SN vectors)
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    "names",
    [*ALL_BUT_INJECTION, WITH_INJECTION],
    ids=[f"all_but_injection_{i}" for i in range(len(ALL_BUT_INJECTION))] + ["with_injection"],
)
@pytest.mark.parametrize("arch", ARCHS)
def test_all_interventions_together_on_every_architecture_with_the_probe(arch, names):
    run_with_probe(names, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_intervention_alone_on_every_architecture_with_the_probe(arch, name):
    run_with_probe([name], arch)


def test_a_checkpoint_after_injection_restores_the_injected_structure():
    state = agent_with(["plasticity_injection"], extra=["intervention.plasticity_injection.at_step=2"], steps=3)
    ckpt = copy.deepcopy(state.state_dict())
    restored = build_train_state(
        cfg_with(["plasticity_injection"], extra=["intervention.plasticity_injection.at_step=2"]), CPU
    )
    restored.load_state_dict(ckpt)
    assert isinstance(restored.agent.online.head, InjectedHead) and isinstance(restored.agent.target.head, InjectedHead)
    for (n, p), (_, q) in zip(state.agent.online.named_parameters(), restored.agent.online.named_parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
        assert q.requires_grad == p.requires_grad, n
    assert_optimizer_tracks_live_parameters(restored.agent)
    learn(state, 1)
    learn(restored, 1)  # the same next step from the same state
    for (_, p), (_, q) in zip(state.agent.online.named_parameters(), restored.agent.online.named_parameters()):
        torch.testing.assert_close(q, p)


REDO_RUN = [
    "intervention=[redo]",
    "intervention.redo.every_steps=5",
    "intervention.redo.tau=0.5",
    "probe.enabled=false",
]


def test_redo_dormant_counts_are_train_metrics(tmp_path, monkeypatch):
    """``redo_dormant`` / ``redo_dormant_fraction`` / ``redo_recycled_total`` at each log point equal
    what the passes returned, counted independently by wrapping ``ReDo.recycle``."""
    from plasticity_runner.interventions.redo import ReDo
    from plasticity_runner.trainer import train

    from .test_trainer import values

    passes: list[tuple[int, int]] = []  # (step, units recycled)
    real = ReDo.recycle

    def counting(self, agent, obs, step):
        n = real(self, agent, obs, step)
        passes.append((step, n))
        return n

    monkeypatch.setattr(ReDo, "recycle", counting)
    cfg = make_cfg(REDO_RUN)
    train(cfg, tmp_path)
    train_metrics = values(tmp_path).query("phase == 'train'").pivot(index="step", columns="metric", values="value")
    units = int(cfg.architecture.width) * int(cfg.architecture.num_layers)
    assert [s for s, _ in passes] == list(range(5, int(cfg.total_steps) + 1, 5))
    assert sum(n for _, n in passes) > 0  # tau 0.5 finds dormant units in a tiny net
    for step, row in train_metrics.iterrows():
        done = [n for s, n in passes if s <= step]
        assert row["redo_recycled_total"] == sum(done)
        assert row["redo_dormant"] == done[-1]
        assert row["redo_dormant_fraction"] == pytest.approx(done[-1] / units)


def test_redo_metrics_survive_a_restart(tmp_path, monkeypatch):
    from plasticity_runner import trainer
    from plasticity_runner.trainer import train

    from .test_resume import Crash, crash_at
    from .test_trainer import values

    train(make_cfg(REDO_RUN), tmp_path / "straight")
    with monkeypatch.context() as m:
        crash_at(m, 23)
        with pytest.raises(Crash):
            train(make_cfg(REDO_RUN), tmp_path / "restarted")
    assert trainer.learn_step.__name__ == "learn_step"
    train(make_cfg(REDO_RUN), tmp_path / "restarted")
    a = values(tmp_path / "straight").query("phase == 'train'")
    b = values(tmp_path / "restarted").query("phase == 'train'")
    assert a.query("metric == 'redo_recycled_total'").value.iloc[-1] > 0
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
