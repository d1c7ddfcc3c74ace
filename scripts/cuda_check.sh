#!/usr/bin/env bash
# The first run on a GPU machine, one command (under 12 minutes on one GPU), writing cuda_check.json:
#   bash scripts/cuda_check.sh                  # run every step (needs a CUDA device; exit 2 without one)
#   bash scripts/cuda_check.sh --dry-run        # list every step, each skipped with the reason (any machine)
#   bash scripts/cuda_check.sh --out PATH       # where the JSON goes (default: ./cuda_check.json)
# The steps and their tolerances: scripts/cuda_check.py (its docstring).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/cuda_check.py" "$@"
