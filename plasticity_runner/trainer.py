"""The training loop: act, store, learn; every ``probe.every_steps`` pause for probes and diagnostics.

Reads top to bottom in the order of the paper's protocol (section 5.1, appendix A.2):

1. build the parts from the config: environment, replay, Q-network (+ interventions), target
   network, optimizer, agent;
2. fill the replay with ``agent.learning_starts`` random-policy transitions;
3. pause at step 0 (the probe of the initial parameters, P(theta_0));
4. for each training step: epsilon-greedy act in the vector env, store, sample a batch, one
   optimizer step on the TD loss (eq. 1), copy the target network every ``target_update_steps``;
5. pause every ``probe.every_steps`` and at the end: run the probes on a copy of the state and
   write one metrics shard.

A *step* is one optimizer step; each step also steps the vector environment
``agent.update_every_env_steps`` times (``env.num_envs`` transitions each).
"""

from __future__ import annotations

import copy
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import interventions as interventions_lib
from .agents.dqn import DQNAgent, epsilon_at
from .config import validate
from .envs import make_env
from .metrics import MetricsWriter, write_run_metadata
from .nets import build_network
from .optim import build_optimizer
from .probes.plasticity import plasticity_probe

log = logging.getLogger("plasticity_runner")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    name = str(getattr(name, "value", name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunState:
    """Everything the loop mutates; what a checkpoint must hold."""

    env: Any
    replay: Any
    agent: DQNAgent
    act_generator: torch.Generator
    replay_generator: torch.Generator
    obs: torch.Tensor
    step: int = 0
    build_fresh: Any = None
    interventions: list = field(default_factory=list)


def build_run(cfg: DictConfig, device: torch.device) -> RunState:
    """Build every part from the config (explicit composition: nothing hidden in globals)."""
    seed_everything(int(cfg.seed))
    env = make_env(cfg.env, device, seed=int(cfg.seed))
    interventions = interventions_lib.build_interventions(cfg.intervention)
    net_options = interventions_lib.network_options(interventions)

    def build_fresh() -> torch.nn.Module:
        return build_network(cfg.architecture, env.obs_shape, env.num_actions, **net_options).to(device)

    online = build_fresh()
    target = copy.deepcopy(online)
    optimizer = build_optimizer(cfg.optimizer, online.parameters())
    agent = DQNAgent(cfg.agent, online, target, optimizer, interventions, env.num_actions)
    replay = env.make_replay(int(cfg.agent.replay_capacity))
    act_generator = torch.Generator(device).manual_seed(int(cfg.seed) + 1)
    replay_generator = torch.Generator(device).manual_seed(int(cfg.seed) + 2)
    return RunState(
        env=env,
        replay=replay,
        agent=agent,
        act_generator=act_generator,
        replay_generator=replay_generator,
        obs=env.reset(),
        build_fresh=build_fresh,
        interventions=interventions,
    )


def prefill(state: RunState, num_transitions: int) -> None:
    """Fill the replay with uniformly random actions until it holds ``num_transitions``."""
    env = state.env
    while state.replay.size < num_transitions:
        actions = torch.randint(
            env.num_actions, (env.num_envs,), generator=state.act_generator, device=state.obs.device
        )
        result = env.step(actions)
        state.replay.add(result.record)
        state.obs = result.obs


def probe_seed(seed: int, step: int) -> int:
    """A seed for the probe of one pause, independent of the training RNG streams."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + 17) % (2**62)


class Progress:
    """A tqdm bar on a terminal (or when asked); plain log lines otherwise (SLURM logs)."""

    def __init__(self, mode: str, total: int, initial: int):
        mode = str(getattr(mode, "value", mode))
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total = mode, total
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def update(self, step: int, n: int, **values: float) -> None:
        self.postfix.update({k: f"{v:.4g}" for k, v in values.items()})
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(self.postfix, refresh=False)
        elif self.mode == "log":
            fields = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            log.info("step %d/%d %s", step, self.total, fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pause(cfg: DictConfig, state: RunState, writer: MetricsWriter) -> dict[str, float]:
    """Probes of one pause, on copies of the training state; returns the probe scalars."""
    out: dict[str, float] = {}
    if cfg.probe.enabled:
        t0 = time.perf_counter()
        seed = probe_seed(cfg.seed, state.step)
        generator = torch.Generator(state.obs.device).manual_seed(seed)
        inputs = state.replay.sample_obs(int(cfg.probe.num_inputs), generator)
        result = plasticity_probe(
            state.agent.online, state.build_fresh, cfg.optimizer, inputs, cfg.probe, seed
        )
        out = result.scalars()
        writer.add_many(state.step, "probe", out)
        writer.add_array("probe/curve_loss", result.curve.cpu().numpy())
        writer.add_array("probe/curve_steps", result.curve_steps.cpu().numpy())
        writer.add(state.step, "timing", "probe_s", time.perf_counter() - t0)
    return out


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run one experiment into ``run_dir``; returns a summary (final probe scalars, paths).

    ``cfg`` is the composed config (``compose()`` in tests, ``@hydra.main`` from the CLI).
    """
    validate(cfg)
    run_dir = Path(run_dir)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    state = build_run(cfg, device)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    config["interventions"] = interventions_lib.active_names(state.interventions)
    run_id = write_run_metadata(run_dir, config, extra={"device": str(device), "status": "running"})
    writer = MetricsWriter(run_dir, run_id)
    agent_cfg, total = cfg.agent, int(cfg.total_steps)
    log.info("run %s on %s: %d training steps; outputs in %s", run_id, device, total, run_dir.resolve())

    prefill(state, int(agent_cfg.learning_starts))
    summary = {"probe": run_pause(cfg, state, writer)}
    writer.flush(state.step)

    progress = Progress(cfg.progress, total, state.step)
    loss_sum = torch.zeros((), device=device)
    reward_sum = torch.zeros((), device=device)
    window_start, t_window = state.step, time.perf_counter()
    env, agent, replay = state.env, state.agent, state.replay
    env_steps_per_update = int(agent_cfg.update_every_env_steps)
    try:
        while state.step < total:
            epsilon = epsilon_at(state.step, agent_cfg)
            for _ in range(env_steps_per_update):
                actions = agent.act(state.obs, epsilon, state.act_generator)
                result = env.step(actions)
                replay.add(result.record)
                state.obs = result.obs
                reward_sum += result.reward.mean()
            batch = replay.sample(int(agent_cfg.batch_size), state.replay_generator)
            loss_sum += agent.learn(batch, state.step + 1)
            state.step += 1
            if state.step % int(agent_cfg.target_update_steps) == 0:
                agent.update_target(state.step)

            at_pause = state.step % int(cfg.probe.every_steps) == 0 or state.step == total
            if state.step % int(cfg.log_every_steps) == 0 or at_pause:
                n = state.step - window_start
                seconds = time.perf_counter() - t_window
                with torch.no_grad():
                    q_mean = agent.online(batch.o_tm1).mean()
                values = {
                    "td_loss": float(loss_sum) / n,
                    "reward_mean": float(reward_sum) / (n * env_steps_per_update),
                    "q_mean": float(q_mean),
                    "epsilon": epsilon,
                }
                writer.add_many(state.step, "train", values)
                # wall-clock values live in phase "timing", the only phase that differs between reruns
                timing = {"train_s": seconds, "steps_per_s": n / max(seconds, 1e-9)}
                writer.add_many(state.step, "timing", timing)
                shown = {"td_loss": values["td_loss"], "steps_per_s": timing["steps_per_s"]}
                if at_pause:
                    summary["probe"] = run_pause(cfg, state, writer) or summary["probe"]
                    writer.flush(state.step)
                    if "probe_loss" in summary["probe"]:
                        shown["probe_loss"] = summary["probe"]["probe_loss"]
                progress.update(state.step, n, **shown)
                loss_sum.zero_(), reward_sum.zero_()
                window_start, t_window = state.step, time.perf_counter()
    finally:
        progress.close()
    write_run_metadata(run_dir, config, extra={"device": str(device), "status": "complete", "steps_done": state.step})
    log.info("run %s complete: metrics in %s", run_id, (run_dir / "metrics").resolve())
    return {"run_id": run_id, "run_dir": str(run_dir), "steps": state.step, **summary}
