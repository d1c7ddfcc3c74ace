"""A population (``population.seeds``): every member is exactly the single run of its seed.

The oracle is the single run itself: each member's metrics (every scalar and every array of its
pauses, timing excluded) must equal those of ``seed=<s>`` run alone, bit for bit in
``population.mode=sequential``."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticity_runner import checkpoint, load_sweep, population, trainer
from plasticity_runner.config import ConfigError
from plasticity_runner.population import enabled, train_population

from .conftest import TINY, default_dtype, make_cfg
from .test_interventions import ALL_BUT_INJECTION, ARCH_OVERRIDES, BASE, WITH_INJECTION
from .test_trainer import values

# pauses at steps 0, 10 and 20, every diagnostic on (tiny), log points every 5 steps
SHORT = ["total_steps=20", "probe.every_steps=10", "log_every_steps=5"]
SETS = {f"all_but_injection_{i}": s for i, s in enumerate(ALL_BUT_INJECTION)} | {"with_injection": WITH_INJECTION}


def train(cfg, run_dir, **kwargs):
    """What plasticity-run calls: a population for ``population.seeds``, else the single run."""
    return (train_population if enabled(cfg) else trainer.train)(cfg, run_dir, **kwargs)


def arrays(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every array file of a run (``arrays/step_*.npz``), by file name."""
    out = {}
    for f in sorted((Path(run_dir) / "arrays").glob("step_*.npz")):
        with np.load(f) as z:
            out[f.name] = {k: z[k] for k in z.files}
    return out


def assert_same_run(got: Path, expected: Path) -> None:
    """Scalars and arrays of two run directories equal bit for bit (timing excluded)."""
    pd.testing.assert_frame_equal(values(got), values(expected), check_exact=True)
    a, b = arrays(got), arrays(expected)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}:{k}")


def assert_nothing_written(out: Path) -> None:
    """No population record and no member directory (Hydra's own ``cli.log`` may be there)."""
    assert not (out / population.RECORD_FILE).exists() and not list(out.glob("seed=*"))


def cfg_for(names: list[str], arch: str, extra: list[str] = ()):
    from .test_interventions import EXTRA

    opts = [o for n in names for o in EXTRA.get(n, [])]
    return make_cfg(
        BASE + ARCH_OVERRIDES[arch] + SHORT + [f"intervention=[{','.join(names)}]", *opts, *extra], tiny=False
    )


def assert_members_equal_single_runs(tmp_path, make, seeds=(0, 1), check=(1,), mode="sequential") -> None:
    listed = ",".join(map(str, seeds))
    summary = train(make([f"population.seeds=[{listed}]", f"population.mode={mode}"]), tmp_path / "pop")
    assert summary["status"] == "complete", summary
    for s in check:
        train(make([f"seed={s}"]), tmp_path / f"single{s}")
        assert_same_run(tmp_path / "pop" / f"seed={s}", tmp_path / f"single{s}")


# mlp runs every set in the default suite (every intervention); the other bodies with the first set
# there too when cheap, the rest marked slow
CHEAP_BODIES = ("mlp", "cnn", "minatar_cnn")


def _cases():
    for arch in ARCH_OVERRIDES:
        for set_name in SETS:
            slow = not (arch == "mlp" or (arch in CHEAP_BODIES and set_name == "all_but_injection_0"))
            yield pytest.param(arch, set_name, marks=[pytest.mark.slow] if slow else [], id=f"{arch}-{set_name}")


@pytest.mark.parametrize("arch, set_name", list(_cases()))
def test_sequential_members_equal_their_single_runs(tmp_path, arch, set_name):
    """Every registered intervention (composed in sets, from the registry) on every registered body:
    the member of seed 1 of population [0, 1] equals the single run of seed 1 bit for bit (a
    crossed stream, or a global RNG draw of member 0 seen by member 1, would differ)."""
    names = SETS[set_name]
    assert_members_equal_single_runs(tmp_path, lambda extra: cfg_for(names, arch, extra))


def test_population_layout_and_load_sweep(tmp_path):
    cfg = make_cfg(SHORT + ["population.seeds=[4,2]", "population.mode=sequential"])
    summary = train(cfg, tmp_path)
    assert summary["status"] == "complete" and set(summary["members"]) == {4, 2}
    record = json.loads((tmp_path / population.RECORD_FILE).read_text())
    assert record["seeds"] == [4, 2] and record["mode"] == "sequential" and record["status"] == "complete"
    assert [m["run_dir"] for m in record["members"]] == ["seed=4", "seed=2"]
    assert all(m["status"] == "complete" and m["steps_done"] == 20 for m in record["members"])
    for s in (4, 2):
        meta = json.loads((tmp_path / f"seed={s}" / "run.json").read_text())
        assert meta["config"]["seed"] == s and meta["status"] == "complete"
        assert meta["population"]["dir"] == str(tmp_path.resolve())
        assert meta["pid"] is not None and meta["start_token"]  # its own start stamp
    df = load_sweep(tmp_path)
    assert sorted(df["seed"].unique()) == [2, 4]
    assert df.groupby("run_dir")["seed"].nunique().eq(1).all() and df["run_dir"].nunique() == 2
    # the report puts the members in one group, with the single run of the same config
    train(make_cfg(SHORT + ["seed=9"]), tmp_path / "single")
    from plasticity_runner.report.data import assign_groups

    frame, _ = assign_groups(load_sweep(tmp_path))
    assert frame["group"].nunique() == 1
    # started again: finished, nothing to do
    again = train(cfg, tmp_path)
    assert again.get("already_finished") and again["status"] == "complete"


def _crash_save(monkeypatch, at_step: int, nth: int):
    """``checkpoint.save`` raises at the ``nth`` member's checkpoint of ``at_step`` (0-based)."""
    real, seen = checkpoint.save, []

    def crashing(run_dir, step, bundle, keep):
        if step == at_step:
            seen.append(run_dir)
            if len(seen) == nth + 1:
                raise RuntimeError("killed between two members' checkpoints")
        return real(run_dir, step, bundle, keep)

    monkeypatch.setattr(checkpoint, "save", crashing)


@pytest.mark.parametrize("at_step, nth", [(10, 1), (20, 2), (0, 1)])
def test_crash_between_members_checkpoints_then_restart(tmp_path, monkeypatch, at_step, nth):
    """Killed after some members wrote the pause's checkpoint and before the others: the restart
    resumes every member at the newest step all of them have, and ends bit-identical."""
    make = lambda: make_cfg(SHORT + ["population.seeds=[0,1,2]", "population.mode=sequential", "checkpoint.keep=1"])  # noqa: E731
    train(make(), tmp_path / "ref")
    with monkeypatch.context() as m:
        _crash_save(m, at_step, nth)
        with pytest.raises(RuntimeError, match="killed between"):
            train(make(), tmp_path / "pop")
    record = json.loads((tmp_path / "pop" / population.RECORD_FILE).read_text())
    assert record["status"] == "crashed"
    summary = train(make(), tmp_path / "pop")
    assert summary["status"] == "complete"
    for s in (0, 1, 2):
        assert_same_run(tmp_path / "pop" / f"seed={s}", tmp_path / "ref" / f"seed={s}")
        assert [st for st, _ in checkpoint.complete_checkpoints(tmp_path / "pop" / f"seed={s}")] == [20]


def test_crash_in_a_step_then_restart(tmp_path, monkeypatch):
    make = lambda: make_cfg(SHORT + ["population.seeds=[0,1]", "population.mode=sequential"])  # noqa: E731
    train(make(), tmp_path / "ref")
    real, calls = trainer.learn_step, []

    def crashing(state, agent_cfg, epsilon):
        out = real(state, agent_cfg, epsilon)
        calls.append(state.step)
        if state.step == 13 and len(calls) > 14:  # the second member's step 13
            raise RuntimeError("crash")
        return out

    with monkeypatch.context() as m:
        m.setattr(trainer, "learn_step", crashing)
        with pytest.raises(RuntimeError, match="crash"):
            train(make(), tmp_path / "pop")
    assert train(make(), tmp_path / "pop")["status"] == "complete"
    for s in (0, 1):
        assert_same_run(tmp_path / "pop" / f"seed={s}", tmp_path / "ref" / f"seed={s}")


@pytest.mark.parametrize(
    "override, key",
    [
        ("population.seeds=[]", "population.seeds"),
        ("population.seeds=[1,2,1]", "population.seeds"),
        ("population.seeds=[0,1] objective=probe/probe_loss@last", "objective"),
    ],
)
def test_bad_population_is_refused_before_anything_is_written(tmp_path, override, key):
    with pytest.raises(ConfigError) as info:
        train(make_cfg(SHORT + override.split()), tmp_path / "pop")
    assert info.value.key == key
    assert not (tmp_path / "pop").exists()


def test_another_seed_list_in_the_same_directory_is_refused(tmp_path):
    train(make_cfg(SHORT + ["total_steps=0", "population.seeds=[0,1]", "population.mode=sequential"]), tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as info:
        train(make_cfg(SHORT + ["total_steps=0", "population.seeds=[0,2]", "population.mode=sequential"]), tmp_path)
    assert info.value.key == "population.seeds"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "override, named",
    [("population.seeds=[0,a]", "population.seeds"), ("population.seeds=3", "population.seeds")],
)
def test_cli_refuses_a_seed_list_that_is_not_integers(tmp_path, override, named):
    out = tmp_path / "pop"
    cmd = [sys.executable, "-m", "plasticity_runner", *TINY, override, f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert named in res.stderr, res.stderr
    assert_nothing_written(out)


def test_cli_refuses_an_empty_seed_list(tmp_path):
    out = tmp_path / "pop"
    cmd = [sys.executable, "-m", "plasticity_runner", *TINY, "population.seeds=[]", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "population.seeds" in res.stderr and "empty" in res.stderr
    assert_nothing_written(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_sigkill_anywhere_then_same_command(tmp_path, mode):
    """The real CLI killed with SIGKILL at a random moment after its first checkpoint, then rerun:
    every member ends bit-identical to the uninterrupted population."""
    args = [*TINY, "population.seeds=[0,1,2]", f"population.mode={mode}"]
    ref = tmp_path / "ref"
    train(make_cfg(args[len(TINY) :]), ref)
    out = tmp_path / "pop"
    cmd = [sys.executable, "-m", "plasticity_runner", *args, f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "seed=0" / "checkpoints" / "step_0000000000" / "COMPLETE").exists():
            break
        time.sleep(0.01)
    delay = random.Random().uniform(0.0, 3.0)
    print(f"killed {delay:.3f} s after the first checkpoint")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / population.RECORD_FILE).read_text())["status"] == "complete"
    for s in (0, 1, 2):
        assert_same_run(out / f"seed={s}", ref / f"seed={s}")
        assert (out / f"seed={s}" / ".hydra" / "config.yaml").exists()


# ------------------------------------------------------------------------------------- vmap mode

# what population.mode=vmap refuses, named here (not read from the code under test): key -> override
VMAP_REFUSED = {
    "intervention.sam": ["intervention=[sam]"],
    "intervention.c_chain": ["intervention=[c_chain]"],
    "intervention.l2_init": ["intervention=[l2_init]"],
    "architecture.dropout": [*ARCH_OVERRIDES["vit"], "architecture.dropout=0.1"],
    "env.name": ["env=brownian"],
    "speed.step_graph": ["speed.step_graph=true"],
}
VMAP_SETS = {
    f"set{i}": s
    for i, s in enumerate(
        __import__("tests.test_interventions", fromlist=["compatible_sets"]).compatible_sets(
            [
                n
                for n in __import__("plasticity_runner.interventions", fromlist=["REGISTRY"]).REGISTRY
                if n
                not in {k.split(".")[1] for k in VMAP_REFUSED if k.startswith("intervention.")}
                | {"plasticity_injection"}
            ]
        )
    )
} | {"with_injection": WITH_INJECTION}
VIT_NO_DROPOUT = ["architecture.dropout=0"]  # ViT's dropout is refused; without it ViT runs


@pytest.fixture
def float64(monkeypatch):
    """Every tensor of a run in float64: the default dtype (networks, probes), and the classification
    MDP's images (observations; rewards promote in the TD target)."""
    import torch

    real = trainer.make_env

    def env64(*args, **kwargs):
        env = real(*args, **kwargs)
        env.images = env.images.to(torch.float64)
        return env

    monkeypatch.setattr(trainer, "make_env", env64)
    with default_dtype(torch.float64):
        yield


def assert_close_runs(got: Path, expected: Path, rtol: float) -> None:
    """Every scalar and array of two runs within ``rtol`` relative (timing excluded; the same rows)."""
    a, b = values(got), values(expected)
    assert len(a) == len(b)
    m = a.merge(b, on=["step", "phase", "metric"], how="outer", suffixes=("_got", "_expected"))
    assert len(m) == len(a), "the two runs record different metrics"
    np.testing.assert_allclose(m["value_got"], m["value_expected"], rtol=rtol, atol=1e-12, equal_nan=True)
    x, y = arrays(got), arrays(expected)
    assert x.keys() == y.keys()
    for name in x:
        for k in x[name]:
            np.testing.assert_allclose(x[name][k], y[name][k], rtol=rtol, atol=1e-12, err_msg=f"{name}:{k}")


def _vmap_cases():
    for arch in ARCH_OVERRIDES:
        for set_name in VMAP_SETS:
            slow = not (arch == "mlp" or (arch in CHEAP_BODIES and set_name == "set0"))
            yield pytest.param(arch, set_name, marks=[pytest.mark.slow] if slow else [], id=f"{arch}-{set_name}")


@pytest.mark.parametrize("arch, set_name", list(_vmap_cases()))
def test_vmap_members_match_their_single_runs_in_float64(tmp_path, float64, arch, set_name):
    """Every intervention vmap runs (composed in sets, from the registry), on every body, through
    pauses at 0, 10 and 20 with every diagnostic: the member of seed 1 of a vmapped population
    [0, 1] equals the single run of seed 1 within 1e-6 relative in float64 (a crossed stream or a
    member's state leaking into another would differ at order one)."""
    names = VMAP_SETS[set_name]
    extra = VIT_NO_DROPOUT if arch == "vit" else []
    make = lambda more: cfg_for(names, arch, [*extra, *more])  # noqa: E731
    train(make(["population.seeds=[0,1]", "population.mode=vmap"]), tmp_path / "pop")
    train(make(["seed=1"]), tmp_path / "single")
    assert_close_runs(tmp_path / "pop" / "seed=1", tmp_path / "single", rtol=1e-6)


@pytest.mark.parametrize(
    "optimizer",
    [
        ["optimizer=sgd"],
        ["optimizer=sgd", "optimizer.momentum=0.9"],
        ["optimizer=rmsprop"],
        ["optimizer=adamw"],
        ["optimizer.eps_root=1e-8"],
    ],
    ids=lambda o: "+".join(o),
)
def test_vmap_every_optimizer_in_float64(tmp_path, float64, optimizer):
    make = lambda more: make_cfg(SHORT + optimizer + more)  # noqa: E731
    train(make(["population.seeds=[0,1]", "population.mode=vmap"]), tmp_path / "pop")
    train(make(["seed=1"]), tmp_path / "single")
    assert_close_runs(tmp_path / "pop" / "seed=1", tmp_path / "single", rtol=1e-6)


def test_vmap_float32_agreement(tmp_path):
    """float32, the default MLP run at tiny size over 200 steps: the vmapped member's training
    values at the first log point within 1e-5 relative of its single run, every later value within
    1e-2 (summation order differs; training amplifies rounding); the bounds are stated in
    docs/populations.md, not tuned here."""
    make = lambda more: make_cfg(["total_steps=200", "probe.every_steps=100", "log_every_steps=10", *more])  # noqa: E731
    train(make(["population.seeds=[0,1]", "population.mode=vmap"]), tmp_path / "pop")
    train(make(["seed=1"]), tmp_path / "single")
    a, b = values(tmp_path / "pop" / "seed=1"), values(tmp_path / "single")
    m = a.merge(b, on=["step", "phase", "metric"], suffixes=("_got", "_expected"))
    assert len(m) == len(a) == len(b)
    first = m[(m.phase == "train") & (m.step == 10)]
    np.testing.assert_allclose(first.value_got, first.value_expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.value_got, m.value_expected, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("key", list(VMAP_REFUSED))
def test_vmap_refusals_name_the_key_and_write_nothing(tmp_path, key):
    cfg = make_cfg(BASE + SHORT + VMAP_REFUSED[key] + ["population.seeds=[0,1]", "population.mode=vmap"], tiny=False)
    with pytest.raises(ConfigError) as info:
        train(cfg, tmp_path / "pop")
    assert info.value.key == key
    assert "population.mode=sequential" in str(info.value)
    assert not (tmp_path / "pop").exists()


# host-side interventions (they act in after_step or on_target_update) gated to one member below;
# plasticity injection changes the network's structure, which all members do at the same step
HOST_SIDE = [
    n
    for n, part in __import__("plasticity_runner.registry", fromlist=["parts"]).parts("intervention").items()
    if n != "plasticity_injection"
    and f"intervention.{n}" not in VMAP_REFUSED
    and (
        part.build.after_step
        is not __import__("plasticity_runner.interventions.base", fromlist=["I"]).Intervention.after_step
        or part.build.on_target_update
        is not __import__("plasticity_runner.interventions.base", fromlist=["I"]).Intervention.on_target_update
    )
]


# in the default suite: the resets named by the population's promise; the others slow-marked
ISOLATION_DEFAULT = {"scheduled_reset", "redo", "continual_backprop", "reset_optimizer"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[] if n in ISOLATION_DEFAULT else [pytest.mark.slow]) for n in HOST_SIDE]
)
def test_a_host_side_hook_of_one_member_leaves_the_others_untouched(tmp_path, monkeypatch, name):
    """Intervention ``name``'s host-side hooks act on the member of seed 1 only: the members of
    seeds 0 and 2 end bit-identical (parameters, optimizer state, every metric) to a population in
    which no member ran them, and seed 1 differs (the hook acted)."""
    import torch

    from plasticity_runner import registry
    from plasticity_runner.interventions.base import Intervention

    from .test_interventions import EXTRA

    cls = registry.parts("intervention")[name].build
    for hook in ("after_step", "on_target_update"):
        real = getattr(cls, hook)
        if real is getattr(Intervention, hook):
            continue

        def gated(self, networks, step, real=real):
            if networks.seed == 1 or getattr(self, "_everyone", False):
                return real(self, networks, step)
            return None

        monkeypatch.setattr(cls, hook, gated)
    make = lambda: make_cfg(SHORT + [f"intervention=[{name}]", *EXTRA.get(name, []), "population.seeds=[0,1,2]"])  # noqa: E731
    train(make(), tmp_path / "gated")
    with monkeypatch.context() as m:  # nobody runs the hooks
        for hook in ("after_step", "on_target_update"):
            if getattr(cls, hook) is not getattr(Intervention, hook):
                m.setattr(cls, hook, lambda self, networks, step: None)
        train(make(), tmp_path / "none")

    def last_bundle(run_dir):
        step, d = checkpoint.complete_checkpoints(run_dir)[-1]
        return checkpoint.load_bundle(d / checkpoint.STATE_FILE, "cpu")

    def same(x, y) -> bool:
        if torch.is_tensor(x):
            return torch.equal(x, y)
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
        return x == y

    for s in (0, 2):
        a, b = last_bundle(tmp_path / "gated" / f"seed={s}"), last_bundle(tmp_path / "none" / f"seed={s}")
        for part in ("online", "target", "optimizer"):
            assert same(a[part], b[part]), (s, part)
        va, vb = values(tmp_path / "gated" / f"seed={s}"), values(tmp_path / "none" / f"seed={s}")
        keep = ~va.metric.str.startswith(name)
        pd.testing.assert_frame_equal(
            va[keep].reset_index(drop=True),
            vb[~vb.metric.str.startswith(name)].reset_index(drop=True),
            check_exact=True,
        )
    a, b = last_bundle(tmp_path / "gated" / "seed=1"), last_bundle(tmp_path / "none" / "seed=1")
    assert not (same(a["online"], b["online"]) and same(a["optimizer"], b["optimizer"])), f"{name} never acted"


# the DQN envs that run here without a download (Atari needs its ROMs: its step is ALE's own RNG)
QUIET_ENVS = {
    "classification": ARCH_OVERRIDES["mlp"],
    "cartpole": ["env=cartpole", *ARCH_OVERRIDES["mlp"]],
    "minatar": [
        "env=minatar",
        "env.game=breakout",
        *ARCH_OVERRIDES["minatar_cnn"],
        # MinAtar declares no reward range: the categorical heads' support ends
        "intervention.two_hot.v_min=-10",
        "intervention.two_hot.v_max=10",
        "intervention.hl_gauss.v_min=-10",
        "intervention.hl_gauss.v_max=10",
    ],
}


@pytest.mark.parametrize("env", list(QUIET_ENVS))
@pytest.mark.parametrize("set_name", list(SETS))
def test_a_training_step_draws_nothing_from_the_global_rngs(env, set_name):
    """``population.quiet_step``'s claim, for every registered intervention (in sets) on the envs
    that run here: acting, the env, the replay draw, the loss, the optimizer step, the after-step
    and target-update hooks leave torch's, numpy's and Python's global RNG states as they were; so
    the members need not swap them between log points. A ViT with dropout does draw (the one
    exception, which swaps every step)."""
    from plasticity_runner.train_state import global_rng_state
    from plasticity_runner.trainer import build_train_state, finish_step, learn_step, plain, prefill

    from .test_interventions import EXTRA

    names = SETS[set_name]
    opts = [o for n in names for o in EXTRA.get(n, [])]
    env_opts = [o for o in QUIET_ENVS[env] if not o.startswith("intervention.") or o.split(".")[1] in names]
    cfg = make_cfg([*BASE, f"intervention=[{','.join(names)}]", *env_opts, *opts], tiny=False)
    state = build_train_state(cfg, torch_cpu())
    prefill(state, int(cfg.agent.learning_starts))
    agent_cfg = plain(cfg.agent)
    before = global_rng_state()
    for _ in range(12):  # past target updates and the hooks' first firings (EXTRA)
        learn_step(state, agent_cfg, 0.5)
        finish_step(state, agent_cfg)
    after = global_rng_state()
    assert population.quiet_step(cfg) is None
    assert rng_equal(before, after)


def test_a_vit_with_dropout_draws_from_the_global_rng():
    from plasticity_runner.train_state import global_rng_state
    from plasticity_runner.trainer import build_train_state, learn_step, plain, prefill

    cfg = make_cfg(BASE + ARCH_OVERRIDES["vit"] + ["architecture.dropout=0.1"], tiny=False)
    state = build_train_state(cfg, torch_cpu())
    prefill(state, int(cfg.agent.learning_starts))
    before = global_rng_state()
    learn_step(state, plain(cfg.agent), 0.5)
    assert not rng_equal(before, global_rng_state())
    assert population.quiet_step(cfg) == "architecture.dropout=0.1"


def torch_cpu():
    import torch

    return torch.device("cpu")


def rng_equal(a: dict, b: dict) -> bool:
    import torch

    return (
        torch.equal(a["torch"], b["torch"])
        and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a["numpy"], b["numpy"]))
        and a["python"] == b["python"]
    )


@pytest.mark.slow
def test_a_sweep_of_populations_and_its_restart(tmp_path):
    """``-m`` over a key with ``population.seeds``: each job a population (its own directory, its
    members below it), ``load_sweep`` reads every member, and the sweep started again skips both
    jobs (their ``population.json`` ended before it)."""
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "plasticity_runner",
        "-m",
        *TINY,
        *SHORT,
        "population.seeds=[0,1]",
        "architecture.width=8,16",
        f"hydra.sweep.dir={out}",
    ]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "2 complete" in res.stdout
    df = load_sweep(out)
    runs = df.groupby(["architecture.width", "seed"])["run_dir"].first()
    assert sorted(runs.index) == [(8, 0), (8, 1), (16, 0), (16, 1)]
    for job in ("0", "1"):
        assert json.loads((out / job / population.RECORD_FILE).read_text())["status"] == "complete"
        assert (out / job / ".hydra" / "config.yaml").exists() and (out / job / "seed=1" / ".hydra").is_dir()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "2 skipped" in again.stdout, again.stdout


@pytest.mark.slow  # W&B's offline runs start slowly
def test_each_member_mirrors_its_own_rows_to_tensorboard_and_wandb(tmp_path):
    """The sinks open per member (W&B runs side by side in one process): each member's TensorBoard
    events and offline W&B run hold exactly its own parquet rows."""
    from .test_sinks import assert_tensorboard_equals_parquet, parquet_rows, wandb_offline_runs, wandb_scalar_rows

    cfg = make_cfg(SHORT + ["logger=[tensorboard,wandb]", "population.seeds=[0,1]"])
    assert train(cfg, tmp_path)["status"] == "complete"
    for s in (0, 1):
        member = tmp_path / f"seed={s}"
        assert_tensorboard_equals_parquet(member, min_rows=20)
        (run,) = wandb_offline_runs(member)
        assert run["id"] == json.loads((member / "run.json").read_text())["run_id"]
        pd.testing.assert_frame_equal(wandb_scalar_rows(run["history"]), parquet_rows(member), check_exact=True)
