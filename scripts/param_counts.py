"""Print the parameter counts of every architecture (default config) on every observation space.

Usage: python scripts/param_counts.py   -> the markdown table of docs/interventions.md.
Counts are for the scalar head with 10 actions (classification MDPs) or 18 (Atari's full action
set); the two-hot head multiplies the head's size by ``num_bins``.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from plasticity_runner.config import schemas
from plasticity_runner.nets import build_network

OBS = {
    "digits 1x8x8": ((1, 8, 8), 10),
    "MNIST 1x28x28": ((1, 28, 28), 10),
    "CIFAR-10 3x32x32": ((3, 32, 32), 10),
    "Atari 4x84x84": ((4, 84, 84), 18),
}


def count(arch: str, shape: tuple[int, ...], actions: int, **options) -> int:
    cfg = OmegaConf.structured(schemas()["architecture"][arch])
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        net = build_network(cfg, shape, actions, **options)
    return sum(p.numel() for p in net.parameters())


def main() -> None:
    print("| architecture | " + " | ".join(OBS) + " |")
    print("|---|" + "---:|" * len(OBS))
    for arch in schemas()["architecture"]:
        cells = [f"{count(arch, shape, a) / 1e6:.3f} M" for shape, a in OBS.values()]
        print(f"| `{arch}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
