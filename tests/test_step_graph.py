"""``speed.step_graph``: the whole training step as one compiled function (``step_graph.py``).

Oracles: the eager step (``trainer.learn_step``) run from the same build, step for step (the
random numbers come from the same generators in the same order, so the two agree to float32
rounding); the eager run's metrics within ``scripts/cuda_check.py``'s tolerances; an
uninterrupted step-graph run for a resumed one. The capture checks (no graph break, no recompile
as epsilon, the replay's position and its fill level change) use dynamo's own counters."""

from __future__ import annotations

import json

import pytest
import torch
from torch._dynamo.utils import counters

from plasticity_runner import step_graph as sg
from plasticity_runner.agents.dqn import epsilon_at
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.interventions import REGISTRY
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, train

from .conftest import TINY, make_cfg
from .test_cuda_check import load_script
from .test_interventions import EXTRA
from .test_trainer import values

CPU = torch.device("cpu")
SHORT = ["agent.learning_starts=40", "agent.replay_capacity=100", "agent.epsilon_decay_steps=12"]


def run_steps(cfg, graph: bool, steps: int, backend: str = "aot_eager"):
    """``steps`` training steps (the loop's learn step, then its hooks and target copy) from a
    fresh build; returns the state and each step's loss parts and reward."""
    from plasticity_runner.trainer import prefill

    state = build_train_state(cfg, CPU)
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    learn = sg.StepGraph(state, cfg.agent, CPU, backend=backend).learn_step if graph else learn_step
    out = []
    for _ in range(steps):
        loss, reward, _ = learn(state, agent_cfg, epsilon_at(state.step, agent_cfg, state.clock))
        finish_step(state, agent_cfg)
        out.append(torch.cat([loss, reward[None]]))
    return state, torch.stack(out)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def assert_same_run(cfg, steps: int = 6, rtol: float = 1e-5, backend: str = "aot_eager") -> None:
    """The step graph's steps equal the eager ones: losses, rewards, parameters, optimizer state,
    replay contents and position, env state, observation and the generators' states."""
    eager, le = run_steps(cfg, False, steps)
    graph, lg = run_steps(cfg, True, steps, backend)
    assert rel(lg, le) <= rtol
    for p, q in zip(eager.agent.online.parameters(), graph.agent.online.parameters()):
        assert rel(q.detach(), p.detach()) <= rtol
    for (name, b), c in zip(eager.agent.online.named_buffers(), graph.agent.online.buffers()):
        assert rel(c.double(), b.double()) <= rtol, name  # BatchNorm's statistics, spectral norm's u
    se, sg_ = eager.agent.optimizer.state_dict()["state"], graph.agent.optimizer.state_dict()["state"]
    assert se.keys() == sg_.keys()
    for i in se:
        assert se[i].keys() == sg_[i].keys()
        for k, v in se[i].items():
            if torch.is_tensor(v) and v.abs().max() > 0:
                assert rel(sg_[i][k], v) <= rtol, (i, k)
            elif not torch.is_tensor(v):
                assert sg_[i][k] == v, (i, k)
    assert (graph.replay.pos, graph.replay.size, graph.step) == (eager.replay.pos, eager.replay.size, eager.step)
    for k in ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t"):
        assert torch.equal(getattr(graph.replay, k), getattr(eager.replay, k)), k
    assert torch.equal(graph.obs, eager.obs)
    for a, b in zip(graph.env.state_dict().values(), eager.env.state_dict().values()):
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b
    for name in ("act_generator", "replay_generator"):
        assert torch.equal(getattr(graph, name).get_state(), getattr(eager, name).get_state())


ENVS = {"classification": [], "cartpole": ["env=cartpole"]}
OPTIMIZERS = ["optimizer=adam", "optimizer=rmsprop", "optimizer=sgd", "optimizer=adamw"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("agent", ["agent=dqn", "agent=double_dqn"])
@pytest.mark.parametrize("env", list(ENVS))
def test_the_step_captures_whole_for_every_env_agent_and_optimizer(env, agent, optimizer):
    """``fullgraph=True`` (a graph break raises), one graph, and the eager step's numbers."""
    torch._dynamo.reset()
    counters.clear()
    assert_same_run(make_cfg(SHORT + ENVS[env] + [agent, optimizer, "optimizer.lr=0.01"]))
    assert counters["stats"]["unique_graphs"] == 1


SUPPORTED = [name for name, cls in REGISTRY.items() if not cls.functional_unsupported]
REFUSED = [name for name, cls in REGISTRY.items() if cls.functional_unsupported]


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_intervention_without_an_in_step_host_decision_captures(name):
    """Each such intervention (with the options that make its hooks act within the first steps,
    ``test_interventions.EXTRA``): its penalty inside the graph, its hooks on the host between
    steps, the eager step's numbers."""
    torch._dynamo.reset()
    assert_same_run(make_cfg(SHORT + [f"intervention=[{name}]"] + EXTRA.get(name, [])), steps=8)


@pytest.mark.parametrize("name", REFUSED)
def test_interventions_deciding_inside_the_step_are_refused_at_start(name):
    cfg = make_cfg(["speed.step_graph=true", f"intervention=[{name}]"] + EXTRA.get(name, []))
    with pytest.raises(ConfigError, match=rf"speed.step_graph.*intervention {name} cannot run inside the step graph"):
        validate(cfg)


def test_replay_ratio_and_several_env_steps_per_step():
    """``update_every_env_steps=2`` (two env steps inside one graph) and ``replay_ratio=2`` (steps
    that only learn: a second graph without the env) both give the eager numbers."""
    torch._dynamo.reset()
    assert_same_run(make_cfg(SHORT + ["agent.update_every_env_steps=2"]))
    torch._dynamo.reset()
    counters.clear()
    assert_same_run(make_cfg(SHORT + ["agent.replay_ratio=2"]))
    assert counters["stats"]["unique_graphs"] == 2  # the step that acts, the step that only learns


def test_no_value_is_frozen_into_the_graph():
    """Over 70 steps epsilon decays to its end (12 steps), the replay's write position wraps
    (capacity 100, 40 prefilled, 1 write per step) and its fill level reaches the capacity: the
    compiled function (inductor, the run's own mode) is never recompiled after its first call,
    and every step equals the eager one."""
    from plasticity_runner.trainer import prefill

    torch._dynamo.reset()
    cfg = make_cfg(SHORT + ["agent.target_update_steps=7"])
    _, le = run_steps(cfg, False, 70)
    state = build_train_state(cfg, CPU)
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    step = sg.StepGraph(state, cfg.agent, CPU)  # inductor: the run's own compile
    counters.clear()
    out, seen = [], set()
    for i in range(70):
        eps = epsilon_at(state.step, agent_cfg, state.clock)
        seen.add((round(eps, 6), state.replay.pos, state.replay.size))
        with torch._dynamo.config.patch(error_on_recompile=i > 0):  # the first call compiles
            loss, reward, _ = step.learn_step(state, agent_cfg, eps)
        finish_step(state, agent_cfg)
        out.append(torch.cat([loss, reward[None]]))
    assert counters["stats"]["unique_graphs"] == 1
    assert len({e for e, _, _ in seen}) >= 12 and {p for _, p, _ in seen} >= {0, 99} and (100 in {s for *_, s in seen})
    assert rel(torch.stack(out), le) <= 1e-4


def test_a_short_run_matches_the_eager_run_within_cuda_checks_tolerances(tmp_path):
    """The real loop (pauses, probes, diagnostics, checkpoints) with ``speed.step_graph=true``
    (inductor, fullgraph): every metric the GPU check compares is within its tolerance of the
    eager run's, and ``run.json`` records the mode."""
    cuda_check = load_script()
    torch._dynamo.reset()
    train(make_cfg([]), tmp_path / "eager")
    train(make_cfg(["speed.step_graph=true"]), tmp_path / "graph")
    eager, graph = values(tmp_path / "eager"), values(tmp_path / "graph")
    for label, phase, metric, which, rtol in cuda_check.TOLERANCES:
        ref, got = cuda_check.pick(eager, phase, metric, which), cuda_check.pick(graph, phase, metric, which)
        assert abs(got - ref) <= rtol * abs(ref), label
    assert len(eager) == len(graph)
    fast = json.loads((tmp_path / "graph" / "run.json").read_text())["fast_path"]
    assert fast["step_graph"] == "torch.compile(fullgraph=True, mode=default) on cpu"


def test_a_resume_mid_run_equals_the_uninterrupted_step_graph_run(tmp_path, monkeypatch):
    """Crash after step 25 (checkpoint at 20), restart: the metrics of the uninterrupted run."""
    from .test_resume import Crash

    torch._dynamo.reset()
    cfg = ["speed.step_graph=true"]
    train(make_cfg(cfg), tmp_path / "whole")
    real = sg.StepGraph.learn_step

    def crashing(self, state, agent_cfg, epsilon):
        out = real(self, state, agent_cfg, epsilon)
        if state.step == 25:
            raise Crash(25)
        return out

    monkeypatch.setattr(sg.StepGraph, "learn_step", crashing)
    with pytest.raises(Crash):
        train(make_cfg(cfg), tmp_path / "resumed")
    monkeypatch.setattr(sg.StepGraph, "learn_step", real)
    train(make_cfg(cfg), tmp_path / "resumed")
    a, b = values(tmp_path / "whole"), values(tmp_path / "resumed")
    assert a.equals(b)


def test_envs_stepping_on_the_host_say_so_and_use_the_loss_only_path(tmp_path, caplog):
    from .test_minatar import MINATAR_TINY

    cfg = make_cfg(MINATAR_TINY + ["speed.step_graph=true", "total_steps=4", "probe.every_steps=4"], tiny=False)
    with caplog.at_level("INFO", logger="plasticity_runner"):
        train(cfg, tmp_path)
    fast = json.loads((tmp_path / "run.json").read_text())["fast_path"]
    assert fast["step_graph"] == "off (env=minatar steps on the host: the loss-only path, loss eager)"
    assert "speed.step_graph: env=minatar steps on the host" in caplog.text


@pytest.mark.slow  # about 20 s: three segments, three graphs
def test_a_chain_switching_tasks_and_permutations_gives_the_eager_numbers():
    """A classification chain (``env.schedule``): the switches happen on the host between steps;
    the graph reads the segment's labels, image order and permutation as inputs (a switch of task
    or of the number of permutations compiles once more), with several env copies."""
    from .test_chains import DIGITS_CHAIN

    torch._dynamo.reset()
    chain = DIGITS_CHAIN.replace("steps:15", "steps:4").replace("steps:10", "steps:4")
    cfg = make_cfg(SHORT + [chain, "env.num_envs=2", "agent.update_every_env_steps=2"])
    assert_same_run(cfg, steps=12, backend="eager")  # dynamo alone: the capture (three segments, three graphs)


NO_WIDTH = [o for o in TINY if not o.startswith("architecture.")] + ["agent.batch_size=8"]
ARCHITECTURES = {
    name: list(part.spec.test_overrides)
    for name, part in __import__("plasticity_runner.registry").registry.parts("architecture").items()
}


@pytest.mark.slow  # about 40 s for the six bodies
@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "mlp"])
def test_every_body_captures(arch):
    """Every registered body (tiny), on the classification MDP: ResNet-18's BatchNorm statistics
    move in the train-mode TD forward inside the graph as in the eager step; ViT without dropout
    (with dropout it is refused, below). float32 within 1e-4: BatchNorm's backward sums in
    another order under ``torch.func.grad``."""
    torch._dynamo.reset()
    extra = ["architecture.dropout=0"] if arch == "vit" else []
    # SGD: Adam turns the float32 noise of gradients that are zero in exact arithmetic (ViT's key
    # bias: softmax ignores a shift of the keys) into steps of size lr, whichever the summation order
    extra += ["optimizer=sgd", "optimizer.lr=0.01"]
    cfg = make_cfg(NO_WIDTH + SHORT + [f"architecture={arch}", *ARCHITECTURES[arch], *extra], tiny=False)
    assert_same_run(cfg, steps=3, rtol=1e-4, backend="eager")
    buffers = dict(build_train_state(cfg, CPU).agent.online.named_buffers())
    assert arch != "resnet18" or any("running_mean" in k for k in buffers)


def test_dropout_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"speed.step_graph.*architecture.dropout=0.1"):
        validate(make_cfg(NO_WIDTH + ["speed.step_graph=true", "architecture=vit", *ARCHITECTURES["vit"]], tiny=False))


@pytest.mark.parametrize(
    "overrides", [[], ["agent=double_dqn", "optimizer=adam_tuned", "intervention=[layer_norm,weight_decay]"]]
)
def test_the_step_graph_reads_nothing_back_to_the_host(monkeypatch, overrides):
    """On the classification MDP the step graph's steps (after the first, which compiles) make no
    device-to-host read: every way a tensor's value reaches Python is recorded while they run."""
    from plasticity_runner.trainer import prefill

    from .test_fastpath import record_host_reads

    torch._dynamo.reset()
    cfg = make_cfg(SHORT + overrides)
    state = build_train_state(cfg, CPU)
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    step = sg.StepGraph(state, cfg.agent, CPU, backend="aot_eager")
    step.learn_step(state, agent_cfg, epsilon_at(state.step, agent_cfg))
    finish_step(state, agent_cfg)
    reads = record_host_reads(monkeypatch)
    for _ in range(12):
        step.learn_step(state, agent_cfg, epsilon_at(state.step, agent_cfg))
        finish_step(state, agent_cfg)
    monkeypatch.undo()
    assert reads == [], f"host reads in the step graph's step: {sorted(set(reads))}"


@pytest.mark.parametrize("env", ["env=brownian", "env=permuted_mnist"])
def test_envs_with_their_own_program_are_refused(env):
    with pytest.raises(ConfigError, match=r"speed.step_graph.*runs its own program"):
        validate(make_cfg([env, "speed.step_graph=true"]))


def test_the_cuda_bookkeeping_keeps_the_numbers(monkeypatch):
    """The CUDA path's host side (static addresses marked, a step marked for the graph trees, the
    outputs copied before the next replay overwrites them), run here on the CPU: the eager numbers."""
    real_init = sg.StepGraph.__init__

    def as_on_cuda(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.cuda = True

    monkeypatch.setattr(sg.StepGraph, "__init__", as_on_cuda)
    torch._dynamo.reset()
    assert_same_run(make_cfg(SHORT + ["env=cartpole"]))


def test_the_record_says_the_compiled_loss_is_not_used_for_training_under_the_step_graph():
    """``speed.compile`` with ``speed.step_graph``: the graph's step calls the agent's own loss, so
    ``run.json``'s ``fast_path.loss`` says the compiled loss is not what trains; without the step
    graph the note is torch.compile's alone."""
    for graph_on in (True, False):
        cfg = make_cfg(["speed.compile=true", f"speed.step_graph={str(graph_on).lower()}"])
        state = build_train_state(cfg, CPU)
        notes = {"loss": "torch.compile(mode=default)"}
        assert (sg.configure(cfg, state, CPU, notes) is not None) == graph_on
        used = "not used for training" in notes["loss"]
        assert used == graph_on and notes["loss"].startswith("torch.compile(mode=default)")
