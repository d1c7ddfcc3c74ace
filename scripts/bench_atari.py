"""Kept for old commands: the Atari benchmark is now ``scripts/bench.py --only atari``.

    python scripts/bench_atari.py [bench.py options]   # e.g. --game breakout --envs 1 4 8 --atari-steps 2000
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import main  # noqa: E402

if __name__ == "__main__":
    main(["--only", "atari", *sys.argv[1:]])
