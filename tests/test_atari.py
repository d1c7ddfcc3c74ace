"""Atari environment, frame-deduplicating replay and human-normalised scores (fast: tiny budgets)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")

from plasticity_runner.envs.atari import (  # noqa: E402
    ATARI_57,
    AtariEnvConfig,
    AtariVectorEnv,
    human_normalized_score,
    resolve_game,
)
from plasticity_runner.envs.atari_replay import AtariReplay  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's intra-op threads spinning next to ale-py's workers slow both down badly on small machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(game="breakout", num_envs=2, seed=0, **kw):
    return AtariVectorEnv(AtariEnvConfig(game=game, num_envs=num_envs, **kw), "cpu", seed)


def u8(x: torch.Tensor) -> torch.Tensor:
    """float obs in [0, 1] back to the exact uint8 pixels."""
    return torch.round(x * 255).to(torch.uint8)


class Recorder:
    """Runs random actions, adds to a replay and remembers every transition by (tick_t, env)."""

    def __init__(self, env: AtariVectorEnv, replay: AtariReplay, seed: int = 0):
        self.env, self.replay = env, replay
        self.rng = np.random.default_rng(seed)
        self.obs = env.reset()
        self.expected: dict[tuple[int, int], dict] = {}
        self.invalid: set[tuple[int, int]] = set()
        self.results = []

    def step(self):
        a = torch.from_numpy(self.rng.integers(0, self.env.num_actions, self.env.num_envs))
        res = self.env.step(a)
        rec = res.record
        tick = int(rec["tick_t"])
        for e in range(self.env.num_envs):
            key = (tick, e)
            if bool(rec["valid"][e]):
                self.expected[key] = {
                    "o_tm1": u8(self.obs[e]),
                    "o_t": u8(res.obs[e]),
                    "a_tm1": int(a[e]),
                    "r_t": float(rec["r_t"][e]),
                    "discount_t": float(rec["discount_t"][e]),
                }
            else:
                self.invalid.add(key)
        self.replay.add(rec)
        self.results.append((a, res))
        self.obs = res.obs
        return res

    def check_all(self):
        """Every sampleable transition in the replay equals what the env returned."""
        r = self.replay
        flat = torch.from_numpy(np.flatnonzero(r._valid_host.reshape(-1)))
        assert len(flat) == r.size
        # the device weights agree with the host mirror
        assert torch.equal(r.meta[2].reshape(-1).nonzero().flatten(), flat)
        got = r.transitions_u8(flat)
        keys = [(int(r.slot_tick[f // r.num_envs]), f % r.num_envs) for f in flat.tolist()]
        assert not set(keys) & self.invalid
        if not keys:
            return 0
        exp = [self.expected[k] for k in keys]
        for name in ("o_tm1", "o_t"):
            assert torch.equal(got[name], torch.stack([x[name] for x in exp]).reshape(got[name].shape)), name
        for name in ("a_tm1", "r_t", "discount_t"):
            assert got[name].tolist() == [x[name] for x in exp], name
        return len(flat)


def test_shapes_and_dtypes():
    env = make("pong", num_envs=2)
    assert env.num_actions == 6 and env.obs_shape == (4, 84, 84)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.float32
    assert obs.min() >= 0 and obs.max() <= 1 and obs.max() > 0
    assert (obs[:, :3] == 0).all()  # a fresh stack: zeros + the first frame
    res = env.step(torch.zeros(2, dtype=torch.int64))
    assert res.obs.shape == (2, 4, 84, 84) and res.obs.dtype == torch.float32
    assert res.reward.shape == (2,) and res.reward.dtype == torch.float32
    assert torch.equal(res.obs[:, :3], obs[:, 1:])  # the stack shifts by one frame
    for k in ("episode_returns", "episode_lengths", "episode_truncated"):
        assert res.info[k].numel() == 0
    rec = res.record
    assert rec["frame_t"].shape == (2, 84, 84) and rec["frame_t"].dtype == torch.uint8
    assert rec["discount_t"].dtype == torch.float32 and rec["valid"].all()
    replay = env.make_replay(64)
    replay.add(rec)
    batch = replay.sample(5, torch.Generator().manual_seed(0))
    assert batch.o_tm1.shape == (5, 4, 84, 84) and batch.o_tm1.dtype == torch.float32
    assert batch.o_t.shape == (5, 4, 84, 84) and batch.a_tm1.dtype == torch.int64
    assert batch.r_t.shape == (5,) and batch.discount_t.shape == (5,)
    assert 0 <= batch.o_t.min() and batch.o_t.max() <= 1
    assert replay.sample_obs(3, torch.Generator().manual_seed(0)).shape == (3, 4, 84, 84)
    assert isinstance(replay.size, int) and replay.size == 2


def test_replay_reconstructs_stacks_across_resets_and_wrap():
    # short truncation (40 agent steps) forces auto-resets; Breakout adds life losses; capacity 24
    # with 2 envs is a 12-slot ring that wraps many times; an explicit reset() and a replay created
    # mid-game exercise the continuity (context) path.
    env = make("breakout", num_envs=2, max_episode_frames=160)
    rec = Recorder(env, env.make_replay(24))
    seen_autoreset = seen_wrap = 0
    for t in range(200):
        res = rec.step()
        seen_autoreset += int((~res.record["valid"]).sum())
        if t == 90:
            rec.obs = env.reset()  # explicit reset: the next record does not continue the last one
        if t == 150:
            rec.replay = env.make_replay(24)  # fresh replay, mid-game
        n = rec.check_all()
        seen_wrap += rec.replay.cursor >= rec.replay.ring
        assert n <= rec.replay.capacity
    assert seen_autoreset >= 4 and seen_wrap > 0 and len(rec.expected) > 300


def test_autoreset_transitions_never_sampled():
    env = make("pong", num_envs=2, max_episode_frames=24)  # a game lasts 6 agent steps
    rec = Recorder(env, env.make_replay(16))
    for _ in range(40):
        rec.step()
    r = rec.replay
    assert r.size < r.capacity  # some slots hold the invalid auto-reset steps
    idx = r.sample_indices(4000, torch.Generator().manual_seed(1))
    slots, envs = (idx // r.num_envs).numpy(), (idx % r.num_envs).numpy()
    assert r._valid_host[slots, envs].all()
    keys = {(int(r.slot_tick[s]), int(e)) for s, e in zip(slots, envs)}
    assert not keys & rec.invalid and keys <= set(rec.expected)
    assert len(keys) == r.size  # every valid transition gets drawn: uniform over all of them
    # truncation: discount stays 1, and the next step (auto-reset) is invalid
    trunc_steps = [i for i, (_, res) in enumerate(rec.results) if res.info["episode_truncated"].numel()]
    assert trunc_steps
    i = trunc_steps[0]
    assert rec.results[i][1].record["discount_t"].eq(1).all()
    assert not rec.results[i + 1][1].record["valid"].any()
    assert rec.results[i][1].info["episode_lengths"].tolist() == [6, 6]


def test_life_loss_terminal_and_full_game_returns():
    env = make("breakout", num_envs=1, seed=3)
    rng = np.random.default_rng(0)
    env.reset()
    raw, life_losses, lives_prev = [], 0, None
    for _ in range(3000):
        res = env.step(torch.from_numpy(rng.integers(0, env.num_actions, 1)))
        rec = res.record
        raw.append(float(res.reward[0]))
        assert float(rec["r_t"][0]) == np.sign(raw[-1])
        lives = int(env._lives[0])
        if lives_prev is not None and lives < lives_prev and rec["valid"][0]:
            assert float(rec["discount_t"][0]) == 0.0  # terminal for learning
            if lives > 0:
                life_losses += 1
                assert res.info["episode_returns"].numel() == 0  # the game goes on
        elif res.info["episode_returns"].numel() == 0:
            assert float(rec["discount_t"][0]) == 1.0
        lives_prev = lives
        if res.info["episode_returns"].numel():
            assert float(rec["discount_t"][0]) == 0.0 and not res.info["episode_truncated"][0]
            assert float(res.info["episode_returns"][0]) == sum(raw)  # unclipped, over all lives
            assert int(res.info["episode_lengths"][0]) == len(raw)
            nxt = env.step(torch.zeros(1, dtype=torch.int64))
            assert not nxt.record["valid"][0] and float(nxt.reward[0]) == 0.0
            assert (nxt.obs[0, :3] == 0).all()
            break
    else:
        pytest.fail("no game over in 3000 steps")
    assert life_losses >= 3

    # without terminal_on_life_loss only the game over is terminal
    env = make("breakout", num_envs=1, seed=3, terminal_on_life_loss=False)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(len(raw) - 1):
        assert float(env.step(torch.from_numpy(rng.integers(0, env.num_actions, 1))).record["discount_t"][0]) == 1.0


def test_determinism_and_seeds():
    def run(seed):
        env = make("breakout", num_envs=2, seed=seed)
        out = [env.reset()]
        for i in range(30):
            out.append(env.step(torch.tensor([i % 4, (i + 1) % 4])).obs)
        return torch.stack(out)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _roundtrip(state):
    """Through torch.save and the checkpoint's loader (weights_only), as a checkpoint would go."""
    from plasticity_runner.checkpoint import load_bundle

    buf = io.BytesIO()
    torch.save({"state": state}, buf)
    buf.seek(0)
    return load_bundle(buf, "cpu")["state"]


def test_resume_is_exact():
    # Random Breakout games end (game over) at different steps in the two copies. Checkpoint at a
    # step where one copy's game just ended (its new game starts at the next step) and the other
    # copy is mid-game; then compare everything with a resumed pair.
    env = make("breakout", num_envs=2, seed=1, max_episode_frames=1200)
    replay = env.make_replay(64)
    rng = np.random.default_rng(0)
    actions = [torch.from_numpy(rng.integers(0, env.num_actions, 2)) for _ in range(1200)]
    env.reset()
    t = 0
    while True:
        res = env.step(actions[t])
        replay.add(res.record)
        t += 1
        lengths = env._ep_length
        if env._ended.any() and not env._ended.all() and lengths.min() > 0 and lengths[0] != lengths[1]:
            break  # staggered games: the re-play starts the shorter one later
    env_state, replay_state = _roundtrip(env.state_dict()), _roundtrip(replay.state_dict())
    obs_at_ckpt = env.obs

    env2 = make("breakout", num_envs=2, seed=123, max_episode_frames=1200)  # seed is overridden
    replay2 = env2.make_replay(64)
    env2.reset()  # as a trainer would before loading
    replay2.load_state_dict(replay_state)
    env2.load_state_dict(env_state)
    assert torch.equal(env2.obs, obs_at_ckpt)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for k in range(t, t + 100):
        r1, r2 = env.step(actions[k]), env2.step(actions[k])
        replay.add(r1.record)
        replay2.add(r2.record)
        assert torch.equal(r1.obs, r2.obs) and torch.equal(r1.reward, r2.reward)
        for key in ("r_t", "discount_t", "valid", "ep_step_t", "frame_t"):
            assert torch.equal(r1.record[key], r2.record[key]), key
        for key in r1.info:
            assert torch.equal(r1.info[key], r2.info[key]), key
        assert replay.cursor == replay2.cursor and replay.size == replay2.size
        if k % 5:
            continue
        b1, b2 = replay.sample(8, g1), replay2.sample(8, g2)
        for f in ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t"):
            assert torch.equal(getattr(b1, f), getattr(b2, f)), f
    assert env.episodes_finished == env2.episodes_finished >= 2
    obs = replay.sample_obs(16, torch.Generator().manual_seed(7))
    assert torch.equal(obs, replay2.sample(16, torch.Generator().manual_seed(7)).o_tm1)

    # a state from before the first reset restores the seed stream only
    fresh = make("breakout", num_envs=2, seed=5)
    state = fresh.state_dict()
    other = make("breakout", num_envs=2, seed=6)
    other.load_state_dict(state)
    with pytest.raises(RuntimeError, match="reset"):
        other.step(torch.zeros(2, dtype=torch.int64))
    assert torch.equal(other.reset(), fresh.reset())
    with pytest.raises(ValueError):
        make("pong", num_envs=2).load_state_dict(state)


def test_eval_env_independent_stream():
    env = make("pong", num_envs=1, seed=0)
    ev = env.make_eval_env(num_envs=3)
    assert ev.num_envs == 3 and ev.game == "pong"
    assert ev.reset().shape == (3, 4, 84, 84)


def test_human_normalized_score():
    assert human_normalized_score("pong", 0.0) == pytest.approx((0.0 + 20.7) / (14.6 + 20.7))
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score("MsPacman", 307.3) == pytest.approx(0.0)
    assert human_normalized_score("skiing", -10000.0) == pytest.approx((-10000.0 + 17098.1) / (-4336.9 + 17098.1))
    assert len(ATARI_57) == 57
    with pytest.raises(KeyError):
        human_normalized_score("tetris", 1.0)  # a ROM ale-py ships, not a benchmark game


def test_all_57_games_resolve_and_unknown_game_lists_close_matches():
    assert all(resolve_game(g) == g for g in ATARI_57)
    assert resolve_game("MontezumaRevenge") == "montezuma_revenge"
    assert resolve_game("ALE/UpNDown-v5") == "up_n_down"
    with pytest.raises(ValueError, match="close matches: pong"):
        resolve_game("Pongg")
    with pytest.raises(ValueError, match="ms_pacman"):
        make("MsPackman")


def test_replay_memory_budget():
    budget = AtariReplay.memory_bytes(100_000, num_envs=1)
    assert budget == (100_000 + 4 + 1) * 84 * 84 + (100_000 + 4) * 17
    assert budget <= 1e9
    assert AtariReplay.memory_bytes(100_000, num_envs=8) <= 1e9
    small = AtariReplay(100, num_envs=3)
    assert small.nbytes() == AtariReplay.memory_bytes(100, num_envs=3) and small.capacity == 102
