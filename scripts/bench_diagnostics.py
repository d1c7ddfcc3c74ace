"""Kept for old commands: the diagnostics benchmark is now ``scripts/bench.py --only diagnostics``.

    python scripts/bench_diagnostics.py [bench.py options]   # e.g. --quick --archs resnet18 vit
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import main  # noqa: E402

if __name__ == "__main__":
    main(["--only", "diagnostics", *sys.argv[1:]])
