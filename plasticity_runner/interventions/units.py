"""Unit-level surgery shared by the interventions that recycle single hidden units (ReDo,
continual backprop): which columns of a reading layer belong to a unit, the activations of every
unit group on a batch, and the replacement of a set of units.

A unit group (``nets.layers.UnitGroup``) names the layers that write a hidden layer's units
(``incoming``: weight rows, bias, per-unit norm affine along dim 0) and those that read them
(``outgoing``: weight columns along dim 1, laid out as ``(expansion, units, spatial)``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets.layers import UnitGroup, expansion, raw_weight
from ..optim import reset_state_entries
from .base import Networks


def group_activations(net: nn.Module, obs: torch.Tensor) -> list[tuple[UnitGroup, torch.Tensor]]:
    """``(group, activation)`` for every unit group of ``net`` on ``obs``: one forward in eval
    mode without gradients (the network's mode is restored)."""
    groups = net.unit_groups()
    outputs: dict[int, torch.Tensor] = {}
    hooks = [
        g.activation.register_forward_hook(lambda m, i, out, k=k: outputs.__setitem__(k, out.detach()))
        for k, g in enumerate(groups)
    ]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(obs)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return [(g, outputs[k]) for k, g in enumerate(groups)]


def spatial_columns(group: UnitGroup, reader: nn.Module, activation: torch.Tensor) -> int:
    """Columns of ``reader``'s weight per unit and expansion copy: ``H*W`` when a flatten sits
    between a conv activation and a linear reader, else 1."""
    flattened = isinstance(reader, nn.Linear) and group.unit_dim == 1
    return activation[0].numel() // (expansion(group.activation) * group.num_units) if flattened else 1


def outgoing_columns(group: UnitGroup, reader: nn.Module, activation: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The column indices of ``reader``'s weight that read units ``idx`` (every expansion copy and position)."""
    expand = expansion(group.activation)
    spatial = spatial_columns(group, reader, activation)
    offsets = torch.arange(expand, device=idx.device)[:, None, None] * group.num_units
    cols = (offsets + idx[None, :, None]) * spatial + torch.arange(spatial, device=idx.device)
    return cols.flatten()


@torch.no_grad()
def replace_units(
    networks: Networks,
    chosen: list[tuple[UnitGroup, torch.Tensor, torch.Tensor]],
    fresh: nn.Module,
    restart_steps: bool = False,
) -> None:
    """For each ``(group, idx, activation)`` of ``chosen``, replace units ``idx`` of ``group`` in the
    online network: incoming parameters (weight rows, bias, per-unit norm affine) copied from the
    fresh initialisation ``fresh`` (by module name), outgoing weight columns set to zero; the
    optimizer state of exactly those rows and columns zeroed (``optim.reset_state_entries``; step
    counts restarted with ``restart_steps``)."""
    names = {id(m): n for n, m in networks.online.named_modules()}
    fresh_modules = dict(fresh.named_modules())
    optimizer = networks.optimizer
    for group, idx, activation in chosen:
        for m in group.incoming:
            fresh_params = dict(fresh_modules[names[id(m)]].named_parameters())
            for pname, p in m.named_parameters():
                p[idx] = fresh_params[pname][idx]
                reset_state_entries(optimizer, p, idx, dim=0, restart_steps=restart_steps)
        for m in group.outgoing:
            cols = outgoing_columns(group, m, activation, idx)
            w = raw_weight(m)
            w.index_fill_(1, cols, 0.0)
            reset_state_entries(optimizer, w, cols, dim=1, restart_steps=restart_steps)


def gradient_scores(group: UnitGroup) -> torch.Tensor | None:
    """GraMa scores ``[num_units]`` of ``group`` from the gradient left on its producing layer's
    weight (``incoming[0]``, ``[units, ...]``): ``g_i = mean_j |dL/dW_ij|`` over the unit's incoming
    weights (and kernel positions), ``s_i = g_i / mean_k g_k`` (the mean clamped at 1e-12, so a
    layer without any gradient scores 0 everywhere). None when the weight holds no gradient."""
    grad = raw_weight(group.incoming[0]).grad
    if grad is None:
        return None
    g = grad.abs().flatten(1).mean(dim=1)
    return g / g.mean().clamp_min(1e-12)
