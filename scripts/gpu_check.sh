#!/usr/bin/env bash
# One-command check of a GPU machine: the cuda tests, inference and training benches, the data
# loader; rewrites the results section of docs/benchmarks.md; exits non-zero when a step failed.
#   scripts/gpu_check.sh                        # CUDA
#   scripts/gpu_check.sh --device cpu --quick   # any machine, about a minute
# The work is done by dgunet/gpucheck.py; PYTHON picks the interpreter (default: .venv, then python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    python="$(command -v python3)"
fi
exec "$python" -m dgunet.gpucheck "$@"
