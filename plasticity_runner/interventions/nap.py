"""Normalize-and-Project, NaP (Lyle et al. 2024, "Normalization and effective learning rates in
reinforcement learning"): layer norm, plus a projection of each weight matrix back to its initial
norm after every optimizer step, so the effective learning rate of the normalised layers stays
constant instead of decaying as the weights grow.

1. Build time: the ``layer_norm`` network option (the ``layer_norm`` intervention's normalisation,
   see ``layer_norm.py``); with both selected the option is set once.
2. After every optimizer step: ``W <- W * ||W_0|| / ||W||`` (Frobenius norm of the whole tensor,
   one scale per layer) for the weight of every ``nn.Linear`` and ``nn.Conv2d`` of the online
   network's body (the trained tensor, ``parametrizations.weight.original`` under spectral norm),
   ``||W_0||`` its norm as built, recorded in ``on_build`` and kept in the checkpoint.

Projected: the weight matrices / conv kernels of the body (MLP, CNNs: every hidden layer; ResNet:
every conv and the shortcut convs; ViT: patch embedding, attention ``qkv`` and ``proj``, the
feed-forward layers). Not projected: biases, the norms' gains and offsets, ViT's class token and
position embeddings, and, unless ``project_output_layer: true``, the output layer (the head: it
is followed by no normalisation, so its norm sets the scale of the Q-values rather than an
effective learning rate). Which parameters the paper projects is an open choice here (its text was
not available offline): ours follows the argument of the method, a weight whose layer output is
normalised is scale-invariant. Layers that appear after the build (plasticity injection's new
head) are not projected. A weight whose norm is zero is left alone.

Optimizer state: untouched (the projection rescales the live tensors in place).
The projection runs after every other after-step hook (``REGISTRY`` order), so the norms hold at
the end of every step, after ReDo / continual backprop / scheduled resets changed the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import registry
from ..nets.layers import raw_weight
from .base import Intervention, Networks


@dataclass
class NaPConfig:
    project_output_layer: bool = False  # also project the output layer's weight


def projected_layers(net: nn.Module, include_output: bool) -> dict[str, nn.Module]:
    """Name -> layer whose weight NaP projects: every ``Linear`` / ``Conv2d`` of the body, and the
    head's output layers when ``include_output``."""
    out = {f"body.{n}": m for n, m in net.body.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    if include_output:
        out.update({f"head.{n}": m for n, m in net.head.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))})
    return out


class NaP(Intervention):
    name = "nap"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.layers: dict[str, nn.Module] = {}
        self.initial_norms: dict[str, torch.Tensor] = {}  # layer name -> ||W_0|| (0-dim, on the device)

    def network_options(self, options: dict[str, Any]) -> None:
        options["layer_norm"] = True

    def on_build(self, networks: Networks) -> None:
        self.layers = projected_layers(networks.online, bool(self.cfg.project_output_layer))
        self.initial_norms = {n: raw_weight(m).detach().norm() for n, m in self.layers.items()}

    @torch.no_grad()
    def after_step(self, networks: Networks, step: int) -> None:
        weights = [raw_weight(m) for m in self.layers.values()]
        norms = torch._foreach_norm(weights)
        scales = [torch.where(n > 0, n0 / n, torch.ones_like(n)) for n, n0 in zip(norms, self.initial_norms.values())]
        torch._foreach_mul_(weights, scales)

    def state_dict(self) -> dict:
        return {"initial_norms": {n: t.clone() for n, t in self.initial_norms.items()}}

    def load_state_dict(self, state: dict, networks: Networks) -> None:
        for name, value in state.get("initial_norms", {}).items():
            self.initial_norms[name].copy_(value)


registry.register("intervention", "nap", NaPConfig, build=NaP, phase="after_step")
