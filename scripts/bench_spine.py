"""Kept for old commands: the spine benchmark is now ``scripts/bench.py --only train,probe --archs mlp``.

    python scripts/bench_spine.py [bench.py options]     # e.g. --quick, --device cuda, --repeats 5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import main  # noqa: E402

if __name__ == "__main__":
    main(["--only", "train,probe", "--archs", "mlp", *sys.argv[1:]])
