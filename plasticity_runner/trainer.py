"""The training loop: act, store, learn; every ``probe.every_steps`` pause for probes and diagnostics.

Reads top to bottom in the order of the paper's protocol (section 5.1, appendix A.2):

1. build the parts from the config: environment, replay, Q-network (+ interventions), target
   network, optimizer, agent;
2. fill the replay with ``agent.learning_starts`` random-policy transitions;
3. pause at step 0 (the probe of the initial parameters, P(theta_0));
4. for each training step: epsilon-greedy act in the vector env, store, sample a batch, one
   optimizer step on the TD loss (eq. 1) (``learn_step``); then the interventions' after-step
   hooks and the target-network copy with its hooks when due (``finish_step``);
5. every ``log_every_steps``, a log point (``LogWindow`` holds the sums since the last one):
   ``measure`` the window (the only host reads), stop if it ``diverged`` (``on_divergence``),
   ``evaluate`` when due; then ``pause_around_hooks``: every ``probe.every_steps`` and at the end,
   the probes and diagnostics on copies of the network as trained, between ``learn_step`` and
   ``finish_step`` (``probe.at`` ``before_interventions``; ``after_interventions`` runs them after
   ``finish_step``); ``end_window`` (the interventions' counters, after their hooks); at a pause,
   the metrics shard and the checkpoint (of the state after ``finish_step``).

The training-dynamics tracker (``diagnostics.dynamics``) follows the same steps: ``learn_step``
adds each step's gradient norms on the device, ``measure`` reads the window, ``end_window`` starts
the next window from the parameters as the hooks left them.

With ``speed.step_graph`` (the classification MDPs and CartPole) ``learn_step`` is
``step_graph.StepGraph.learn_step``: the same step as one compiled function, with the same random
streams; everything else in this loop is unchanged.

A *step* is one optimizer step (one update, on its own sampled batch); each step also steps the
vector environment ``agent.update_every_env_steps`` times (``env.num_envs`` transitions each). With
``agent.replay_ratio`` K > 1 (K updates per environment step; ``update_every_env_steps`` is then 1)
only the first step of every K steps the environment: after ``s`` steps the environment has been
stepped ``ceil(s / K)`` times (``env_steps_done``). Everything counted in steps still counts updates:
``total_steps``, ``probe.every_steps``, ``log_every_steps``, ``agent.target_update_steps``,
``agent.epsilon_decay_steps`` and the interventions' periods.

``train`` is the way in (the CLI calls it): it runs ``run_dqn``, this loop, for every env that
names no program of its own; the run directory's lock, config check and ``run.json`` around it are
``lifecycle``'s.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, evaluation, fastpath, lifecycle, registry, seeding, status_file, step_graph
from . import interventions as interventions_lib
from .agents.dqn import LOSS_TOTAL, PENALTY, TD_LOSS, DQNAgent, epsilon_at, frame_clock, target_update_due
from .config import validate
from .envs import make_env, schedule
from .envs.base import return_range
from .envs.datasets import check_data
from .errors import ConfigError, choice
from .evaluation import evaluate_agent
from .lifecycle import check_parameter_memory
from .nets import build_network
from .optim import build_optimizer
from .preemption import PreemptionGuard
from .probes.dynamics import DynamicsTracker
from .probes.pause import run_pause
from .progress import Progress
from .seeding import env_seed, eval_seed, seed_everything
from .train_state import TrainState

log = logging.getLogger("plasticity_runner")

# What the loop writes at each log point (phase ``train``); the report imports these names. The
# training loss's parts are the agent's (``DQNAgent.loss_names``): ``td_loss`` the TD term alone
# (mean over the window's steps of the batch-mean TD loss, on the scale the agent minimises it:
# eq. 1's squared TD error, ``agent.td_loss_scale * td^2``, or the two-hot cross-entropy),
# ``penalty/<intervention>`` each intervention's penalty, ``loss_total`` their sum (what the optimizer
# minimised).
TRAIN_PHASE, TIMING_PHASE, REWARD_MEAN = "train", "timing", "reward_mean"
LOG_POINT_SCALARS = (TD_LOSS, f"{PENALTY}/*", LOSS_TOTAL, REWARD_MEAN, "q_mean", "epsilon")


def build_train_state(cfg: DictConfig, device: torch.device) -> TrainState:
    """Build every part from the config (explicit composition: nothing hidden in globals)."""
    seed_everything(int(cfg.seed))
    env = make_env(cfg.env, device, seed=env_seed(cfg.seed))
    interventions = interventions_lib.build_interventions(cfg.intervention)
    net_options = interventions_lib.network_options(interventions)

    returns = return_range(getattr(env, "reward_range", None), float(cfg.agent.gamma))  # the two-hot support's

    def build_net() -> torch.nn.Module:
        return build_network(cfg.architecture, env.obs_shape, env.num_actions, returns=returns, **net_options)

    def build_fresh() -> torch.nn.Module:
        return build_net().to(device)

    check_parameter_memory(cfg, build_net, device)  # on the meta device: before any of it is allocated
    online = build_fresh()
    target = copy.deepcopy(online)
    optimizer = build_optimizer(cfg.optimizer, online.parameters())
    agent = DQNAgent(
        cfg.agent,
        online,
        target,
        optimizer,
        interventions,
        env.num_actions,
        build_fresh=build_fresh,
        seed=int(cfg.seed),
    )
    replay = env.make_replay(int(cfg.agent.replay_capacity))
    agent.networks.replay = replay  # read-only for the interventions (C-CHAIN's reference observations)
    dyn = cfg.diagnostics.dynamics
    dynamics = DynamicsTracker(online, bool(dyn.log_point_metrics)) if dyn.enabled else None  # theta_0: as built
    act_generator = seeding.generator(device, cfg.seed, "act")
    replay_generator = seeding.generator(device, cfg.seed, "replay")
    return TrainState(
        env=env,
        replay=replay,
        agent=agent,
        act_generator=act_generator,
        replay_generator=replay_generator,
        obs=env.reset(),
        build_fresh=build_fresh,
        interventions=interventions,
        clock=frame_clock(cfg),
        dynamics=dynamics,
    )


def prefill(state: TrainState, num_transitions: int) -> None:
    """Fill the replay with uniformly random actions until it holds ``num_transitions``."""
    env = state.env
    while state.replay.size < num_transitions:
        actions = torch.randint(
            env.num_actions, (env.num_envs,), generator=state.act_generator, device=state.obs.device
        )
        result = env.step(actions)
        state.replay.add(result.record)
        state.obs = result.obs


def plain(node: DictConfig) -> SimpleNamespace:
    """A config group as a plain namespace (resolved, enums as strings), for reads in the hot loop."""
    return SimpleNamespace(**OmegaConf.to_container(node, resolve=True, enum_to_str=True))


def env_steps_done(step: int, agent_cfg: Any) -> int:
    """Vector-env steps taken by the first ``step`` training steps (the prefill not counted):
    ``ceil(step / replay_ratio) * update_every_env_steps``."""
    ratio = int(agent_cfg.replay_ratio)
    return -(-int(step) // ratio) * int(agent_cfg.update_every_env_steps)


def learn_step(state: TrainState, agent_cfg: Any, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The first part of a training step: act and store (``update_every_env_steps`` times; with
    ``replay_ratio`` K > 1 only in the first of every K steps), then one optimizer step on a fresh
    batch (``state.step`` advances), without the step's intervention hooks (``finish_step``).
    Its three parts are ``collect``, ``DQNAgent.learn`` and ``after_learn`` (a population runs the
    middle one for all its members at once).

    Returns the detached loss parts (``DQNAgent.loss_terms``, named by ``agent.loss_names``), the
    summed mean reward of the env steps (device tensors: no host sync) and the batch learned from."""
    reward, batch = collect(state, agent_cfg, epsilon)
    loss = state.agent.learn(batch, state.step + 1, run_hooks=False)
    after_learn(state)
    return loss, reward, batch


def collect(state: TrainState, agent_cfg: Any, epsilon: float) -> tuple[torch.Tensor, Any]:
    """Act and store (``learn_step``'s first part), then sample the step's batch; returns the summed
    mean reward of the env steps (a device tensor) and the batch."""
    env, agent, replay = state.env, state.agent, state.replay
    reward = torch.zeros((), device=state.obs.device)
    acts = state.step % int(agent_cfg.replay_ratio) == 0
    for _ in range(int(agent_cfg.update_every_env_steps) if acts else 0):
        actions = agent.act(state.obs, epsilon, state.act_generator)
        result = env.step(actions)
        replay.add(result.record)
        state.obs = result.obs
        reward += result.reward.mean()
        if "episode_returns" in result.info:  # host tensors (a sync only where the env makes one: CartPole on a GPU)
            state.episode_returns.extend(result.info["episode_returns"].tolist())
    return reward, replay.sample(int(agent_cfg.batch_size), state.replay_generator)


def after_learn(state: TrainState) -> None:
    """After the optimizer step (``learn_step``'s last part): the training-dynamics tracker adds the
    step's gradient norms (on the device), and the step counter advances."""
    if state.dynamics is not None:  # the step's gradients, summed per layer on the device (no host read)
        state.dynamics.after_backward(state.agent.online)
    state.step += 1


def finish_step(state: TrainState, agent_cfg: Any) -> None:
    """The rest of training step ``state.step``: the interventions' after-step hooks, then the
    target-network copy and its hooks when due (the order of ``interventions/__init__.py``)."""
    state.agent.after_step(state.step)
    if target_update_due(state.step, agent_cfg, state.clock):  # every target_update_steps or _frames
        state.agent.update_target(state.step)
    schedule.after_step(state)  # a chain (env.schedule) switches segments after the step that closes one


def episode_and_frame_counts(cfg: DictConfig, state: TrainState) -> dict[str, float]:
    """Environment steps (transitions) and, for an env with frames (Atari), emulator frames done so
    far; for an episodic env (registered ``episodic=True``), the games finished since the last log
    point and their mean return (absent when none finished)."""
    agent_cfg, num_envs = cfg.agent, int(cfg.env.num_envs)
    prefill_steps = -(-int(agent_cfg.learning_starts) // num_envs)  # ceil: vector steps of the prefill
    env_steps = (prefill_steps + env_steps_done(state.step, agent_cfg)) * num_envs
    out = {"env_steps": float(env_steps)}
    frame_skip = OmegaConf.select(cfg, "env.frame_skip")
    if frame_skip:
        out["frames"] = float(env_steps * int(frame_skip))
    out.update(schedule.current_segment(state))  # train/segment of a chain (env.schedule)
    if registry.get("env", cfg.env.name).spec.episodic:  # an env whose games end (registered so)
        out["episodes_finished"] = float(len(state.episode_returns))
        if state.episode_returns:
            out["episode_return"] = float(np.mean(state.episode_returns))
        state.episode_returns.clear()
    return out


class LogWindow:
    """The steps since the last log point: the sums of their loss parts (``DQNAgent.loss_names``)
    and mean rewards, kept on the device (no host read between log points), and when it began."""

    def __init__(self, loss_names: tuple[str, ...], step: int, device: torch.device):
        self.loss_names = loss_names  # td_loss, penalty/<intervention>..., loss_total
        self.loss_sum = torch.zeros(len(loss_names), device=device)
        self.reward_sum = torch.zeros((), device=device)
        self.start, self.t0 = step, time.perf_counter()

    def add(self, loss: torch.Tensor, reward: torch.Tensor) -> None:
        self.loss_sum += loss
        self.reward_sum += reward

    def restart(self, step: int) -> None:
        self.loss_sum.zero_(), self.reward_sum.zero_()
        self.start, self.t0 = step, time.perf_counter()


def measure(
    cfg: DictConfig, state: TrainState, window: LogWindow, batch: Any, epsilon: float, agent_cfg: Any
) -> tuple[dict[str, float], dict[str, float]]:
    """A log point's ``train`` values and its wall-clock ``timing``: the window's mean loss parts and
    reward, the mean Q of the step's batch, epsilon, the env step/frame/episode counts and (with
    ``diagnostics.dynamics``) the window's gradient norms and parameter change; the only host
    reads of the loop."""
    n = state.step - window.start
    seconds = time.perf_counter() - window.t0
    with torch.no_grad():
        q_mean = state.agent.online(batch.o_tm1).mean()
    values = {name: v / n for name, v in zip(window.loss_names, window.loss_sum.tolist())}
    values.update(
        {
            # per environment step of the window (with replay_ratio K > 1, one in K steps steps the env)
            REWARD_MEAN: float(window.reward_sum)
            / max(env_steps_done(state.step, agent_cfg) - env_steps_done(window.start, agent_cfg), 1),
            "q_mean": float(q_mean),
            "epsilon": epsilon,
        }
    )
    values.update(episode_and_frame_counts(cfg, state))
    if state.dynamics is not None:  # grad_norm_window_mean, rel_param_change_window (probes/dynamics.py)
        values.update(state.dynamics.log_point(state.agent.online))
    # wall-clock values live in phase "timing", the only phase that differs between reruns
    return values, {"train_s": seconds, "steps_per_s": n / max(seconds, 1e-9)}


def diverged(values: dict[str, float]) -> bool:
    """The window's TD loss or the batch's mean Q is not finite."""
    return not (math.isfinite(values[TD_LOSS]) and math.isfinite(values["q_mean"]))


def stops_on_divergence(cfg: DictConfig, state: TrainState, writer: Any, values: dict[str, float], run_id: str) -> bool:
    """Record ``train/diverged``; with ``on_divergence=stop`` also the log point's values and its
    metrics shard, and say so (the loop then ends with status ``diverged``)."""
    writer.add(state.step, TRAIN_PHASE, "diverged", 1.0)
    log.warning("run %s diverged at step %d (td_loss=%s)", run_id, state.step, values[TD_LOSS])
    if cfg.on_divergence != "stop":
        return False
    writer.add_many(state.step, TRAIN_PHASE, values)
    writer.flush(state.step)
    return True


def evaluate(cfg: DictConfig, state: TrainState, writer: Any) -> dict[str, float] | None:
    """Every ``env.eval_every_steps``: the agent's evaluation scores (phase ``eval``; protocol
    ``env.eval_protocol``: episodes or DQN Zoo's frame budget) and their wall-clock time."""
    eval_every = OmegaConf.select(cfg, "env.eval_every_steps")
    if not (eval_every and state.step % int(eval_every) == 0):
        return None
    t0 = time.perf_counter()
    scores = evaluate_agent(
        state.env, state.agent, cfg.env, seed=eval_seed(cfg.seed, state.step), stream=1 + state.step
    )
    writer.add_many(state.step, evaluation.PHASE, scores)
    writer.add(state.step, TIMING_PHASE, "eval_s", time.perf_counter() - t0)
    return scores


def pause_around_hooks(
    cfg: DictConfig, state: TrainState, writer: Any, agent_cfg: Any, at_pause: bool, probe_before_hooks: bool
) -> dict[str, Any] | None:
    """The rest of the step (``finish_step``: its hooks and target update) and, at a pause, the
    probes and diagnostics before those (``probe.at=before_interventions``) or after them; the
    pause's probe scalars (None without a pause)."""
    probe = run_pause(cfg, state, writer) if at_pause and probe_before_hooks else None
    finish_step(state, agent_cfg)
    if at_pause and not probe_before_hooks:
        probe = run_pause(cfg, state, writer)
    return probe


def end_window(state: TrainState) -> dict[str, float]:
    """After the step's hooks: the interventions' own counters, and the dynamics window restarts
    from the parameters as the hooks left them."""
    values: dict[str, float] = {}
    for intervention in state.interventions:
        values.update(intervention.metrics())
    if state.dynamics is not None:
        state.dynamics.end_window(state.agent.online)
    return values


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment into ``run_dir``: the program its env picks (``run_dqn`` below, or the case
    study an env registers with ``program=``, section 4) inside the run directory's lifecycle.

    ``cfg`` is the composed config (``compose_config()`` in tests, ``@hydra.main`` from the CLI).
    ``on_start`` is called once the config is valid and its data set readable, the run directory's
    lock is held and the directory accepts the config, before anything is written (the CLI writes
    Hydra's record of the run there). The run holds the directory's lock throughout
    (``lifecycle.opened``). A finished run (``lifecycle.FINISHED``) is not run again. Returns a summary: run id, steps done, status and
    (``run_dqn``) the last probe scalars.

    A config with ``population.seeds`` set is a population: ``population.train_population`` runs it
    (the CLI picks it), and ``train`` refuses it rather than run one member.
    """
    if OmegaConf.select(cfg, "population.seeds") is not None:
        raise ConfigError(
            "population.seeds", "a population runs through population.train_population (plasticity-run picks it)"
        )
    validate(cfg)
    check_data(cfg.env)  # the data set is on disk and large enough: a config error now, not a crash later
    program = registry.get("env", cfg.env.name).spec.program or run_dqn
    with lifecycle.opened(cfg, run_dir, on_start) as run:
        return run.finished_summary() if run.finished else program(cfg, run)


def run_dqn(cfg: DictConfig, run: lifecycle.RunDir) -> dict[str, Any]:
    """The DQN program (steps 1-5 of the module's list) in the run directory ``run`` holds
    (``lifecycle``), resuming from its newest complete checkpoint: one ``DQNLoop`` driven to its end."""
    loop = DQNLoop(cfg, run)
    # stop signals are deferred from here on: one during the prefill or the step-0 pause stops the
    # run right after that pause's checkpoint, recorded as interrupted
    preempt = PreemptionGuard(on_hand_over=run.record.interrupted, on_resume=run.record.resumed).install()
    try:
        loop.begin()
        if preempt.requested:
            preempt.stop()
    except BaseException:
        preempt.uninstall()
        raise
    loop.open_window()
    try:
        while loop.running:
            epsilon = loop.epsilon()
            loss, reward, batch = loop.learn_step(loop.state, loop.agent_cfg, epsilon)
            if loop.end_step(loss, reward, batch, epsilon) and preempt.requested:
                # preempted or timed out: checkpoint this step, then requeue
                preempt.stop(save=loop.save_for_stop())
    finally:
        preempt.uninstall()
        loop.close_window()
    return loop.finish()


LATEST = -1  # ``DQNLoop(resume_step=LATEST)``: resume from the newest complete checkpoint


class DQNLoop:
    """One DQN run's loop, a step at a time: ``run_dqn`` drives one to its end; a population
    (``population.py``) drives several in lockstep, each exactly as ``run_dqn`` would.

    Construction builds the parts (``build_train_state``), applies ``speed.*``, resumes (from the newest
    complete checkpoint, or with ``resume_step`` from that step's: None starts afresh) and starts
    the run (``run.json`` running, the metrics writer). Then ``begin`` (prefill and the step-0
    pause of a new run), ``open_window``, and per training step ``epsilon``, ``learn_step`` (or its
    parts) and ``end_step`` while ``running``; ``close_window`` and ``finish`` at the end.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run: lifecycle.RunDir,
        resume_step: int | None = LATEST,
        show_progress: bool = True,
        **meta: Any,
    ):
        self.cfg, self.run = cfg, run
        run_dir, device = run.run_dir, run.device
        self.state = state = build_train_state(cfg, device)
        self.fast_path = fastpath.configure(cfg.speed, state.agent, device)
        state.compiled_probe_fit = fastpath.compiled_probe_fit(cfg.speed, cfg.probe, device, self.fast_path)
        # speed.step_graph: the whole step in one graph (None: the loss-only path)
        self.graph = step_graph.configure(cfg, state, device, self.fast_path)
        self.learn_step = self.graph.learn_step if self.graph is not None else learn_step
        resumed_from = None
        if cfg.checkpoint.enabled and resume_step is not None:
            upto = None if resume_step == LATEST else int(resume_step)
            resumed_from = checkpoint.load_latest(run_dir, state.load_state_dict, device, upto=upto)
        checkpoint.discard_after(run_dir, resumed_from)
        self.resumed_from = resumed_from
        self.writer = run.start(resumed_from, fast_path=self.fast_path, **meta)
        # plain values for the hot loop: an OmegaConf attribute read costs microseconds, thousands per step
        self.agent_cfg, self.total = plain(cfg.agent), int(cfg.total_steps)
        self.probe_every, self.log_every = int(cfg.probe.every_steps), int(cfg.log_every_steps)
        self.switch_pauses = schedule.pause_steps(cfg.env)  # env.pause_at_switch: right before and after each switch
        self.probe_before_hooks = choice(cfg.probe.at) == "before_interventions"
        self.show_progress = show_progress
        self.summary: dict[str, Any] = {"probe": {}}
        self.status = "complete"
        self.stopped = False  # diverged with on_divergence=stop
        self.at_pause = False  # the last ``end_step`` was a pause
        self.keep = int(cfg.checkpoint.keep)  # checkpoints kept by ``persist`` (a population prunes itself)
        self.before_checkpoint: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        log.info(
            "run %s on %s: %d training steps%s; outputs in %s",
            run.run_id,
            device,
            self.total,
            f", resumed at step {resumed_from}" if resumed_from is not None else "",
            run_dir.resolve(),
        )

    @property
    def running(self) -> bool:
        """Steps are left and the run did not stop on a divergence."""
        return self.state.step < self.total and not self.stopped

    def persist(self) -> None:
        """The pause's metrics shard, then its checkpoint (of the state after the step's hooks)."""
        state = self.state
        self.writer.flush(state.step)
        if self.cfg.checkpoint.enabled:
            bundle = state.state_dict()
            if self.before_checkpoint is not None:  # a population's vmapped members: their own copies
                bundle = self.before_checkpoint(bundle)
            checkpoint.save(self.run.run_dir, state.step, bundle, self.keep)

    def begin(self) -> None:
        """A new run: fill the replay and pause at step 0 (its shard and checkpoint); a resumed run: nothing."""
        if self.resumed_from is None:
            self.prefill()
            self.summary["probe"] = run_pause(self.cfg, self.state, self.writer)
            self.persist()

    def prefill(self) -> None:
        prefill(self.state, int(self.agent_cfg.learning_starts))

    def open_window(self) -> None:
        """Before the first training step of this start: the progress display and the log window."""
        state = self.state
        self.progress = Progress(self.cfg.progress if self.show_progress else "none", self.total, state.step)
        self.window = LogWindow(state.agent.loss_names, state.step, self.run.device)

    def close_window(self) -> None:
        if getattr(self, "progress", None) is not None:
            self.progress.close()
            self.progress = None

    def epsilon(self) -> float:
        return epsilon_at(self.state.step, self.agent_cfg, self.state.clock)

    def due(self) -> tuple[bool, bool]:
        """Whether the step just learned (``state.step``) is a log point, and whether it is a pause
        (every pause is a log point)."""
        step = self.state.step
        at_pause = step % self.probe_every == 0 or step == self.total or step in self.switch_pauses
        return at_pause or step % self.log_every == 0, at_pause

    def end_step(self, loss: torch.Tensor, reward: torch.Tensor, batch: Any, epsilon: float) -> bool:
        """The rest of the step after ``learn_step``: the window's sums, then ``finish_step`` or, at a
        log point, the log point (with its pause, shard and checkpoint when due); returns whether
        the step was a log point (where a stop signal is acted on). Its parts are ``open_log_point``,
        ``pause_around_hooks`` and ``close_log_point`` (a population runs its members' pauses together
        between them)."""
        if not self.open_log_point(loss, reward, batch, epsilon):
            return False
        state = self.state
        probe = pause_around_hooks(self.cfg, state, self.writer, self.agent_cfg, self.at_pause, self.probe_before_hooks)
        return self.close_log_point(probe)

    def open_log_point(self, loss: torch.Tensor, reward: torch.Tensor, batch: Any, epsilon: float) -> bool:
        """The window's sums; off a log point, ``finish_step`` (returns False); at one, its
        measurements up to the pause (returns True, unless the run stops on a divergence)."""
        cfg, state, agent_cfg, writer, window = self.cfg, self.state, self.agent_cfg, self.writer, self.window
        window.add(loss, reward)
        step = state.step
        log_point, at_pause = self.due()
        self.at_pause = at_pause
        if not log_point:
            finish_step(state, agent_cfg)
            self.progress.tick(step)
            return False
        # A log point: the only place the loop reads device values back to the host. Its
        # measurements (Q, evaluation and, with probe.at=before_interventions, the pause) see
        # the network as trained, before this step's hooks and target update run.
        values, timing = measure(cfg, state, window, batch, epsilon, agent_cfg)
        writer.add_many(step, TIMING_PHASE, timing)
        self.shown = {TD_LOSS: values[TD_LOSS], "steps_per_s": timing["steps_per_s"]}
        if diverged(values) and stops_on_divergence(cfg, state, writer, values, self.run.run_id):
            self.status, self.stopped = "diverged", True
            return False
        scores = evaluate(cfg, state, writer)
        if scores is not None:
            self.shown["eval_return"] = scores[evaluation.EPISODE_RETURN]
        self.values = values
        return True

    def close_log_point(self, probe: dict[str, Any] | None) -> bool:
        """After the step's hooks (and the pause's ``probe`` scalars, None without a pause): the
        interventions' counters, the train values, the shard and checkpoint of a pause, the progress
        line and the heartbeat; returns True (a log point)."""
        state, writer, window, shown, values = self.state, self.writer, self.window, self.shown, self.values
        step = state.step
        self.summary["probe"] = probe or self.summary["probe"]
        values.update(end_window(state))
        writer.add_many(step, TRAIN_PHASE, values)
        if self.at_pause:
            self.persist()
            if "probe_loss" in self.summary["probe"]:
                shown["probe_loss"] = self.summary["probe"]["probe_loss"]
        self.progress.update(step, step - window.start, **shown)
        self.run.record.heartbeat(step)
        window.restart(step)
        return True

    def save_for_stop(self) -> Callable[[], None] | None:
        """What a stop signal at this log point writes before it is handed on: the checkpoint of
        the step, unless the pause just wrote it (or checkpoints are off)."""
        return None if self.at_pause or not self.cfg.checkpoint.enabled else self.persist

    def finish(self) -> dict[str, Any]:
        """The final ``run.json`` and the run's summary."""
        cfg, run = self.cfg, self.run
        end = status_file.end_fields(run.run_dir, self.status, self.state.step, cfg.on_divergence)
        return run.finish(end, **self.summary)
