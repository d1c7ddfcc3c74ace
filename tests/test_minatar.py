"""MinAtar: the vector env against the ``minatar`` package's own Environment, the paper's network and
optimizer, a real run through pauses with every diagnostic, evaluation and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minatar import Environment

from plasticity_runner.envs.minatar import CHANNELS, GAMES, MinAtarEnvConfig, MinAtarVectorEnv
from plasticity_runner.evaluation import evaluate_agent
from plasticity_runner.nets import build_network
from plasticity_runner.optim import RMSProp
from plasticity_runner.seeding import stream_seed
from plasticity_runner.trainer import build_train_state, train

from .conftest import TINY, make_cfg
from .test_resume import assert_crash_then_restart_equals_uninterrupted
from .test_trainer import values

# the shared tiny budget without its MLP width (architecture=minatar_cnn has no width)
MINATAR_TINY = [o for o in TINY if not o.startswith("architecture.")] + [
    "env=minatar",
    "architecture.channels=4",
    "architecture.hidden=16",
]


def reference_games(game: str, seed: int, n: int, **kwargs) -> list[Environment]:
    """The package's own environments, seeded as the vector env documents (stream 0, copy i)."""
    envs = []
    for i in range(n):
        env = Environment(game, **kwargs)
        env.seed(stream_seed(seed, "minatar", 0, i) % 2**32)
        env.reset()
        envs.append(env)
    return envs


def channels_first(state: np.ndarray, channels: int) -> np.ndarray:
    out = np.zeros((channels, 10, 10), dtype=np.float32)
    out[: state.shape[2]] = state.transpose(2, 0, 1)
    return out


@pytest.mark.parametrize("game", GAMES)
def test_observations_and_rewards_match_the_package_step_by_step(game):
    """A fixed action sequence through 3 copies: every o_tm1, r_t, discount_t, o_t and next observation
    equals what minatar.Environment gives (sticky actions and difficulty ramping on, resets included)."""
    seed, n, steps = 7, 3, 400
    env = MinAtarVectorEnv(MinAtarEnvConfig(game=game, num_envs=n), "cpu", seed)
    ref = reference_games(game, seed, n, sticky_action_prob=0.1, difficulty_ramping=True)
    actions = np.random.RandomState(123).randint(6, size=(steps, n))
    obs = env.reset()
    assert obs.shape == (n, CHANNELS[game], 10, 10) and obs.dtype == torch.float32
    ref_obs = np.stack([channels_first(r.state(), CHANNELS[game]) for r in ref])
    np.testing.assert_array_equal(obs.numpy(), ref_obs)
    returns, ref_returns, finished = [], [], 0
    ref_ret = np.zeros(n)
    for t in range(steps):
        result = env.step(torch.from_numpy(actions[t]))
        rec = result.record
        np.testing.assert_array_equal(rec["o_tm1"].float().numpy(), ref_obs)
        for i, r in enumerate(ref):
            reward, terminal = r.act(int(actions[t, i]))
            np.testing.assert_array_equal(rec["o_t"][i].float().numpy(), channels_first(r.state(), CHANNELS[game]))
            assert rec["r_t"][i].item() == reward and result.reward[i].item() == reward
            assert rec["discount_t"][i].item() == (0.0 if terminal else 1.0)
            ref_ret[i] += reward
            if terminal:
                ref_returns.append(ref_ret[i])
                ref_ret[i] = 0.0
                r.reset()
        ref_obs = np.stack([channels_first(r.state(), CHANNELS[game]) for r in ref])
        np.testing.assert_array_equal(result.obs.numpy(), ref_obs)
        returns.extend(result.info["episode_returns"].tolist())
        finished += len(result.info["episode_envs"])
    assert returns == ref_returns and finished == len(ref_returns)


def test_minimal_action_set_maps_to_the_games_actions():
    env = MinAtarVectorEnv(MinAtarEnvConfig(game="breakout", minimal_action_set=True), "cpu", 0)
    assert env.num_actions == 3 and env.action_set == Environment("breakout").minimal_action_set()
    ref = reference_games("breakout", 0, 1)
    env.reset()
    for k in [0, 1, 2, 2, 1, 0, 2] * 20:
        result = env.step(torch.tensor([k]))
        reward, terminal = ref[0].act(env.action_set[k])
        np.testing.assert_array_equal(result.record["o_t"][0].float().numpy(), channels_first(ref[0].state(), 4))
        if terminal:
            ref[0].reset()


def test_bad_settings_are_refused_with_the_key():
    with pytest.raises(ValueError, match="env.game"):
        MinAtarVectorEnv(MinAtarEnvConfig(game="pong"), "cpu", 0)
    with pytest.raises(ValueError, match="env.frame_skip"):
        MinAtarVectorEnv(MinAtarEnvConfig(frame_skip=4), "cpu", 0)
    assert MinAtarVectorEnv(MinAtarEnvConfig(game="SpaceInvaders"), "cpu", 0).minatar_game == "space_invaders"


def test_replay_returns_the_stored_transitions():
    env = MinAtarVectorEnv(MinAtarEnvConfig(game="seaquest", num_envs=2), "cpu", 0)
    replay = env.make_replay(8)
    env.reset()
    records = []
    for t in range(4):
        result = env.step(torch.tensor([t % 6, (t + 3) % 6]))
        replay.add(result.record)
        records.append(result.record)
    assert replay.size == 8
    batch = replay.sample(64, torch.Generator().manual_seed(0))
    stored = {(r["o_tm1"][i].numpy().tobytes(), int(r["a_tm1"][i])) for r in records for i in range(2)}
    assert batch.o_tm1.dtype == torch.float32 and batch.o_tm1.shape == (64, 10, 10, 10)
    for j in range(64):
        assert (batch.o_tm1[j].bool().numpy().tobytes(), int(batch.a_tm1[j])) in stored


def test_env_state_dict_continues_bit_for_bit():
    cfg = MinAtarEnvConfig(game="asterix", num_envs=2)
    a = MinAtarVectorEnv(cfg, "cpu", 3)
    a.reset()
    acts = torch.from_numpy(np.random.RandomState(0).randint(6, size=(200, 2)))
    for t in range(100):
        a.step(acts[t])
    b = MinAtarVectorEnv(cfg, "cpu", 3)
    b.load_state_dict(a.state_dict())
    for t in range(100, 200):
        ra, rb = a.step(acts[t]), b.step(acts[t])
        assert torch.equal(ra.obs, rb.obs) and torch.equal(ra.reward, rb.reward)
        assert torch.equal(ra.info["episode_returns"], rb.info["episode_returns"])


def test_minatar_cnn_is_the_papers_network():
    """conv 3x3x16 (10x10 -> 8x8), FC 128, linear out: the parameter count of examples/dqn.py's QNetwork."""
    from omegaconf import OmegaConf

    net = build_network(OmegaConf.create(dict(name="minatar_cnn", channels=16, hidden=128)), (4, 10, 10), 6)
    expected = (4 * 9 * 16 + 16) + (16 * 8 * 8 * 128 + 128) + (128 * 6 + 6)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.zeros(2, 4, 10, 10)).shape == (2, 6)
    ln = build_network(
        OmegaConf.create(dict(name="minatar_cnn", channels=16, hidden=128)), (4, 10, 10), 6, layer_norm=True
    )
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in ln.modules()) == 2


def test_rmsprop_eps_outside_root_is_torchs_centred_rmsprop():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours = RMSProp([a], lr=2.5e-4, decay=0.95, eps=0.01, centered=True, eps_outside_root=True)
    theirs = torch.optim.RMSprop([b], lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    for k in range(20):
        g = torch.randn(5, 3) * (k + 1) * 1e-3
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_preset_is_the_papers_dqn():
    cfg = make_cfg(["experiment=minatar_dqn"], tiny=False)
    a, o = cfg.agent, cfg.optimizer
    assert cfg.env.name == "minatar" and cfg.architecture.name == "minatar_cnn"
    assert (cfg.architecture.channels, cfg.architecture.hidden) == (16, 128)
    assert (a.batch_size, a.replay_capacity, a.target_update_steps, a.learning_starts) == (32, 100_000, 1000, 5000)
    assert (a.epsilon_start, a.epsilon_end, a.epsilon_decay_steps, a.update_every_env_steps) == (1.0, 0.1, 100_000, 1)
    assert a.gamma == 0.99 and not a.double_dqn
    assert (o.name, o.lr, o.decay, o.eps, o.centered, o.eps_outside_root) == ("rmsprop", 2.5e-4, 0.95, 0.01, True, True)
    assert cfg.total_steps + a.learning_starts == 5_000_000
    assert (cfg.env.sticky_action_prob, cfg.env.difficulty_ramping) == (0.1, True)


def test_a_run_through_pauses_with_every_diagnostic_and_evaluation(tmp_path):
    """A tiny real run: probe, statistics, curvature, gradient covariance on MinAtar observations;
    training and evaluation returns logged like Atari's; no Atari human-normalised score."""
    cfg = make_cfg(MINATAR_TINY + ["env.eval_every_steps=20", "env.eval_episodes=2"], tiny=False)
    assert train(cfg, tmp_path)["status"] == "complete"
    df = values(tmp_path)
    names = set(zip(df.phase, df.metric))
    assert ("probe", "probe_loss") in names and ("eval", "episode_return") in names
    assert ("train", "episodes_finished") in names and ("train", "frames") in names
    assert not any(m == "human_normalized_score" for _, m in names)
    for phase, metric in [
        ("stats", "dormant_frac_tau0.025/body.net.1"),
        ("curvature", "hessian_top_eig"),
        ("gradcov", "gradcov_neg_frac"),
    ]:
        assert (phase, metric) in names
    assert np.isfinite(df.value).all()
    env_steps = df[(df.phase == "train") & (df.metric == "env_steps")].value.to_numpy()
    frames = df[(df.phase == "train") & (df.metric == "frames")].value.to_numpy()
    np.testing.assert_array_equal(env_steps, frames)  # no frame skip: a frame is an agent step


def test_evaluation_scores_have_no_atari_reference():
    state = build_train_state(make_cfg(MINATAR_TINY, tiny=False), torch.device("cpu"))
    scores = evaluate_agent(state.env, state.agent, make_cfg(MINATAR_TINY, tiny=False).env, seed=0, stream=1)
    assert "human_normalized_score" not in scores and scores["num_episodes"] == 10


@pytest.mark.parametrize("step", [5, 33])
def test_crash_then_restart_equals_uninterrupted(tmp_path, monkeypatch, step):
    cfg = MINATAR_TINY + ["env.num_envs=2"]
    assert_crash_then_restart_equals_uninterrupted(lambda: make_cfg(cfg, tiny=False), tmp_path, monkeypatch, step)
