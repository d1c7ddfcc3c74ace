"""CartPole in torch against gymnasium's ``CartPole-v1`` step by step, its seeds and checks, and a
real DQN run through pauses with every diagnostic, evaluation and resume."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from plasticity_runner.config import ConfigError, validate
from plasticity_runner.envs import cartpole
from plasticity_runner.envs.cartpole import CartPoleEnvConfig, CartPoleVectorEnv
from plasticity_runner.trainer import train

from .conftest import make_cfg
from .test_resume import assert_crash_then_restart_equals_uninterrupted
from .test_trainer import values

CARTPOLE_TINY = ["env=cartpole", "env.eval_every_steps=20", "env.eval_episodes=2"]


def test_constants_are_cartpole_v1s():
    ref = CartPoleEnv()
    for ours, theirs in [
        ("GRAVITY", "gravity"),
        ("MASSCART", "masscart"),
        ("MASSPOLE", "masspole"),
        ("TOTAL_MASS", "total_mass"),
        ("LENGTH", "length"),
        ("POLEMASS_LENGTH", "polemass_length"),
        ("FORCE_MAG", "force_mag"),
        ("TAU", "tau"),
        ("THETA_THRESHOLD", "theta_threshold_radians"),
        ("X_THRESHOLD", "x_threshold"),
    ]:
        assert getattr(cartpole, ours) == getattr(ref, theirs), ours
    assert ref.kinematics_integrator == "euler"
    assert CartPoleEnvConfig().max_episode_steps == gymnasium.spec("CartPole-v1").max_episode_steps == 500


def test_steps_match_gymnasium_cartpole_v1(device):
    """8 copies through 1200 steps: copies 0-3 act at random (episodes end by termination), copies
    4-7 balance the pole with a linear controller (episodes end by truncation at 500 steps). Each
    copy has a gymnasium ``CartPole-v1`` started from the same state (and restarted from our fresh
    state whenever ours auto-resets) and fed the same actions; states, observations, rewards,
    terminations, truncations and the episode statistics agree. The tolerance covers only the last
    bits of ``sin``/``cos``, which torch and numpy may round differently."""
    n, steps = 8, 1200
    env = CartPoleVectorEnv(CartPoleEnvConfig(num_envs=n), device, seed=11)
    refs = [gymnasium.make("CartPole-v1") for _ in range(n)]

    def restart(i):
        refs[i].reset(seed=i)
        refs[i].unwrapped.state = env.state[i].cpu().numpy().copy()  # our fresh state, float64

    obs = env.reset()
    for i in range(n):
        restart(i)
    rng = np.random.default_rng(0)
    gains = np.array([0.0, 0.0, 1.0, 0.3])  # push towards the side the pole falls to
    ref_returns, ref_lengths, ref_truncated, ref_envs = [], [], [], []
    returns, lengths, truncated, envs = [], [], [], []
    ref_len = np.zeros(n, dtype=np.int64)
    saw = {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        o = obs.cpu().numpy()
        a = np.where(np.arange(n) < 4, rng.integers(0, 2, n), (o @ gains > 0).astype(np.int64))
        result = env.step(torch.from_numpy(a).to(device))
        rec = {k: v.cpu() for k, v in result.record.items() if k != "a_tm1"}
        for i, ref in enumerate(refs):
            ref_obs, reward, term, trunc, _ = ref.step(int(a[i]))
            ref_len[i] += 1
            assert ref_obs.dtype == np.float32 and rec["o_t"][i].dtype == torch.float32
            np.testing.assert_allclose(rec["o_t"][i].numpy(), ref_obs, rtol=1e-6, atol=1e-7)
            assert rec["r_t"][i].item() == reward == 1.0 and result.reward[i].item() == reward
            assert rec["discount_t"][i].item() == (0.0 if term else 1.0)
            if term or trunc:
                saw["terminated" if term else "truncated"] += 1
                ref_returns.append(float(ref_len[i]))
                ref_lengths.append(int(ref_len[i]))
                ref_truncated.append(trunc and not term)
                ref_envs.append(i)
                ref_len[i] = 0
                fresh = env.state[i].cpu()
                assert bool((fresh.abs() <= cartpole.INIT_HIGH).all())  # a new episode from U(-0.05, 0.05)
                restart(i)
            else:
                np.testing.assert_allclose(env.state[i].cpu().numpy(), ref.unwrapped.state, rtol=1e-12, atol=1e-14)
        returns += result.info["episode_returns"].tolist()
        lengths += result.info["episode_lengths"].tolist()
        truncated += result.info["episode_truncated"].tolist()
        envs += result.info["episode_envs"].tolist()
        obs = result.obs
        np.testing.assert_array_equal(obs.cpu().numpy(), env.state.float().cpu().numpy())
    assert saw["terminated"] >= 20 and saw["truncated"] >= 8  # both ways an episode ends were compared
    assert (returns, lengths, truncated, envs) == (ref_returns, ref_lengths, ref_truncated, ref_envs)
    assert env.episodes_finished == len(ref_returns) and env.steps == steps


def test_initial_states_are_uniform_and_every_stream_its_own():
    """Resets draw each variable from U(-0.05, 0.05); the stream is a function of the env seed and
    its number: the same seed repeats it, another seed or an evaluation stream does not."""
    env = CartPoleVectorEnv(CartPoleEnvConfig(num_envs=50_000), "cpu", seed=5)
    s = env.reset().double()
    assert bool((s >= -0.05).all() and (s < 0.05).all())
    assert s.mean(0).abs().max() < 1e-3  # mean 0; standard error 0.1 / sqrt(12 * 50000) = 1.3e-4
    np.testing.assert_allclose(s.std(0).numpy(), 0.1 / np.sqrt(12), rtol=0.02)
    small = CartPoleEnvConfig(num_envs=4)
    first = CartPoleVectorEnv(small, "cpu", seed=5).reset()
    assert torch.equal(first, CartPoleVectorEnv(small, "cpu", seed=5).reset())
    assert not torch.equal(first, CartPoleVectorEnv(small, "cpu", seed=6).reset())
    assert not torch.equal(first, CartPoleVectorEnv(small, "cpu", seed=5).make_eval_env(stream=1).reset())


@pytest.mark.parametrize(
    "override, key",
    [
        ("env.max_episode_steps=0", "env.max_episode_steps"),
        ("env.eval_protocol=frames", "env.eval_protocol"),
        ("env.eval_epsilon=1.5", "env.eval_epsilon"),
        ("agent.target_update_frames=100", "agent.target_update_frames"),  # no frames: schedules in steps
    ],
)
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(["env=cartpole", override]))
    assert info.value.key == key


def test_a_dqn_run_through_pauses_with_every_diagnostic_and_evaluation(tmp_path):
    """A tiny real run on the CLI's config: probe and every diagnostic at each pause, training and
    evaluation returns. Every step pays 1, so a return is the episode's length: a whole number in
    [1, 500]."""
    cfg = make_cfg(CARTPOLE_TINY)
    assert train(cfg, tmp_path)["status"] == "complete"
    df = values(tmp_path)
    names = set(zip(df.phase, df.metric))
    for phase, metric in [
        ("probe", "probe_loss"),
        ("stats", "dormant_frac_tau0.025"),
        ("curvature", "hessian_top_eig"),
        ("gradcov", "gradcov_neg_frac"),
        ("dynamics", "grad_norm_eval"),
        ("train", "episodes_finished"),
        ("train", "episode_return"),
        ("eval", "episode_return"),
        ("eval", "num_episodes"),
    ]:
        assert (phase, metric) in names, (phase, metric)
    assert sorted(set(df[df.phase == "probe"].step)) == [0, 20, 40]
    assert ("train", "frames") not in names
    assert np.isfinite(df.value).all()
    for phase in ("train", "eval"):
        ret = df[(df.phase == phase) & (df.metric == "episode_return")].value.to_numpy()
        assert len(ret) and ((ret >= 1) & (ret <= 500)).all()
    evals = df[(df.phase == "eval") & (df.metric == "episode_return")].value.to_numpy()
    assert (evals == np.round(evals * 2) / 2).all()  # the mean of 2 whole-number returns
    assert (df[(df.phase == "eval") & (df.metric == "num_episodes")].value == 2).all()


@pytest.mark.parametrize("step", [5, 33])
def test_crash_then_restart_equals_uninterrupted(tmp_path, monkeypatch, step):
    cfg = CARTPOLE_TINY + ["env.num_envs=2"]
    assert_crash_then_restart_equals_uninterrupted(lambda: make_cfg(cfg), tmp_path, monkeypatch, step)


def test_preset_is_cleanrls_dqn_in_our_units():
    """experiment=cartpole_dqn: CleanRL dqn.py's defaults, counted in env steps there, in training steps here."""
    cfg = make_cfg(["experiment=cartpole_dqn"], tiny=False)
    validate(cfg)
    a, o = cfg.agent, cfg.optimizer
    every = a.update_every_env_steps
    assert cfg.env.name == "cartpole" and every == 10
    assert a.learning_starts + cfg.total_steps * every == 500_000  # total_timesteps
    assert a.target_update_steps * every == 500  # target_network_frequency (env steps)
    assert a.learning_starts + a.epsilon_decay_steps * every == 0.5 * 500_000  # exploration_fraction 0.5
    assert (a.batch_size, a.replay_capacity, a.gamma, a.epsilon_start, a.epsilon_end) == (128, 10_000, 0.99, 1.0, 0.05)
    assert (o.name, o.lr, o.eps) == ("adam", 2.5e-4, 1e-8) and not a.double_dqn
