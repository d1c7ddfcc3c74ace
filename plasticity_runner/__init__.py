"""plasticity-runner: config-driven experiments on loss of plasticity in deep RL.

Reproduces and extends Lyle et al., "Understanding Plasticity in Neural Networks" (ICML 2023).
"""

from .metrics import load_arrays, load_run, load_sweep
from .version import __version__

__all__ = ["load_sweep", "load_run", "load_arrays", "__version__"]
