"""The vmapped step of a population (``population.mode=vmap``): one call trains every member.

**Stacking and aliasing.** ``VmapStepper`` stacks the members' online parameters, the online
network's other tensors (buffers, frozen parameters), the target network's tensors and the
optimizer states (each slot, and the step counts) into ``[N, ...]`` tensors, and makes every
member's own tensors *views* of its slice (``p.data = stacked[i]``; the torch optimizer's state
entries likewise). So everything that works on one member (the intervention hooks, the pause's
probes and diagnostics, the checkpoint, the target copy) keeps working on its member's modules and
optimizer and sees that member only, while the step reads and writes all members at once.

**The step.** Eager: every member's loss parts come from one ``torch.func.vmap`` of the functional
loss (``functional.FunctionalLoss``), their gradients from one backward of the members' summed
losses, and each member's own torch optimizer then steps on its slice (the single run's update, its
own state). Compiled (``speed.compile``): the loss, gradient and functional optimizer update
(``functional.Functional*``) of all members are one vmapped graph over the stacked optimizer
states, its results copied into the stacked tensors in place. Acting, the
environment, the replay draw, the hooks, the log points and the pauses stay each member's own
(``trainer.collect``, ``DQNLoop.end_step``).

**After the hooks.** A host-side hook may replace a tensor instead of writing into it (a reset
that loads a fresh network, an optimizer state reset that drops the entry, a per-element step
count): ``after_host`` finds every tensor of the member that no longer is its slice and copies it
into the slice (or zeroes the slice of a dropped optimizer state, as torch would start it afresh),
then re-aliases; the other members' slices are not touched. A change of the network's structure
(plasticity injection: new parameters) restacks every member.

**What is refused** (``refusals``, at start, naming the key): what the functional core declares it
cannot run (``functional.unsupported``: C-CHAIN's penalty, SAM's second forward and backward), an
optimizer without a functional form, a penalty that reads per-member tensors other than the
network's (``l2_init``'s initial parameters), a stochastic forward (ViT's dropout: it draws from the
global RNG, which a vmapped call cannot draw per member), the programs that are not the DQN loop
(case studies, continual protocols).

**Speed options.** ``speed.compile`` (``speed.cuda_graphs`` on a GPU) compiles the whole vmapped
step, loss, gradient and optimizer update of every member, as one graph (``torch.compile``,
``fullgraph=True``; ``reduce-overhead`` mode, CUDA graphs, on a GPU); a compiler failure falls back
to the eager vmapped step with a logged reason, as a single run's compiled loss does, and
``population.json`` records which ran (``fast_path``). The members' probes compile as in a single
run. The graph is traced again when the members' number or structure changes (a member finished,
plasticity injection).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import OmegaConf

log = logging.getLogger("plasticity_runner")

# interventions whose penalty reads per-member tensors that the vmapped step does not take per member
PER_MEMBER_PENALTY = {
    "l2_init": "its penalty reads each member's initial parameters (theta_0), which the vmapped loss does not "
    "take per member",
}


def refusals(cfg: Any) -> list[tuple[str, str]]:
    """``(key, reason)`` of every part of ``cfg`` that ``population.mode=vmap`` cannot run."""
    from . import functional, registry
    from . import interventions as interventions_lib
    from .optim import build_optimizer

    out: list[tuple[str, str]] = []
    env = OmegaConf.select(cfg, "env.name")
    part = registry.parts("env").get(env)
    if part is not None and part.spec.program is not None:
        out.append(("env.name", f"env {env} runs its own program, not the DQN loop that the vmapped step is part of"))
        return out
    for name, reason in functional.unsupported(interventions_lib.build_interventions(cfg.intervention)):
        out.append((f"intervention.{name}", reason))
    for name, reason in PER_MEMBER_PENALTY.items():
        if OmegaConf.select(cfg, f"intervention.{name}") is not None:
            out.append((f"intervention.{name}", reason))
    try:
        functional.functional_optimizer(build_optimizer(cfg.optimizer, [torch.zeros(1, requires_grad=True)]))
    except functional.UnsupportedOptimizer as exc:
        out.append(("optimizer", f"the optimizer has no functional form ({exc})"))
    if OmegaConf.select(cfg, "speed.step_graph"):
        out.append(
            (
                "speed.step_graph",
                "a vmapped population steps its members' networks as one vmapped call (speed.compile compiles it "
                "whole); the step graph captures one run's step (population.mode=sequential runs one per member)",
            )
        )
    dropout = OmegaConf.select(cfg, "architecture.dropout")
    if dropout:
        out.append(
            (
                "architecture.dropout",
                f"dropout ({dropout}) draws from the process-global RNG in the training forward; a vmapped forward "
                "cannot draw each member's own stream (architecture.dropout=0 can run)",
            )
        )
    return out


def _host_side(intervention: Any) -> bool:
    """Whether ``intervention`` has a hook that runs on the host between steps (it may replace tensors)."""
    from .interventions.base import Intervention

    cls = type(intervention)
    return cls.after_step is not Intervention.after_step or cls.on_target_update is not Intervention.on_target_update


def _alias(t: torch.Tensor, view: torch.Tensor) -> None:
    """Make ``t`` (a parameter or buffer of a member) share ``view``'s memory, in place."""
    t.data = view


class VmapStepper:
    """The stacked tensors of the members being trained, and their vmapped step (module docstring)."""

    def __init__(self, members: list[Any], speed_cfg: Any, device: torch.device):
        from . import fastpath, functional

        self.functional = functional
        template = members[0].loop.state.agent
        self.floss = functional.FunctionalLoss(template)
        self.fopt = functional.functional_optimizer(template.optimizer)
        self.counted = not isinstance(self.fopt, functional.FunctionalSGD)
        self.fused_step_t = isinstance(self.fopt, functional.FunctionalAdam) and not self.fopt.eps_root
        self.vterms = torch.func.vmap(self.floss.terms, randomness="error")
        self.vupdate = torch.func.vmap(self.fopt.update)
        self.vstep = self._eager_step
        self.fast_path: dict[str, str] = {
            "step": "eager (torch.func.vmap forward, autograd backward, each member's own torch optimizer)"
        }
        mode = fastpath.compile_mode(speed_cfg, device)
        # eager: the members' own torch optimizers step on their slices (fused kernels, their own
        # state, exactly a single run's update); compiled: the functional optimizer on stacked state
        self.native_opt = mode is None
        if mode is not None:  # speed.compile / speed.cuda_graphs: the whole vmapped step in one graph
            pure = torch.func.vmap(self._member_step, randomness="error")
            compiled = torch.compile(pure, mode=mode, fullgraph=True, dynamic=False)
            self.vstep = fastpath.CompiledOrEager(self._eager_step, compiled, "step", self.fast_path)
            self.fast_path["step"] = f"torch.compile(vmap, mode={mode}, fullgraph=True)"
        self.restack(members)

    # ---------------------------------------------------------------------------- the step

    def _eager_step(self, trained, fixed, target, batch, opt_state):
        """The eager step: every member's loss parts by one vmapped forward, the gradients by one
        ordinary backward of their sum (the members' losses share no parameter, so each member's
        gradient is its own loss's), the optimizer update vmapped. Cheaper than ``torch.func.grad``
        under ``vmap`` (``_member_step``, what compiles) for the same numbers."""
        grads, terms = self._grads(trained, fixed, target, batch)
        new_p, new_s = self.vupdate(trained, grads, opt_state)
        return new_p, new_s, grads, terms

    def _grads(self, trained, fixed, target, batch):
        """Every member's loss parts ``[N, len(loss_names)]`` (one vmapped forward) and gradients
        (one backward of their sum: the members share no parameter)."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in trained.items()}
            terms = self.vterms(leaves, fixed, target, batch)
            grads = dict(zip(leaves, torch.autograd.grad(terms[:, -1].sum(), list(leaves.values()))))
        return grads, terms.detach()

    def _member_step(self, trained, fixed, target, batch, opt_state):
        grads, terms = self.floss.grads_and_terms(trained, fixed, target, batch)
        new_p, new_s = self.fopt.update(trained, grads, opt_state)
        return new_p, new_s, grads, terms

    def step(self, active: list[Any]) -> dict[int, tuple]:
        """One training step of every member of ``active`` (the members ``restack`` last saw):
        each acts, stores and samples (``trainer.collect``), then one vmapped loss, gradient and
        optimizer step, then each member's ``after_learn``. Returns seed -> (loss parts, reward,
        batch, epsilon), what ``DQNLoop.end_step`` takes."""
        from .trainer import after_learn, collect

        if self.needs_restack:
            self.restack(self.members)
        out: dict[int, tuple] = {}
        batches = []
        for m in active:
            with m.active(rng=False):  # acting, the env and the replay draw nothing global (population.quiet_step)
                loop = m.loop
                epsilon = loop.epsilon()
                reward, batch = collect(loop.state, loop.agent_cfg, epsilon)
                loop.state.agent.networks.last_batch = batch
            out[m.seed] = (reward, batch, epsilon)
            batches.append(batch)
        stacked_batch = {f: torch.stack([getattr(b, f) for b in batches]) for f in self.functional.BATCH_FIELDS}
        if self.native_opt:
            grads, terms = self._grads(self.trained, self.fixed, self.target, stacked_batch)
            # a batched backward may lay a gradient out transposed: torch's fused kernels read dense memory
            grads = {k: g.contiguous() for k, g in grads.items()}
            for i, m in enumerate(active):
                for k, p in self.params[i].items():
                    p.grad = grads[k][i]
                self.optimizers[i].step()  # in place, into the member's slices
                after_learn(m.loop.state)
                reward, batch, epsilon = out[m.seed]
                out[m.seed] = (terms[i], reward, batch, epsilon)
            return out
        opt_state = {**self.slots, "step": self.counts}
        new_p, new_s, grads, terms = self.vstep(self.trained, self.fixed, self.target, stacked_batch, opt_state)
        with torch.no_grad():
            names = list(self.trained)
            torch._foreach_copy_([self.trained[k] for k in names], [new_p[k] for k in names])
            for s in self.slots:
                torch._foreach_copy_([self.slots[s][k] for k in names], [new_s[s][k] for k in names])
            torch._foreach_copy_([self.counts[k] for k in names], [new_s["step"][k] for k in names])
        terms = terms.detach()
        for i, m in enumerate(active):
            self._after_update(i, grads)
            after_learn(m.loop.state)
            reward, batch, epsilon = out[m.seed]
            out[m.seed] = (terms[i], reward, batch, epsilon)
        return out

    def _after_update(self, i: int, grads: dict[str, torch.Tensor]) -> None:
        """Member ``i``'s torch-side bookkeeping of the step: its gradients (views of the step's),
        its optimizer's host step counts, and the state entries a fresh torch state would hold."""
        opt = self.optimizers[i]
        for k, p in self.params[i].items():
            p.grad = grads[k][i]
            if not self.fopt.slots and not self.counted:
                continue  # SGD without momentum: torch keeps no state
            st = opt.state[p]
            if not st:
                for s in self.fopt.slots:
                    st[s] = self.slots[s][k][i]
                if self.counted:
                    st["step"] = 0
                if self.per_element[k]:
                    st["unit_step"] = self.counts[k][i]
            if self.counted:
                st["step"] += 1

    # ---------------------------------------------------------------------------- stacking

    def restack(self, members: list[Any]) -> None:
        """Stack the tensors of ``members`` (in this order) into new ``[N, ...]`` tensors and alias
        every member's tensors to its slice."""
        F = self.functional
        self.needs_restack = False
        self.members = list(members)
        self.index = {m.seed: i for i, m in enumerate(members)}
        agents = [m.loop.state.agent for m in members]
        split = [F.split_online(a.online, a.optimizer) for a in agents]
        self.params = [tr for tr, _ in split]
        self.optimizers = [a.optimizer for a in agents]
        self.structure = [self._structure(a) for a in agents]
        first = self.structure[0]
        for m, s in zip(members, self.structure):
            if s[1] != first[1]:
                raise RuntimeError(
                    f"population.mode=vmap: member seed={m.seed}'s network differs in structure from seed="
                    f"{members[0].seed}'s; the members must share one structure to be stacked"
                )
        self.online_fixed = [fx for _, fx in split]
        self.host_hooks = [any(_host_side(i) for i in a.interventions) for a in agents]
        self.target_tensors = [F.network_tensors(a.target) for a in agents]
        with torch.no_grad():
            self.trained = self._stack(self.params)
            self.fixed = self._stack(self.online_fixed)
            self.target = self._stack(self.target_tensors)
            self.slots = {}
            for s in self.fopt.slots if not self.native_opt else ():
                per = []
                for opt, params in zip(self.optimizers, self.params):
                    per.append(
                        {k: (opt.state.get(p) or {}).get(s, torch.zeros_like(p)).detach() for k, p in params.items()}
                    )
                self.slots[s] = {k: torch.stack([d[k] for d in per]) for k in self.params[0]}
            self.per_element = {}
            self.counts = {}
            for k in self.params[0] if not self.native_opt else ():
                states = [opt.state.get(params[k]) or {} for opt, params in zip(self.optimizers, self.params)]
                per_element = any("unit_step" in st for st in states)
                self.per_element[k] = per_element
                rows = []
                for st, params in zip(states, self.params):
                    p = params[k]
                    if "unit_step" in st:
                        rows.append(st["unit_step"].to(torch.float32))
                    else:
                        c = torch.full((), float(st.get("step", 0)), dtype=torch.float32, device=p.device)
                        rows.append(c.expand(p.shape).clone() if per_element else c)
                self.counts[k] = torch.stack(rows)
        for i in range(len(members)):
            self._alias_member(i)

    @staticmethod
    def _stack(per_member: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([d[k].detach() for d in per_member]) for k in per_member[0]}

    @staticmethod
    def _ids(agent: Any) -> list[int]:
        """The identities of the agent's tensors and of those its optimizer holds (a change: restack)."""
        tensors = [*agent.online.parameters(), *agent.online.buffers(), *agent.target.parameters()]
        held = [p for g in agent.optimizer.param_groups for p in g["params"]]
        return [id(t) for t in tensors] + [-1] + [id(p) for p in held]

    @classmethod
    def _structure(cls, agent: Any) -> tuple[list[int], list[tuple[str, tuple]]]:
        """``_ids`` and the names and shapes of the online network's tensors (must agree across members)."""
        names = [(n, tuple(t.shape)) for n, t in agent.online.state_dict(keep_vars=True).items()]
        return cls._ids(agent), names

    def _alias_member(self, i: int) -> None:
        """Member ``i``'s tensors become views of its slices (its optimizer's existing entries too)."""
        for stacked, own in (
            (self.trained, self.params[i]),
            (self.fixed, self.online_fixed[i]),
            (self.target, self.target_tensors[i]),
        ):
            for k, t in own.items():
                _alias(t, stacked[k][i])
        if self.native_opt:
            return  # the members' torch optimizers keep their own state
        opt = self.optimizers[i]
        for k, p in self.params[i].items():
            st = opt.state.get(p)
            if not st:
                continue
            for s in self.fopt.slots:
                if s in st:
                    st[s] = self.slots[s][k][i]
            if "unit_step" in st:
                st["unit_step"] = self.counts[k][i]
            st.pop("step_t", None)  # written again from the host count before a checkpoint (sync_for_checkpoint)

    def after_host(self, member: Any) -> None:
        """After ``member``'s hooks (``DQNLoop.end_step``): re-alias whatever they replaced (module
        docstring); a structural change restacks every member."""
        i = self.index.get(member.seed)
        if i is None or not self.host_hooks[i]:
            return  # no hook of this member runs on the host: nothing was replaced
        agent = member.loop.state.agent
        if self.needs_restack or self._ids(agent) != self.structure[i][0]:
            self.needs_restack = True  # restacked before the next step, once every member's hooks ran
            return
        with torch.no_grad():
            for stacked, own in (
                (self.trained, self.params[i]),
                (self.fixed, self.online_fixed[i]),
                (self.target, self.target_tensors[i]),
            ):
                for k, t in own.items():
                    view = stacked[k][i]
                    if t.data_ptr() != view.data_ptr():
                        view.copy_(t)
                        _alias(t, view)
            if self.native_opt:
                return  # the members' torch optimizers keep their own state
            opt = self.optimizers[i]
            for k, p in self.params[i].items():
                st = opt.state.get(p)
                if not st:  # dropped (reset_state): torch starts it afresh at the next step
                    for s in self.fopt.slots:
                        self.slots[s][k][i].zero_()
                    self.counts[k][i].zero_()
                    continue
                for s in self.fopt.slots:
                    view = self.slots[s][k][i]
                    cur = st.get(s)
                    if cur is None:
                        view.zero_()
                        st[s] = view
                    elif cur.data_ptr() != view.data_ptr():
                        view.copy_(cur)
                        st[s] = view
                if "unit_step" in st:
                    if not self.per_element[k]:  # one member now counts per element: all of them do
                        self.counts[k] = self.counts[k].reshape(-1, *[1] * p.dim()).expand(-1, *p.shape).clone()
                        self.per_element[k] = True
                        for j in range(len(self.members)):
                            stj = self.optimizers[j].state.get(self.params[j][k]) or {}
                            if "unit_step" in stj and j != i:
                                stj["unit_step"] = self.counts[k][j]
                    view = self.counts[k][i]
                    if st["unit_step"].data_ptr() != view.data_ptr():
                        view.copy_(st["unit_step"])
                        st["unit_step"] = view

    def sync_for_checkpoint(self, member: Any) -> None:
        """Before ``member``'s checkpoint: the optimizer state's layout as torch's own step leaves it
        (``step_t``, the fused Adam kernel's count, from the host count)."""
        if not self.fused_step_t or self.native_opt:
            return
        i = self.index.get(member.seed)
        if i is None:
            return
        opt = self.optimizers[i]
        for p in self.params[i].values():
            st = opt.state.get(p)
            if st and "unit_step" not in st and "step" in st:
                st["step_t"] = torch.full((), float(st["step"]), dtype=torch.float32, device=p.device)


def compact(bundle: Any) -> Any:
    """``bundle`` with every tensor that is a view into a larger storage (a member's slice of a
    stacked tensor) replaced by its own copy: ``torch.save`` writes a view's whole storage, which
    would put every member's tensors into each member's checkpoint."""
    from torch.utils._pytree import tree_map

    def own(t: Any) -> Any:
        if torch.is_tensor(t) and (t.storage_offset() or t.untyped_storage().nbytes() != t.nbytes):
            return t.clone()
        return t

    return tree_map(own, bundle)
