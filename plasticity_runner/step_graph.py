"""One graph per training step (``speed.step_graph``): acting, the environment step, the replay
write and sample, the loss, its backward and the optimizer step as one compiled function.

What is inside (``StepGraph.learn_step``, the drop-in for ``trainer.learn_step``): for each of the
step's ``update_every_env_steps`` environment steps (none in the steps that only learn, with
``agent.replay_ratio`` > 1), the epsilon-greedy action of the online network (eval mode, as
``DQNAgent.act``), the environment's step as a pure function of its state (classification MDPs,
CartPole), the replay write at the ring position; then the batch read from the replay, the
training loss's parts and gradients (``functional.FunctionalLoss``: the agent's ``loss_terms``)
and the optimizer's update (``functional.py``'s Adam, RMSProp or SGD), written back in place into
the network's parameters and the torch optimizer's state tensors. So the interventions, probes,
pauses and checkpoints see the modules and optimizer as the eager step leaves them.

What stays outside, and why:

* **Random numbers.** Drawn before the call from the run's own generators (act, env, replay), in
  the order and shapes the eager step draws them, and passed in as tensors: the streams, and so
  the metrics, are those of the eager run (a ``torch.Generator`` cannot enter a graph).
* **Host-known changing values**: epsilon, the replay's write position, Adam's step counts. Passed
  in as one tensor per step, never baked into the graph as constants. The fill level only
  bounds the replay's index draw, which happens outside.
* **Host decisions**: the target copy, the interventions' hooks (``after_step``,
  ``on_target_update``), logging, pauses, evaluation; CartPole's finished-episode statistics (one
  host copy per step, as the eager env makes).

Refused at start (``check_config``): an intervention whose in-step hooks a pure step cannot run
(``Intervention.functional_unsupported``: ``sam``, ``c_chain``), dropout (ViT's
``architecture.dropout``: its masks come from the global RNG inside the step), and envs that run
their own program. Atari and MinAtar step on the host: such a run logs it at start, records it in
``run.json`` (``fast_path.step_graph``) and trains on the loss-only path (``speed.compile`` /
``speed.cuda_graphs`` as without the step graph).

Modes: on a CUDA device, ``torch.compile(mode="reduce-overhead", fullgraph=True)`` (CUDA graph
trees; the replay, parameters and optimizer state marked static); on the CPU,
``torch.compile(fullgraph=True)``. A graph break is an error, not a fallback.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import functional as F
from .envs.base import Batch
from .errors import ConfigError

log = logging.getLogger("plasticity_runner")

ON_DEVICE_ENVS = ("classification", "cartpole")  # the envs whose step runs inside the graph
KEY = "speed.step_graph"


def check_config(cfg: DictConfig) -> None:
    """Refuse, naming the key and the reason, what the step graph cannot run (``speed.step_graph=true``)."""
    from . import interventions as interventions_lib
    from . import registry

    env = OmegaConf.select(cfg, "env.name")
    part = registry.parts("env").get(env)
    if part is not None and (part.spec.program or part.spec.continual):  # case studies, continual protocols
        raise ConfigError(KEY, f"env={env} runs its own program, which has no DQN training step to put in a graph")
    dropout = OmegaConf.select(cfg, "architecture.dropout")
    if dropout:
        raise ConfigError(
            KEY,
            f"architecture.dropout={dropout}: dropout draws its masks from the global RNG inside the step, "
            "which a compiled graph does not draw as the eager step does; set architecture.dropout=0",
        )
    for name, opts in (cfg.intervention or {}).items():
        reason = getattr(interventions_lib.REGISTRY.get(name), "functional_unsupported", None)
        if opts is not None and reason:
            raise ConfigError(KEY, f"intervention {name} cannot run inside the step graph: {reason}")


def host_reason(env_name: str) -> str | None:
    """Why an env's step cannot enter the graph (None: it can)."""
    if env_name in ON_DEVICE_ENVS:
        return None
    return f"env={env_name} steps on the host"


def configure(cfg: DictConfig, state: Any, device: torch.device, notes: dict[str, str]) -> StepGraph | None:
    """The run's ``StepGraph`` for ``speed.step_graph`` (None: off, or an env stepping on the host,
    logged and noted in ``notes["step_graph"]``, the ``run.json`` record)."""
    if not cfg.speed.step_graph:
        return None
    reason = host_reason(str(cfg.env.name))
    if reason is not None:
        loss = notes.get("loss", "eager")
        notes["step_graph"] = f"off ({reason}: the loss-only path, loss {loss})"
        log.info("speed.step_graph: %s; training on the loss-only path (loss: %s)", reason, loss)
        return None
    graph = StepGraph(state, cfg.agent, device)
    notes["step_graph"] = graph.mode
    if "loss" in notes:  # speed.compile wrapped the agent's loss, which the graph's step does not call
        notes["loss"] = f"{notes['loss']}, not used for training (speed.step_graph trains through the step graph)"
    log.info("speed.step_graph: one graph per training step, %s", graph.mode)
    return graph


# --- the environments' steps as pure functions -----------------------------------------------------


class ClassificationPure:
    """``ClassificationMDP.step`` as a pure function (``envs/classification.py``)."""

    def __init__(self, env: Any):
        self.env = env

    def draws(self, n_steps: int) -> dict[str, torch.Tensor]:
        env, n = self.env, self.env.num_envs
        states, us = [], []
        for _ in range(n_steps):  # per step: the next states, then the emitted images' uniforms
            states.append(torch.randint(10, (n,), generator=env.generator, device=env.device))
            us.append(torch.rand((n,), generator=env.generator, device=env.device))
        return {"random_next": torch.stack(states), "u": torch.stack(us)} if n_steps else {}

    def consts(self) -> dict[str, torch.Tensor]:
        env = self.env
        if getattr(self, "_offset", (None,))[0] != env._offset:  # a chain's segment switched
            self._offset = (env._offset, torch.tensor(env._offset, device=env.device))
        return {
            "images": env.images,
            "permutations": env.permutations,
            "count": env.count,
            "start": env.start,
            "sorted_idx": env.sorted_idx,
            "offset": self._offset[1],
        }

    def static(self) -> tuple:
        return (self.env.task, len(self.env.permutations), len(self.env._true_labels), self.env.obs_shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"state": self.env.state, "obs_idx": self.env.obs_idx}

    def lookup(self, static: tuple, c: dict, index: torch.Tensor) -> torch.Tensor:
        _, variants, n, obs_shape = static
        if variants == 1:
            return c["images"][index]
        flat = c["images"][index % n].flatten(1)
        return flat.gather(1, c["permutations"][index // n]).view(-1, *obs_shape)

    def step(self, static: tuple, c: dict, s: dict, actions: torch.Tensor, d: dict, u: int):
        task = static[0]
        s_tm1, o_tm1 = s["state"], s["obs_idx"]
        correct = actions == s_tm1
        random_next = d["random_next"][u]
        if task == "sparse_reward":
            reward = (correct & (s_tm1 == 9)).float()
            s_t = torch.where(correct, (s_tm1 + 1) % 10, random_next)
        else:
            reward = correct.float()
            s_t = random_next
        count = c["count"][s_t]
        offset = (d["u"][u] * count).long().clamp_max(count - 1)
        o_t = c["sorted_idx"][c["start"][s_t] + offset] + c["offset"]
        record = {"o_tm1": o_tm1, "a_tm1": actions, "r_t": reward, "discount_t": torch.ones_like(reward), "o_t": o_t}
        return {"state": s_t, "obs_idx": o_t}, record, reward, self.lookup(static, c, o_t), None

    def materialise(self, static: tuple, c: dict, obs: torch.Tensor) -> torch.Tensor:
        return self.lookup(static, c, obs)

    def write_back(self, s: dict, stats: Any, n_steps: int, state: Any) -> None:
        self.env.state, self.env.obs_idx = s["state"], s["obs_idx"]


class CartPolePure:
    """``CartPoleVectorEnv.step`` as a pure function (``envs/cartpole.py``); the finished episodes'
    statistics come back as one tensor per training step, read on the host as the env's own step does."""

    def __init__(self, env: Any):
        self.env = env

    def draws(self, n_steps: int) -> dict[str, torch.Tensor]:
        env = self.env
        fresh = [
            torch.rand((env.num_envs, 4), generator=env.generator, dtype=torch.float64, device=env.device)
            for _ in range(n_steps)
        ]
        return {"fresh": torch.stack(fresh)} if n_steps else {}

    def consts(self) -> dict[str, torch.Tensor]:
        return {}

    def static(self) -> tuple:
        return (self.env.max_episode_steps,)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"state": self.env.state, "ep_length": self.env.ep_length, "ep_return": self.env.ep_return}

    def step(self, static: tuple, c: dict, s: dict, actions: torch.Tensor, d: dict, u: int):
        from .envs.cartpole import INIT_HIGH, THETA_THRESHOLD, X_THRESHOLD, physics_step

        o_tm1 = s["state"].float()
        s_t = physics_step(s["state"], actions)
        x, theta = s_t[:, 0], s_t[:, 2]
        terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
        reward = torch.ones(actions.shape, dtype=torch.float32, device=actions.device)
        ep_length = s["ep_length"] + 1
        ep_return = s["ep_return"] + reward
        ended = terminated | (ep_length >= static[0])
        fresh = -INIT_HIGH + (2 * INIT_HIGH) * d["fresh"][u]
        stats = torch.stack([c.to(torch.float64) for c in (ended, terminated, ep_return, ep_length)], 1)
        new = {
            "state": torch.where(ended[:, None], fresh, s_t),
            "ep_length": torch.where(ended, 0, ep_length),
            "ep_return": torch.where(ended, 0.0, ep_return),
        }
        record = {
            "o_tm1": o_tm1,
            "a_tm1": actions,
            "r_t": reward,
            "discount_t": (~terminated).float(),
            "o_t": s_t.float(),
        }
        return new, record, reward, new["state"].float(), stats

    def materialise(self, static: tuple, c: dict, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()

    def write_back(self, s: dict, stats: Any, n_steps: int, state: Any) -> None:
        env = self.env
        env.state, env.ep_length, env.ep_return = s["state"], s["ep_length"], s["ep_return"]
        if not n_steps:
            return
        host = stats.cpu()  # the step's one device-to-host copy, as the env's own step makes
        for u in range(n_steps):
            done = host[u, :, 0].bool()
            state.episode_returns.extend(host[u][done, 2].tolist())
            env.episodes_finished += int(done.sum())
        env.steps += n_steps


# --- the step --------------------------------------------------------------------------------------


class StepGraph:
    """The compiled training step of a DQN run on an on-device env (see the module docstring)."""

    def __init__(self, state: Any, agent_cfg: Any, device: torch.device, backend: str = "inductor"):
        env_name = type(state.env).__name__
        self.pure = CartPolePure(state.env) if env_name == "CartPoleVectorEnv" else ClassificationPure(state.env)
        self.agent = state.agent
        self.loss = F.FunctionalLoss(self.agent)
        self.fopt = F.functional_optimizer(self.agent.optimizer)
        self.cuda = device.type == "cuda"
        mode = "reduce-overhead" if self.cuda else "default"
        self.mode = f"torch.compile(fullgraph=True, mode={mode}) on {device.type}"
        self._compile_mode = mode
        self._backend = backend  # tests check the capture (no graph break) with a cheaper backend
        self.compiled: dict[tuple, Any] = {}  # by (env steps in the step, ...): one graph each
        self.replay_ratio = int(agent_cfg.replay_ratio)
        self.env_steps = int(agent_cfg.update_every_env_steps)
        self.batch_size = int(agent_cfg.batch_size)
        self.device = device

    # the host side of one step ------------------------------------------------------------------

    def _optimizer_inputs(self, trained: dict[str, torch.Tensor]) -> tuple[dict, list[str], list[str], torch.Tensor]:
        """The torch optimizer's state tensors of ``trained`` (created as its own step would, where
        missing), the names with a per-element count, those with a fused-kernel count, and the
        host counts (one per parameter, before this step)."""
        opt, fopt = self.agent.optimizer, self.fopt
        slots: dict[str, dict[str, torch.Tensor]] = {s: {} for s in fopt.slots}
        unit, fused, counts = [], [], []
        adam = isinstance(fopt, F.FunctionalAdam)
        for k, p in trained.items():
            if isinstance(fopt, F.FunctionalSGD) and not fopt.momentum:
                counts.append(0.0)
                continue
            st = opt.state[p]
            if not st and not isinstance(fopt, F.FunctionalSGD):
                st["step"] = 0
            for s in fopt.slots:
                if st.get(s) is None:
                    st[s] = torch.zeros_like(p, memory_format=torch.preserve_format)
                slots[s][k] = st[s]
            if adam and "unit_step" in st:
                unit.append(k)
            elif adam and not fopt.eps_root:
                if "step_t" not in st:
                    st["step_t"] = torch.full((), float(st["step"]), dtype=torch.float32, device=p.device)
                fused.append(k)
            elif adam:
                st.pop("step_t", None)  # optim.Adam's _foreach path drops the fused kernel's count
            counts.append(float(st.get("step", 0)))
        return slots, unit, fused, torch.tensor(counts, dtype=torch.float64)

    def learn_step(self, state: Any, agent_cfg: Any, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, Batch]:
        """``trainer.learn_step`` in one graph: the same streams, state and return values."""
        agent, replay, opt = self.agent, state.replay, self.agent.optimizer
        n_steps = self.env_steps if state.step % self.replay_ratio == 0 else 0
        n = state.env.num_envs
        # the random numbers, in the eager order of each stream: act (explore, random action) and
        # env per env step, then the replay's batch indices over the fill level after the writes
        explore, random_a = [], []
        for _ in range(n_steps):
            explore.append(torch.rand(n, generator=state.act_generator, device=self.device))
            random_a.append(torch.randint(agent.num_actions, (n,), generator=state.act_generator, device=self.device))
        draws = self.pure.draws(n_steps)
        if n_steps:
            draws.update(explore=torch.stack(explore), random_a=torch.stack(random_a))
        size = min(replay.size + n_steps * n, replay.capacity)
        idx = torch.randint(size, (self.batch_size,), generator=state.replay_generator, device=self.device)

        params, fixed = F.split_online(agent.online, opt)
        trained = {k: p.detach() for k, p in params.items()}  # aliases: updated in place by the graph
        slots, unit, fused, counts = self._optimizer_inputs(params)
        unit_counts = {k: opt.state[params[k]]["unit_step"] for k in unit}
        step_t = {k: opt.state[params[k]]["step_t"] for k in fused}
        scalars = torch.cat([torch.tensor([epsilon, float(replay.pos)], dtype=torch.float64), counts]).to(self.device)
        replay_tensors = {k: getattr(replay, k) for k in ("o_tm1", "a_tm1", "r_t", "discount_t", "o_t")}
        static = (n_steps, n, replay.capacity, self.pure.static(), tuple(trained), tuple(unit))
        fn = self.compiled.get(static)
        if fn is None:
            fn = self.compiled[static] = self._compile(static)
        consts = self.pure.consts()
        if self.cuda:  # the tensors that keep their addresses (the graph writes them in place): never copied
            kept = (trained, fixed, F.network_tensors(agent.target), slots, unit_counts, step_t, consts, replay_tensors)
            for t in torch.utils._pytree.tree_leaves(kept):
                torch._dynamo.mark_static_address(t)
            torch.compiler.cudagraph_mark_step_begin()
        out = fn(
            trained,
            fixed,
            F.network_tensors(agent.target),
            slots,
            unit_counts,
            step_t,
            self.pure.tensors(),
            consts,
            replay_tensors,
            state.obs,
            draws,
            scalars,
            idx,
        )
        if self.cuda:  # a graph's outputs are overwritten by its next replay: keep copies of what lives on
            out = torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, out)
        terms, reward, obs, env_state, batch, grads, stats = out
        # the host's bookkeeping, as the eager step's
        self.pure.write_back(env_state, stats, n_steps, state)
        for _ in range(n_steps):
            replay.pos = (replay.pos + n) % replay.capacity
            replay.size = min(replay.size + n, replay.capacity)
        for k, p in params.items():
            st = opt.state.get(p)
            if st is not None and "step" in st:
                st["step"] += 1
            p.grad = grads[k]
        state.obs = obs
        batch = Batch(**batch)
        agent.networks.last_batch = batch
        if state.dynamics is not None:
            state.dynamics.after_backward(agent.online)
        state.step += 1
        return terms, reward, batch

    # the graph ----------------------------------------------------------------------------------

    def _compile(self, static: tuple) -> Any:
        n_steps, n, capacity, env_static, _, _ = static
        pure, loss, fopt, online = self.pure, self.loss, self.fopt, self.agent.online

        def step(
            trained, fixed, target, slots, unit_counts, step_t, env_state, consts, replay, obs, draws, scalars, idx
        ):
            epsilon, pos = scalars[0].to(torch.float32), scalars[1].long()
            reward_sum = torch.zeros((), dtype=torch.float32, device=obs.device)
            stats = []
            for u in range(n_steps):
                with torch.no_grad():
                    q = torch.func.functional_call(online, {**trained, **fixed}, (obs,), tie_weights=False)
                actions = torch.where(draws["explore"][u] < epsilon, draws["random_a"][u], q.argmax(dim=1))
                env_state, record, reward, obs, stat = pure.step(env_static, consts, env_state, actions, draws, u)
                where = (torch.arange(n, device=obs.device) + pos + u * n) % capacity
                for name, buf in replay.items():
                    buf[where] = record[name].to(buf.dtype)
                reward_sum = reward_sum + reward.mean()
                stats.append(stat)
            batch = {
                "o_tm1": pure.materialise(env_static, consts, replay["o_tm1"][idx]),
                "a_tm1": replay["a_tm1"][idx],
                "r_t": replay["r_t"][idx],
                "discount_t": replay["discount_t"][idx],
                "o_t": pure.materialise(env_static, consts, replay["o_t"][idx]),
            }
            grads, terms = loss.grads_and_terms(trained, fixed, target, batch)
            counts = {k: scalars[2 + i] for i, k in enumerate(trained)}  # float64: exact host counts
            counts.update(unit_counts)
            params, new = fopt.update(trained, grads, {"step": counts, **slots})
            with torch.no_grad():  # written back in place: the modules and the torch optimizer hold the result
                names = list(trained)
                torch._foreach_copy_([trained[k] for k in names], [params[k] for k in names])
                for s in fopt.slots:
                    torch._foreach_copy_([slots[s][k] for k in names], [new[s][k] for k in names])
                for k, t in unit_counts.items():
                    t.copy_(new["step"][k])
                for k, t in step_t.items():
                    t.copy_(new["step"][k])
            stat = torch.stack(stats) if n_steps and stats[0] is not None else None
            return terms, reward_sum, obs, env_state, batch, grads, stat

        if self._backend != "inductor":
            return torch.compile(step, fullgraph=True, dynamic=False, backend=self._backend)
        return torch.compile(step, fullgraph=True, dynamic=False, mode=self._compile_mode)
