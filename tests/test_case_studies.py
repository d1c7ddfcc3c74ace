"""The case studies of section 4: memorisation under relabelling (fig. 1), GD vs Brownian motion (fig. 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from plasticity_runner import load_sweep
from plasticity_runner.case_studies.brownian import CoupledTrajectories, make_mdp, next_batch
from plasticity_runner.case_studies.memorization import RelabelledImages, accuracy, evaluate, labels_seed, load_images
from plasticity_runner.cli import compose_config
from plasticity_runner.config import ConfigError, validate
from plasticity_runner.metrics import load_arrays, load_run, load_run_metadata
from plasticity_runner.nets import build_network
from plasticity_runner.trainer import train

MEMORIZATION_TINY = [
    "env=memorization",
    "env.num_images=64",
    "env.iteration_steps=5",
    "env.num_iterations=3",
    "env.batch_size=16",
    "env.eval_samples=128",
    "architecture.width=32",
    "progress=none",
    "device=cpu",
]
BROWNIAN_TINY = [
    "experiment=fig2_brownian",
    "env.dataset=digits",  # the preset's MNIST is not on disk here
    "total_steps=40",
    "log_every_steps=10",
    "env.batch_size=32",
    "env.target_update_steps=10",
    "env.measure_every_steps=20",
    "architecture.width=32",
    "diagnostics.curvature.num_inputs=64",
    "diagnostics.curvature.iterations=8",
    "diagnostics.curvature.grid_points=64",
    "diagnostics.gradcov.k=32",
    "diagnostics.gradcov.num_clusters=4",
    "progress=none",
    "device=cpu",
]


def run_cli(args, cwd):
    cmd = [sys.executable, "-m", "plasticity_runner", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------- memorization


def test_relabelling_permutes_labels_and_keeps_inputs():
    cfg = compose_config(MEMORIZATION_TINY + ["env.num_images=500"])
    data = load_images(cfg.env, torch.device("cpu"), int(cfg.seed))
    images = data.images.clone()
    true_counts = torch.bincount(data.true_labels, minlength=10)
    seen = [data.labels.clone()]
    for _ in range(3):
        data.relabel()
        seen.append(data.labels.clone())
    assert torch.equal(data.images, images)
    for before, after in zip(seen, seen[1:]):
        assert torch.equal(torch.bincount(after, minlength=10), true_counts)  # a permutation of the true labels
        assert (before != after).double().mean() > 0.7  # ~90% of labels change for 10 classes
    again = RelabelledImages(images, data.true_labels, labels_seed(cfg.env, int(cfg.seed)))
    assert torch.equal(again.labels, seen[0])  # the labellings are a function of the seed


def test_the_loop_relabels_after_every_iteration_with_fixed_inputs(tmp_path, monkeypatch):
    calls = []
    original = RelabelledImages.relabel

    def recording(self):
        labels = original(self)
        calls.append((self.images.clone(), labels.clone()))
        return labels

    monkeypatch.setattr(RelabelledImages, "relabel", recording)
    summary = train(compose_config(MEMORIZATION_TINY), tmp_path / "run")
    assert summary["status"] == "complete" and summary["steps"] == 15
    assert len(calls) == 1 + 3  # the first labelling, then one after each of the 3 iterations
    for (x0, y0), (x1, y1) in zip(calls, calls[1:]):
        assert torch.equal(x0, x1)
        assert not torch.equal(y0, y1)


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def test_accuracy_and_dead_fraction_on_a_hand_built_network():
    net = build_network(OmegaConf.create({"name": "mlp", "width": 4, "num_layers": 2}), (2,), 10)
    l1, l2, head = _linears(net)
    with torch.no_grad():
        for m in (l1, l2, head):
            m.weight.zero_(), m.bias.zero_()
        # layer 1: h1 = relu(x0), h2 = relu(x1) (zero on some inputs, alive), h3 = 0 (dead), h4 = relu(-x0 - x1) (dead)
        l1.weight[0, 0], l1.weight[1, 1] = 1.0, 1.0
        l1.weight[3] = torch.tensor([-1.0, -1.0])
        # layer 2: z1 = h1 (alive), z2 = relu(h2 - 10) (dead), z3 = 0 (dead), z4 = relu(-h1) (dead)
        l2.weight[0, 0], l2.weight[1, 1], l2.bias[1], l2.weight[3, 0] = 1.0, 1.0, -10.0, -1.0
        # logits: class 0 = z1, class 1 = 0.5, others -100: predicts 0 iff x0 > 0.5
        head.weight[0, 0] = 1.0
        head.bias.fill_(-100.0)
        head.bias[0], head.bias[1] = 0.0, 0.5
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 1, 3])  # predictions 0, 1, 0, 0: two right
    out = evaluate(net, x, y)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["dead_frac"] == pytest.approx(5 / 8)  # 2 of 4 in layer 1, 3 of 4 in layer 2
    layers = sorted(k for k in out if k.startswith("dead_frac/"))
    assert [out[k] for k in layers] == [pytest.approx(0.5), pytest.approx(0.75)]
    assert accuracy(torch.tensor([[0.0, 1.0], [3.0, 2.0], [1.0, 1.0]]), torch.tensor([1, 1, 0])) == pytest.approx(2 / 3)


def test_update_norm_is_the_parameter_change_of_each_step(tmp_path, monkeypatch):
    """With SGD the step is lr * |grad|; the logged mean must equal the oracle over the iteration."""
    norms = []
    original = torch.optim.SGD.step

    def recording(self, closure=None):
        grads = [p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.cat([g.flatten() for g in grads]).norm()) * self.param_groups[0]["lr"])
        return original(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    train(compose_config(MEMORIZATION_TINY + ["optimizer=sgd", "optimizer.lr=0.1"]), tmp_path / "run")
    df = load_run(tmp_path / "run")
    logged = df[df.metric == "adam_update_norm"].value.to_numpy()
    expected = np.asarray(norms).reshape(3, 5).mean(1)
    np.testing.assert_allclose(logged, expected, rtol=1e-4)


# ------------------------------------------------------------------------------------ brownian


def test_brownian_twin_starts_identical_and_steps_with_the_sgd_norm():
    cfg = compose_config(BROWNIAN_TINY)
    device = torch.device("cpu")
    env = make_mdp(cfg.env, device, 0)
    env.reset()
    coupled = CoupledTrajectories(cfg, env.obs_shape, env.num_actions, device)
    gd, bm = list(coupled.gd.parameters()), list(coupled.brownian.parameters())
    assert all(torch.equal(a, b) and a is not b for a, b in zip(gd, bm))
    generator = torch.Generator().manual_seed(0)
    lr = float(cfg.optimizer.lr)
    for t in range(1, 6):
        batch = next_batch(env, generator)
        grads = torch.autograd.grad(coupled.agent.loss(batch), gd)  # the SGD oracle: delta = -lr * grad
        gd0, bm0 = [p.detach().clone() for p in gd], [p.detach().clone() for p in bm]
        _, norm = coupled.step(batch, t)
        d_gd = torch.cat([(p.detach() - q).flatten() for p, q in zip(gd, gd0)]).double()
        d_bm = torch.cat([(p.detach() - q).flatten() for p, q in zip(bm, bm0)]).double()
        oracle = -lr * torch.cat([g.flatten() for g in grads]).double()
        assert float((d_gd - oracle).norm() / oracle.norm()) < 1e-3  # float32 rounding of theta + delta
        assert d_gd.norm() > 0
        assert float(d_bm.norm()) == pytest.approx(float(d_gd.norm()), rel=1e-4)
        assert float(norm) == pytest.approx(float(d_gd.norm()), rel=1e-4)
        cosine = float(d_gd @ d_bm / (d_gd.norm() * d_bm.norm()))
        assert abs(cosine) < 0.2  # a random direction in ~3000 dimensions, not the gradient's


# ------------------------------------------------------------------------------ the real CLI


def test_cli_runs_both_case_studies_and_load_sweep_reads_them(tmp_path):
    root = tmp_path / "runs"
    for name, args in (("memorization", MEMORIZATION_TINY), ("brownian", BROWNIAN_TINY)):
        res = run_cli(args + [f"hydra.run.dir={root / name}"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert load_run_metadata(root / name)["status"] == "complete"
    df = load_sweep(root)
    assert set(df["env.name"]) == {"memorization", "brownian"}

    mem = df[df["env.name"] == "memorization"]
    assert mem[["optimizer.name", "interventions"]].drop_duplicates().values.tolist() == [["adam", "none"]]
    for metric in ("accuracy", "dead_frac", "adam_update_norm", "iteration"):
        rows = mem[(mem.phase == "eval") & (mem.metric == metric)]
        assert rows.step.tolist() == [5, 10, 15], metric
    assert mem[mem.metric == "iteration"].value.tolist() == [1, 2, 3]
    assert mem[mem.metric.isin(["accuracy", "dead_frac"])].value.between(0, 1).all()

    br = df[df["env.name"] == "brownian"]
    for phase in ("gd", "brownian"):
        for metric in ("hessian_top_eig", "gradcov_offdiag_mean", "gradcov_neg_frac"):
            assert br[(br.phase == phase) & (br.metric == metric)].step.tolist() == [0, 20, 40], (phase, metric)
    at0 = br[br.step == 0].pivot_table(index="metric", columns="phase", values="value")
    np.testing.assert_allclose(at0["gd"], at0["brownian"])  # one initialisation, one X, one eps
    # eps shared by the inputs: at initialisation the tangent kernel of these images has no
    # negative entry (per-input eps would put neg_frac near 0.5 whatever the parameters)
    assert at0.loc["gradcov_neg_frac", "gd"] < 0.1
    arrays = load_arrays(root / "brownian")
    assert sorted(arrays) == [0, 20, 40]
    for p in ("gd", "brownian"):
        assert arrays[40][f"{p}/gradcov/matrix"].shape == (32, 32)
        assert arrays[40][f"{p}/hessian/density"].shape == arrays[40][f"{p}/hessian/grid"].shape == (64,)


def test_fig1_preset_sweeps_both_optimizers_into_the_report(tmp_path):
    from plasticity_runner.report.figures import figure1_optimizer_instability

    sweep = tmp_path / "sweep"
    tiny = [a for a in MEMORIZATION_TINY if not a.startswith("env=")]
    res = run_cli(
        ["-m", "experiment=fig1_optimizer_instability", "env.dataset=digits", *tiny, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    df = load_sweep(sweep)
    assert sorted(df["optimizer.name"].unique()) == ["adam", "adam_tuned"]
    assert set(df["env.name"]) == {"memorization"}
    result = figure1_optimizer_instability(df)
    assert sorted(result.tables["final"]["iterations"]) == [3, 3]


def test_case_study_validation():
    validate(compose_config(MEMORIZATION_TINY + ["probe.num_inputs=100000"]))  # no replay, no probe: not checked
    with pytest.raises(ConfigError, match="env.iteration_steps"):
        validate(compose_config(MEMORIZATION_TINY + ["env.iteration_steps=0"]))
    with pytest.raises(ConfigError, match="intervention.layer_norm"):
        validate(compose_config(MEMORIZATION_TINY + ["intervention=[layer_norm]"]))
    with pytest.raises(ConfigError, match="env.measure_every_steps"):
        validate(compose_config(BROWNIAN_TINY + ["env.measure_every_steps=-1"]))
    # C_k of the case study is on the probe loss of 4.2, never the TD loss the config defaults to
    assert compose_config(BROWNIAN_TINY).diagnostics.gradcov.loss.value == "perturbation_shared"
    with pytest.raises(ConfigError, match="diagnostics.gradcov.loss"):
        validate(compose_config(["env=brownian"]))
    validate(compose_config(BROWNIAN_TINY + ["diagnostics.gradcov.loss=perturbation"]))


def test_finished_run_is_kept_and_interrupted_run_starts_over(tmp_path):
    cfg = compose_config(MEMORIZATION_TINY)
    run_dir = tmp_path / "run"
    first = train(cfg, run_dir)
    assert train(cfg, run_dir)["already_finished"]
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "running"}))
    stale = run_dir / "metrics" / "step_0000099999.parquet"
    stale.write_bytes((run_dir / "metrics" / "step_0000000005.parquet").read_bytes())
    again = train(cfg, run_dir)
    assert again["status"] == "complete" and again["run_id"] == first["run_id"] and not stale.exists()
    assert again["accuracy"] == first["accuracy"]  # same seed, same numbers
    with pytest.raises(ConfigError):
        train(compose_config(MEMORIZATION_TINY + ["env.batch_size=8"]), run_dir)


# ------------------------------------------------------------------------- the paper's finding

# Figure 1 at a CPU-sized budget: scikit-learn digits (all 1797 images), MLP 2 x 256, minibatch 128,
# 8 iterations of 2000 steps (3 to 14 minutes on 2 shared cores for both optimizers). The thresholds
# state the paper's claim, not the numbers measured. Measured (seed 0), per iteration:
#   adam:       accuracy .96 .99 .98 .85 .64 .38 .17 .16   dead_frac .09 .08 .12 .21 .28 .37 .45 .48
#   adam_tuned: accuracy .17 .15 .18 .19 .19 .20 .20 .20   dead_frac .05 .04 .05 .06 .07 .06 .06 .04
# (single-threaded runs differ in the second decimal: float reductions change order with the threads)
FIG1_CPU = [
    "experiment=fig1_optimizer_instability",
    "env.dataset=digits",
    "env.num_images=1797",
    "architecture.width=256",
    "env.batch_size=128",
    "env.iteration_steps=2000",
    "env.num_iterations=8",
    "device=cpu",
    "progress=none",
]


@pytest.fixture(scope="module")
def fig1_runs(tmp_path_factory):
    out = {}
    for opt in ("adam", "adam_tuned"):
        summary = train(compose_config(FIG1_CPU + [f"optimizer={opt}"]), tmp_path_factory.mktemp(opt))
        print(opt, "accuracy", np.round(summary["accuracy"], 3), "dead_frac", np.round(summary["dead_frac"], 3))
        out[opt] = summary
    return out


@pytest.mark.slow
def test_fig1_default_adam_loses_its_accuracy(fig1_runs):
    acc = fig1_runs["adam"]["accuracy"]
    assert acc[-1] < 0.5 * max(acc)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured: dead fraction of the default Adam rises .09 -> .48 over 8 iterations, "
    "short of 'most units' (> .5) at this budget",
    strict=False,
)
def test_fig1_default_adam_loses_most_live_units(fig1_runs):
    assert fig1_runs["adam"]["dead_frac"][-1] > 0.5


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured: the tuned Adam fits none of the labellings (accuracy .15-.20 over 8 "
    "iterations of 2000 steps): eps_root = 1e-3 exceeds v_hat (gradient RMS <= 1e-2 for 99% "
    "of the parameters), so its steps are ~100x smaller than the default's",
    strict=False,
)
def test_fig1_tuned_adam_keeps_fitting(fig1_runs):
    acc = fig1_runs["adam_tuned"]["accuracy"]
    assert min(acc[1:]) > 0.9
