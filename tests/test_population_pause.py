"""The pause of a population (``probes/population.py``) against its oracle: each member's own
``run_pause`` on a deep copy of its state.

Members are separate single runs (``trainer.build_train_state`` with seeds 0, 1, 2) trained a few steps,
so their parameters, replays and streams differ. The pauses run in float64 (networks, replay
observations and fresh target networks; ``float64``): a crossed stream or a member's state read
by another shows as a difference of order one, summation order as ~1e-15; the bound is 1e-6
relative. In float32 the same comparison holds within 1e-4 relative (stated, not tuned: the
stacked copies' matmuls and convolutions may block their sums differently from the single
run's; the MLP and small CNNs agree bit for bit, BatchNorm and larger CNNs within ~2e-6).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from plasticity_runner.probes import population
from plasticity_runner.probes.pause import run_pause
from plasticity_runner.probes.population import run_population_pause, structure_key
from plasticity_runner.train_state import global_rng_state, set_global_rng_state
from plasticity_runner.trainer import build_train_state, finish_step, learn_step, prefill

from .conftest import TINY, default_dtype, make_cfg
from .test_interventions import ALL_BUT_INJECTION, ARCH_OVERRIDES, EXTRA

CPU = torch.device("cpu")
SEEDS = (0, 1, 2)
BASE = [o for o in TINY if not o.startswith("architecture.")] + [
    "probe.every_steps=3",  # the pause after 3 steps is due for every diagnostic
    "agent.target_update_steps=2",
    "diagnostics.dynamics.reference_inputs=16",
]
RTOL_64, RTOL_32 = 1e-6, 1e-4


class RecordingWriter:
    """The metrics writer's interface, keeping every row and array in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, float]] = []
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, step, phase, metric, value) -> None:
        self.rows.append((int(step), phase, metric, float(value)))

    def add_many(self, step, phase, values) -> None:
        for metric, value in values.items():
            self.add(step, phase, metric, value)

    def add_array(self, name, array) -> None:
        self.arrays[name] = np.asarray(array)


class Float64Replay:
    """A replay whose observations come back in float64 (the rest as stored)."""

    def __init__(self, replay) -> None:
        self.replay = replay

    def __getattr__(self, name):
        if name == "replay":  # not set yet (copy.deepcopy builds the object before its fields)
            raise AttributeError(name)
        return getattr(self.replay, name)

    def sample(self, n, generator):
        batch = self.replay.sample(n, generator)
        return dataclasses.replace(batch, o_tm1=batch.o_tm1.double(), o_t=batch.o_t.double())

    def sample_obs(self, n, generator):
        return self.replay.sample_obs(n, generator).double()


def float64():
    """Every tensor the members build in float64 (the default dtype)."""
    return default_dtype(torch.float64)


def as_float64(value):
    """``value`` with its floating-point tensors and modules in float64 (through lists, tuples, dicts)."""
    if isinstance(value, torch.nn.Module):
        return value.double()
    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(as_float64(v) for v in value)
    if isinstance(value, dict):
        return {k: as_float64(v) for k, v in value.items()}
    return value


def to_float64(state):
    """``state`` (a deep copy) with its networks, its interventions' tensors (C-CHAIN's reference
    network, L2-init's initial parameters, ...) and its replay observations in float64."""
    state.agent.online.double()
    state.agent.target.double()
    for intervention in state.interventions:
        for name, value in list(vars(intervention).items()):
            setattr(intervention, name, as_float64(value))
    state.replay = Float64Replay(state.replay)
    state.agent.networks.replay = state.replay
    return state


def cfg_for(arch: str, names: tuple[str, ...], seed: int, extra: list[str] | None = None):
    options = [o for n in names for o in EXTRA.get(n, [])] + list(extra or [])
    selected = f"intervention=[{','.join(names) or 'none'}]"
    return make_cfg(BASE + ARCH_OVERRIDES[arch] + [selected, f"seed={seed}"] + options, tiny=False)


def members(arch: str, names: tuple[str, ...] = (), extra: list[str] | None = None, steps: int = 3):
    """Configs and states of three separate single runs, ``steps`` training steps each."""
    cfgs = [cfg_for(arch, names, s, extra) for s in SEEDS]
    states = []
    for cfg in cfgs:
        state = build_train_state(cfg, CPU)
        prefill(state, int(cfg.agent.learning_starts))
        for _ in range(steps):
            learn_step(state, cfg.agent, 0.5)
            finish_step(state, cfg.agent)
        states.append(state)
    return cfgs, states


def rng_states() -> list[dict]:
    """One global RNG state per member (as a population keeps them), distinct."""
    saved = global_rng_state()
    out = []
    for s in SEEDS:
        torch.manual_seed(1000 + s)
        out.append(global_rng_state())
    set_global_rng_state(saved)
    return out


def single_pauses(cfgs, states, rngs=None):
    """The oracle: ``run_pause`` of each member on a deep copy of its state (with its global RNG
    state set, when given); the writers, the probe scalars and the copies after their pauses."""
    writers, probes, after = [], [], []
    for i, (cfg, state) in enumerate(zip(cfgs, states)):
        copied = copy.deepcopy(state)
        if rngs is not None:
            set_global_rng_state(rngs[i])
        writer = RecordingWriter()
        probes.append(run_pause(cfg, copied, writer))
        writers.append(writer)
        after.append(copied)
    return writers, probes, after


def population_pause(cfgs, states, rngs=None):
    copies = [copy.deepcopy(s) for s in states]
    writers = [RecordingWriter() for _ in cfgs]
    probes = run_population_pause(cfgs, copies, writers, global_rng_states=rngs)
    return writers, probes, copies


def without_timing(writer: RecordingWriter):
    return [r for r in writer.rows if r[1] != "timing"]


def assert_same_pause(single: RecordingWriter, pop: RecordingWriter, rtol: float) -> None:
    """The same rows in the same order (timing rows: the same names), values within ``rtol``
    relative (NaN where NaN), and the same arrays."""
    assert [r[:3] for r in single.rows] == [r[:3] for r in pop.rows]
    a, b = without_timing(single), without_timing(pop)
    for (_, phase, metric, x), (*_, y) in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            assert math.isnan(x) and math.isnan(y), (phase, metric, x, y)
            continue
        assert abs(x - y) <= rtol * max(abs(x), abs(y)) + 1e-300, (phase, metric, x, y)
    assert single.arrays.keys() == pop.arrays.keys()
    for name, array in single.arrays.items():
        scale = max(float(np.nanmax(np.abs(array))), 1e-300) if array.size else 1.0
        np.testing.assert_allclose(pop.arrays[name], array, rtol=0, atol=rtol * scale, err_msg=name)


def check_population(cfgs, states, rtol: float, rngs=None):
    singles, single_probes, single_after = single_pauses(cfgs, states, None if rngs is None else copy.deepcopy(rngs))
    pops, pop_probes, pop_after = population_pause(cfgs, states, None if rngs is None else copy.deepcopy(rngs))
    for single, pop in zip(singles, pops):
        assert_same_pause(single, pop, rtol)
    for a, b in zip(single_probes, pop_probes):
        assert a.keys() == b.keys() and a  # every member probed
        for k in a:
            assert abs(a[k] - b[k]) <= rtol * max(abs(a[k]), abs(b[k])) + 1e-300, (k, a[k], b[k])
    return single_after, pop_after


# ------------------------------------------------------------------------------ the oracle, float64

CASES = [
    ("mlp", ()),
    ("mlp", ("plasticity_injection",)),
    ("mlp", ("redo", "layer_norm")),
    ("mlp", ("two_hot",)),
    ("mlp", ("spectral_norm", "crelu")),
    ("cnn", ()),
    ("cnn", ("plasticity_injection", "layer_norm")),
    ("minatar_cnn", ()),
    ("minatar_cnn", ("hl_gauss", "reset_last_layer")),
    ("nature_cnn", ()),
    ("impala_cnn", ()),
    ("resnet18", ()),
]


@pytest.mark.parametrize("names", ALL_BUT_INJECTION, ids=lambda names: "+".join(names))
def test_every_intervention_composed_on_the_mlp_in_float64(names):
    """Every registered intervention but injection (in ``CASES``), packed into sets that compose."""
    cfgs, states = members("mlp", tuple(names))
    with float64():
        states = [to_float64(copy.deepcopy(s)) for s in states]
        check_population(cfgs, states, RTOL_64)


@pytest.mark.parametrize("arch,names", CASES, ids=lambda v: v if isinstance(v, str) else "+".join(v) or "none")
def test_each_member_gets_its_own_pause_in_float64(arch, names):
    cfgs, states = members(arch, names)
    with float64():
        states = [to_float64(copy.deepcopy(s)) for s in states]
        check_population(cfgs, states, RTOL_64)


def test_the_two_hot_cross_entropy_fit_stacks(caplog):
    cfgs, states = members("mlp", ("two_hot",), ["probe.two_hot_fit=cross_entropy"])
    with float64(), caplog.at_level(logging.DEBUG, logger="plasticity_runner"):
        states = [to_float64(copy.deepcopy(s)) for s in states]
        check_population(cfgs, states, RTOL_64)
    assert "probed on its own" not in caplog.text


def test_a_dropout_network_is_probed_per_member_with_its_own_global_rng(caplog):
    """The ViT draws dropout masks from the global RNG: each member probes alone, with the global
    RNG state the population keeps for it, and that state advances as in its own run."""
    cfgs, states = members("vit", ())
    rngs = rng_states()
    with float64(), caplog.at_level(logging.DEBUG, logger="plasticity_runner"):
        states = [to_float64(copy.deepcopy(s)) for s in states]
        singles, _, _ = single_pauses(cfgs, states, copy.deepcopy(rngs))
        single_rng_after = []
        for i, state in enumerate(states):  # the global RNG state each single run leaves
            set_global_rng_state(rngs[i])
            run_pause(cfgs[i], copy.deepcopy(state), RecordingWriter())
            single_rng_after.append(torch.get_rng_state())
        before = torch.get_rng_state()
        pop_rngs = copy.deepcopy(rngs)
        pops, _, _ = population_pause(cfgs, states, pop_rngs)
    assert torch.equal(torch.get_rng_state(), before)  # the process's own state restored
    for single, pop in zip(singles, pops):
        assert_same_pause(single, pop, RTOL_64)
    for i in range(len(SEEDS)):
        assert torch.equal(pop_rngs[i]["torch"], single_rng_after[i])
        assert not torch.equal(pop_rngs[i]["torch"], rngs[i]["torch"])  # it did draw
    assert caplog.text.count("draws from the global RNG") == len(SEEDS)


def test_members_of_another_structure_are_probed_alone_and_said_so(caplog):
    """Member 1's head injected (plasticity injection) and the others' not: members 0 and 2 stack,
    member 1 probes on its own, with a debug line; every member still gets its own pause."""
    cfgs, states = members("mlp", ("plasticity_injection",), ["intervention.plasticity_injection.at_step=1000"])
    injection = next(i for i in states[1].interventions if i.name == "plasticity_injection")
    injection.inject(states[1].agent.networks, states[1].step)
    assert structure_key(states[0].agent.online) == structure_key(states[2].agent.online)
    assert structure_key(states[0].agent.online) != structure_key(states[1].agent.online)
    calls = []
    real = population.population_probe

    def spy(nets, *args, **kwargs):
        calls.append(len(nets))
        return real(nets, *args, **kwargs)

    with float64(), caplog.at_level(logging.DEBUG, logger="plasticity_runner"):
        states = [to_float64(copy.deepcopy(s)) for s in states]
        population.population_probe = spy
        try:
            check_population(cfgs, states, RTOL_64)
        finally:
            population.population_probe = real
    assert calls == [2]
    assert "member 1 (seed 1) probed on its own: no other member's network has its structure" in caplog.text


def test_a_cpu_stack_holds_at_most_its_parameter_budget(monkeypatch, caplog):
    """With room for two members' copies in a stack, members 0 and 1 stack and member 2 probes on
    its own, said so; each still gets its own pause."""
    cfgs, states = members("mlp")
    per_member = int(cfgs[0].probe.num_targets) * sum(p.numel() for p in states[0].agent.online.parameters())
    monkeypatch.setattr(population, "CPU_STACK_PARAMS", 2 * per_member + 1)
    calls = []
    real = population.population_probe

    def spy(nets, *args, **kwargs):
        calls.append(len(nets))
        return real(nets, *args, **kwargs)

    monkeypatch.setattr(population, "population_probe", spy)
    with float64(), caplog.at_level(logging.DEBUG, logger="plasticity_runner"):
        states = [to_float64(copy.deepcopy(s)) for s in states]
        check_population(cfgs, states, RTOL_64)
    assert calls == [2]
    assert "member 2 (seed 2) probed on its own: a stack of two members would hold more than" in caplog.text


# ------------------------------------------------------------------------------ float32, as runs are


@pytest.mark.parametrize("arch", ["mlp", "minatar_cnn", "resnet18"])
def test_each_member_gets_its_own_pause_in_float32(arch):
    cfgs, states = members(arch)
    check_population(cfgs, states, RTOL_32)


# ------------------------------------------------------------------------------ no crossing, no writes


def test_swapping_two_members_swaps_their_pauses():
    cfgs, states = members("mlp")
    with float64():
        states = [to_float64(copy.deepcopy(s)) for s in states]
        pops, _, _ = population_pause(cfgs, states)
        order = [1, 0, 2]
        swapped, _, _ = population_pause([cfgs[i] for i in order], [states[i] for i in order])
        # member 0's seed with member 1's network: what member 0's run would measure on that network
        crossed = [copy.deepcopy(s) for s in states]
        crossed[0].agent, crossed[1].agent = crossed[1].agent, crossed[0].agent
        crossed[0].dynamics, crossed[1].dynamics = crossed[1].dynamics, crossed[0].dynamics
        crossed_pops, _, _ = population_pause(cfgs, crossed)
        crossed_single, _, _ = single_pauses(cfgs[:1], crossed[:1])
    for i, j in enumerate(order):
        assert_same_pause(pops[j], swapped[i], RTOL_64)
    assert_same_pause(crossed_single[0], crossed_pops[0], RTOL_64)
    probe = [r for r in without_timing(pops[0]) if r[2] == "probe_initial_loss"]
    crossed_probe = [r for r in without_timing(crossed_pops[0]) if r[2] == "probe_initial_loss"]
    assert abs(probe[0][3] - crossed_probe[0][3]) > 1e-3 * abs(probe[0][3])  # the network matters


def snapshot(state) -> dict:
    """Everything of a member the pause must leave as it was (the dynamics tracker aside, whose
    greedy-action reference a pause updates as a single run's does)."""
    return {
        "online": {k: v.clone() for k, v in state.agent.online.state_dict().items()},
        "target": {k: v.clone() for k, v in state.agent.target.state_dict().items()},
        "optimizer": copy.deepcopy(state.agent.optimizer.state_dict()),
        "act": state.act_generator.get_state(),
        "replay_generator": state.replay_generator.get_state(),
        "replay": copy.deepcopy(state.replay.state_dict()),
        "interventions": copy.deepcopy([i.state_dict() for i in state.interventions]),
        "step": state.step,
    }


def assert_equal_trees(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal_trees(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_equal_trees(x, y, f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("names", [(), ("redo", "plasticity_injection")], ids=["none", "redo+injection"])
def test_the_population_pause_leaves_every_member_as_it_was(names):
    cfgs, states = members("mlp", names)
    before = [snapshot(s) for s in states]
    rng = global_rng_state()
    singles, _, single_after = single_pauses(cfgs, states)
    writers = [RecordingWriter() for _ in cfgs]
    run_population_pause(cfgs, states, writers)
    for state, snap in zip(states, before):
        assert_equal_trees(snap, snapshot(state))
    assert torch.equal(torch.get_rng_state(), rng["torch"])
    for state, single in zip(states, single_after):  # the tracker as its own pause leaves it
        assert_equal_trees(single.dynamics.state_dict(), state.dynamics.state_dict())


def test_a_member_with_non_finite_parameters_records_it_and_the_others_are_measured():
    cfgs, states = members("mlp")
    with torch.no_grad():
        next(states[1].agent.online.parameters())[0, 0] = float("nan")
    singles, single_probes, _ = single_pauses(cfgs, states)
    pops, pop_probes, _ = population_pause(cfgs, states)
    assert pops[1].rows == [(3, "train", "nonfinite_params", 1.0)] == singles[1].rows
    assert pop_probes[1] == {} == single_probes[1]
    for i in (0, 2):
        assert_same_pause(singles[i], pops[i], RTOL_32)


def test_members_must_differ_in_seed_alone():
    cfgs, states = members("mlp", steps=0)
    other = cfg_for("mlp", (), 1, ["probe.steps=3"])
    with pytest.raises(ValueError, match="member 1's config differs"):
        run_population_pause([cfgs[0], other], states[:2], [RecordingWriter(), RecordingWriter()])
    with pytest.raises(ValueError, match="one config, state and writer per member"):
        run_population_pause(cfgs, states[:2], [RecordingWriter()] * 3)


# ------------------------------------------------------------------------------ the fast path


def with_compiled_probe_loss(states, cfgs):
    """What ``trainer.run_dqn`` gives each run under ``speed.compile``: its compiled probe loss."""
    from plasticity_runner import fastpath

    for state, cfg in zip(states, cfgs):
        state.compiled_probe_fit = fastpath.compiled_probe_fit(cfg.speed, cfg.probe, CPU, {})
    return states


def test_a_compiler_failure_leaves_the_population_probe_eager_and_says_so(monkeypatch, caplog):
    """Members whose runs compile their probe loss get the compiled population loss; a compiler
    that fails falls back to the eager loss with a warning, and the numbers are the eager ones."""
    from plasticity_runner import fastpath

    cfgs, states = members("mlp", (), ["speed.compile=true"])
    eager, _, _ = population_pause(cfgs, states)

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("inductor: no working C++ compiler")

        return compiled

    monkeypatch.setattr(fastpath, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="plasticity_runner"):
        states = with_compiled_probe_loss([copy.deepcopy(s) for s in states], cfgs)
        compiled, _, _ = population_pause(cfgs, states)
    assert "population_probe: torch.compile failed, falling back to eager" in caplog.text
    assert fastpath.COMPILE_NOTES["population_probe"].startswith("eager (compile failed")
    for a, b in zip(eager, compiled):
        assert without_timing(a) == without_timing(b)


@pytest.mark.slow
def test_the_compiled_population_probe_matches_the_members_compiled_probes():
    """``speed.compile``: the population's compiled loss, compiled once for two pauses, gives each
    member's compiled single probe within the float32 bound."""
    from torch._dynamo.utils import counters

    from plasticity_runner import fastpath

    torch._dynamo.reset()
    fastpath._COMPILED.clear()
    cfgs, states = members("mlp", (), ["speed.compile=true"])
    states = with_compiled_probe_loss(states, cfgs)
    start = counters["stats"]["unique_graphs"]
    check_population(cfgs, states, RTOL_32)
    before = counters["stats"]["unique_graphs"]
    assert before - start == 2  # the members' probe loss (compiled once for all three) and the population's
    for state in states:  # a later pause: other parameters, the same graph
        learn_step(state, cfgs[0].agent, 0.5)
        finish_step(state, cfgs[0].agent)
    population_pause(cfgs, states)
    assert counters["stats"]["unique_graphs"] == before
    assert fastpath.COMPILE_NOTES["population_probe"] == "torch.compile(mode=default)"


def test_the_population_fit_reads_nothing_back_to_the_host(monkeypatch):
    """Like the single probe's fit: no device-to-host read in the stacked fit's steps."""
    from plasticity_runner.probes.plasticity import make_targets
    from plasticity_runner.probes.plasticity_fit import fit_population_vectorised

    from .test_fastpath import record_host_reads

    cfgs, states = members("mlp", steps=0)
    inputs = torch.stack([s.replay.sample_obs(64, torch.Generator().manual_seed(i)) for i, s in enumerate(states)])
    targets = torch.stack([make_targets(s.build_fresh, x, [1, 2], 0.0, 1e5) for s, x in zip(states, inputs)])
    nets = [s.agent.online for s in states]
    reads = record_host_reads(monkeypatch)
    fit_population_vectorised(nets, cfgs[0].optimizer, inputs, targets, 12, 16, [0, 1, 2], 5)
    monkeypatch.undo()
    assert reads == [], f"host reads in the population's fit: {sorted(set(reads))}"
