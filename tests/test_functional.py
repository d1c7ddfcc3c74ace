"""The pure training step (``functional.py``) against the oracle, the agent's own step: K steps of
``FunctionalLoss`` + a functional optimizer equal K steps of ``DQNAgent.learn`` with the real torch
optimizer (float64: within 1e-12 relative; float32: the bound stated below), for every optimizer
and the main bodies; a ``vmap`` over stacked members equals separate calls; the step compiles
with ``fullgraph=True``; the conversions keep the torch optimizer's state layout."""

from __future__ import annotations

import copy

import pytest
import torch

from plasticity_runner import functional as F
from plasticity_runner import interventions as interventions_lib
from plasticity_runner.agents.dqn import DQNAgent
from plasticity_runner.envs.base import Batch
from plasticity_runner.nets import build_network
from plasticity_runner.optim import build_optimizer, reset_state_entries

from .conftest import make_cfg

OBS = {"mlp": (1, 6, 6), "cnn": (2, 6, 6), "minatar_cnn": (3, 6, 6)}
BODY = {
    "mlp": ["architecture=mlp", "architecture.width=8"],
    "cnn": ["architecture=cnn", "architecture.channels=3", "architecture.hidden=8"],
    "minatar_cnn": ["architecture=minatar_cnn", "architecture.channels=3", "architecture.hidden=8"],
}
OPTIMIZERS = {
    "adam": ["optimizer=adam"],
    "adam_eps_root": ["optimizer=adam_tuned"],
    "adamw": ["optimizer=adamw", "optimizer.weight_decay=0.1"],
    "rmsprop": ["optimizer=rmsprop", "optimizer.lr=1e-3"],
    "rmsprop_torch_form": [
        "optimizer=rmsprop",
        "optimizer.lr=1e-3",
        "optimizer.centered=false",
        "optimizer.eps_outside_root=true",
    ],
    "sgd": ["optimizer=sgd", "optimizer.lr=0.05"],
    "sgd_momentum": ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"],
}
PENALTIES = [
    "intervention=[weight_decay,l2_init,parseval]",
    "intervention.weight_decay.coeff=0.01",
    "intervention.l2_init.coeff=0.1",
    "intervention.parseval.coeff=0.01",
]
NUM_ACTIONS, BATCH, K = 4, 8, 4


def make_agent(overrides: list[str], dtype=torch.float64, seed: int = 0) -> DQNAgent:
    cfg = make_cfg(["device=cpu", *overrides], tiny=False)
    interventions = interventions_lib.build_interventions(cfg.intervention)
    options = interventions_lib.network_options(interventions)
    torch.manual_seed(seed)
    obs = OBS[cfg.architecture.name]
    online = build_network(cfg.architecture, obs, NUM_ACTIONS, returns=(0.0, 10.0), **options).to(dtype)
    target = copy.deepcopy(online)
    optimizer = build_optimizer(cfg.optimizer, online.parameters())
    agent = DQNAgent(cfg.agent, online, target, optimizer, interventions, NUM_ACTIONS, seed=seed)
    agent.obs_shape = obs
    return agent


def batches(obs_shape, n: int, dtype=torch.float64, seed: int = 1) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(
            Batch(
                o_tm1=torch.rand(BATCH, *obs_shape, generator=g, dtype=dtype),
                a_tm1=torch.randint(NUM_ACTIONS, (BATCH,), generator=g),
                r_t=torch.rand(BATCH, generator=g, dtype=dtype),
                discount_t=(torch.rand(BATCH, generator=g) < 0.9).to(dtype),
                o_t=torch.rand(BATCH, *obs_shape, generator=g, dtype=dtype),
            )
        )
    return out


def functional_steps(agent: DQNAgent, data: list[Batch]) -> tuple[dict, dict, list[torch.Tensor]]:
    """K pure steps from the agent's current state (its tensors untouched): params, opt state, terms."""
    loss, fopt = F.FunctionalLoss(agent), F.functional_optimizer(agent.optimizer)
    trained, fixed = F.split_online(agent.online, agent.optimizer)
    params = {k: v.detach().clone() for k, v in trained.items()}
    state = F.optimizer_state(agent.optimizer, fopt, trained)
    state = {s: {k: v.clone() for k, v in d.items()} for s, d in state.items()}
    target = F.network_tensors(agent.target)
    terms = []
    for batch in data:
        grads, t = loss.grads_and_terms(params, fixed, target, batch)
        params, state = fopt.update(params, grads, state)
        terms.append(t)
    return params, state, terms


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same_as_learn(agent: DQNAgent, data: list[Batch], rtol: float) -> None:
    params, state, terms = functional_steps(agent, data)
    fopt = F.functional_optimizer(agent.optimizer)
    for step, batch in enumerate(data, 1):
        eager_terms = agent.learn(batch, step)
        assert rel(terms[step - 1], eager_terms) <= rtol, (step, terms[step - 1], eager_terms)
    trained, _ = F.split_online(agent.online, agent.optimizer)
    for k, p in trained.items():
        assert rel(params[k], p.detach()) <= rtol, k
        st = agent.optimizer.state[p]
        for s in fopt.slots:
            assert rel(state[s][k], st[s]) <= rtol, (k, s)


@pytest.mark.parametrize("body", list(BODY))
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_k_functional_steps_equal_k_learn_steps_float64(body, opt):
    agent = make_agent(BODY[body] + OPTIMIZERS[opt] + (PENALTIES if body == "mlp" else []))
    assert_same_as_learn(agent, batches(agent.obs_shape, K), rtol=1e-12)


@pytest.mark.parametrize("agent_kind", ["agent=dqn", "agent=double_dqn", "agent=dqn_zoo_double_q"])
def test_agents_and_their_td_losses_float64(agent_kind):
    agent = make_agent(BODY["mlp"] + [agent_kind])
    assert_same_as_learn(agent, batches(agent.obs_shape, K), rtol=1e-12)


def test_float32_agreement():
    """float32: the functional update reorders a few roundings (bias corrections in float64, then
    cast; torch's fused Adam kernel divides differently): after K steps the parameters agree within
    1e-5 relative (measured: about 1e-7)."""
    agent = make_agent(BODY["mlp"] + OPTIMIZERS["adam"] + PENALTIES, dtype=torch.float32)
    assert_same_as_learn(agent, batches(agent.obs_shape, K, dtype=torch.float32), rtol=1e-5)


def test_per_element_step_counts_adam():
    """An Adam state with ``unit_step`` (restarted bias correction of single units) steps elementwise."""
    agent = make_agent(BODY["mlp"] + OPTIMIZERS["adam_eps_root"])
    data = batches(agent.obs_shape, 2 * K)
    for step, batch in enumerate(data[:K], 1):
        agent.learn(batch, step)
    p = next(p for p in agent.online.parameters() if p.dim() == 2)  # the first layer's weight
    reset_state_entries(agent.optimizer, p, torch.tensor([0, 2]), 0, restart_steps=True)
    assert "unit_step" in agent.optimizer.state[p]
    assert_same_as_learn(agent, data[K:], rtol=1e-12)
    assert torch.equal(agent.optimizer.state[p]["unit_step"][0], torch.full_like(p[0], K))


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_written_back_state_has_the_torch_layout_and_values(opt):
    """``write_optimizer_state`` after K pure steps leaves the torch optimizer's ``state_dict`` as K
    of its own steps do: the same keys, host counts and tensors (float64, 1e-12)."""
    eager, pure = make_agent(BODY["mlp"] + OPTIMIZERS[opt]), make_agent(BODY["mlp"] + OPTIMIZERS[opt])
    data = batches(eager.obs_shape, K)
    for step, batch in enumerate(data, 1):
        eager.learn(batch, step)
    loss, fopt = F.FunctionalLoss(pure), F.functional_optimizer(pure.optimizer)
    target = F.network_tensors(pure.target)
    for batch in data:
        trained, fixed = F.split_online(pure.online, pure.optimizer)
        state = F.optimizer_state(pure.optimizer, fopt, trained)
        grads, _ = loss.grads_and_terms({k: v.detach() for k, v in trained.items()}, fixed, target, batch)
        params, state = fopt.update({k: v.detach() for k, v in trained.items()}, grads, state)
        F.write_params(trained, params)
        F.write_optimizer_state(pure.optimizer, fopt, trained, state)
    a, b = eager.optimizer.state_dict()["state"], pure.optimizer.state_dict()["state"]
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys(), (a[i].keys(), b[i].keys())
        for key, value in a[i].items():
            if torch.is_tensor(value):
                assert rel(b[i][key], value) <= 1e-12 if value.abs().max() > 0 else torch.equal(b[i][key], value)
            else:
                assert b[i][key] == value, key
    for p, q in zip(eager.online.parameters(), pure.online.parameters()):
        assert rel(q.detach(), p.detach()) <= 1e-12


def stacked(agents: list[DQNAgent]):
    fopt = F.functional_optimizer(agents[0].optimizer)
    parts = []
    for a in agents:
        trained, fixed = F.split_online(a.online, a.optimizer)
        parts.append(
            (
                {k: v.detach() for k, v in trained.items()},
                {k: v.detach() for k, v in fixed.items()},
                {k: v.detach() for k, v in F.network_tensors(a.target).items()},
                fopt.init(trained),
            )
        )
    return fopt, parts, torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *parts)


def test_vmap_over_members_equals_separate_calls():
    """Three members (different initialisations and batches) stacked on a leading dimension: the
    vmapped step equals each member's own call (float64, 1e-12)."""
    agents = [make_agent(BODY["mlp"] + OPTIMIZERS["adam"] + PENALTIES, seed=s) for s in range(3)]
    loss = F.FunctionalLoss(agents[0])
    fopt, parts, (params, fixed, target, state) = stacked(agents)
    data = [F.batch_dict(batches(agents[0].obs_shape, 1, seed=10 + m)[0]) for m in range(3)]
    batch = torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *data)

    def step(params, fixed, target, state, batch):
        grads, terms = loss.grads_and_terms(params, fixed, target, batch)
        params, state = fopt.update(params, grads, state)
        return params, state, terms

    out = torch.func.vmap(step)(params, fixed, target, state, batch)
    for m in range(3):
        one = step(*parts[m], data[m])
        for mine, theirs in zip(torch.utils._pytree.tree_leaves(one), torch.utils._pytree.tree_leaves(out)):
            assert rel(theirs[m], mine) <= 1e-12


def test_the_step_compiles_with_fullgraph_alone_and_vmapped():
    """``torch.compile(fullgraph=True)`` of the step (loss, gradients, Adam), and of its vmap over
    members; both equal the eager step (float32, 1e-5)."""
    torch._dynamo.reset()
    agents = [make_agent(BODY["mlp"] + OPTIMIZERS["adamw"] + PENALTIES, dtype=torch.float32, seed=s) for s in (0, 1)]
    loss = F.FunctionalLoss(agents[0])
    fopt, parts, stack = stacked(agents)
    data = [F.batch_dict(batches(agents[0].obs_shape, 1, dtype=torch.float32, seed=10 + m)[0]) for m in (0, 1)]
    batch = torch.utils._pytree.tree_map(lambda *xs: torch.stack(xs), *data)

    def step(params, fixed, target, state, batch):
        grads, terms = loss.grads_and_terms(params, fixed, target, batch)
        params, state = fopt.update(params, grads, state)
        return params, state, terms

    eager = step(*parts[0], data[0])
    compiled = torch.compile(step, fullgraph=True)(*parts[0], data[0])
    for a, b in zip(torch.utils._pytree.tree_leaves(compiled), torch.utils._pytree.tree_leaves(eager)):
        assert rel(a, b) <= 1e-5
    vmapped = torch.compile(torch.func.vmap(step), fullgraph=True)(*stack, batch)
    for a, b in zip(torch.utils._pytree.tree_leaves(vmapped), torch.utils._pytree.tree_leaves(eager)):
        assert rel(a[0], b) <= 1e-5


def test_interventions_declare_what_a_pure_step_cannot_run():
    """Exactly the interventions whose in-step hooks read other per-run tensors or take a second
    pass declare a reason; every other one runs its in-step hooks through the learner."""
    declared = {name: cls.functional_unsupported for name, cls in interventions_lib.REGISTRY.items()}
    refused = {name for name, why in declared.items() if why}
    assert refused == {"sam", "c_chain"}
    assert all(isinstance(declared[n], str) and len(declared[n]) > 20 for n in refused)


@pytest.mark.parametrize("name", [n for n, c in interventions_lib.REGISTRY.items() if not c.functional_unsupported])
def test_every_supported_intervention_gives_the_eager_loss_and_gradients(name):
    """The loss parts and gradients of ``FunctionalLoss`` equal the agent's eager ones (float64,
    1e-12) with each supported intervention active (its network options and penalty)."""
    agent = make_agent(BODY["mlp"] + [f"intervention=[{name}]"])
    batch = batches(agent.obs_shape, 1)[0]
    trained, fixed = F.split_online(agent.online, agent.optimizer)
    buffers = dict(agent.online.named_buffers())
    fixed = {k: v.clone() if k in buffers else v for k, v in fixed.items()}  # the eager step moves the real ones
    grads, terms = F.FunctionalLoss(agent).grads_and_terms(
        {k: v.detach() for k, v in trained.items()}, fixed, F.network_tensors(agent.target), batch
    )
    eager = agent.loss_terms(batch)
    eager[-1].backward()
    assert rel(terms, eager.detach()) <= 1e-12
    for k, b in buffers.items():  # a train-mode forward's buffer updates (spectral norm's u) as eager's
        assert rel(fixed[k], b) <= 1e-12, k
    for k, p in trained.items():
        assert rel(grads[k], p.grad) <= 1e-12 if p.grad.abs().max() > 0 else torch.equal(grads[k], p.grad)


def test_the_train_mode_switch_compiles_and_moves_the_buffers_as_eager():
    """With spectral norm (train mode: its power iteration updates ``u``; eval mode: it does not),
    the compiled step reproduces ``loss_terms``'s switch: the terms and the updated buffer equal
    the eager agent's (float32, 1e-5)."""
    torch._dynamo.reset()
    agent = make_agent(BODY["mlp"] + ["intervention=[spectral_norm]", "agent=double_dqn"], dtype=torch.float32)
    batch = batches(agent.obs_shape, 1, dtype=torch.float32)[0]
    loss = F.FunctionalLoss(agent)
    trained, fixed = F.split_online(agent.online, agent.optimizer)
    buffers = dict(agent.online.named_buffers())
    assert buffers
    fixed = {k: v.clone() if k in buffers else v for k, v in fixed.items()}
    before = {k: b.clone() for k, b in buffers.items()}
    step = torch.compile(loss.grads_and_terms, fullgraph=True)
    _, terms = step({k: v.detach() for k, v in trained.items()}, fixed, F.network_tensors(agent.target), batch)
    eager = agent.loss_terms(batch)
    assert rel(terms, eager.detach()) <= 1e-5
    for k, b in buffers.items():
        assert rel(b, before[k]) > 1e-3  # the train-mode forward moved it (eval mode would not)
        assert rel(fixed[k], b) <= 1e-5, k
    assert not agent.online.training  # the switch back to eval mode happened
