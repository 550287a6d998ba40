#!/usr/bin/env bash
# One-command check of a GPU machine (docs/gpu.md): the cuda tests, the inference and training
# benches, then optional steps (whole frames, data loader, torch.compile last), each under its
# own time limit; the passed steps' results go into docs/benchmarks.md; exits non-zero when a
# required step failed.
#   scripts/gpu_check.sh                        # CUDA, at most 10 minutes
#   scripts/gpu_check.sh --plan                 # the steps and their limits, nothing run
#   scripts/gpu_check.sh --device cpu --quick   # any machine, about a minute (docs/ untouched)
# The work is done by dgunet/bench/gpucheck.py, which knows nothing of the checkout: this script
# passes it the checkout's test file, data loader recipe and docs file (options given here win).
# PYTHON picks the interpreter (default: .venv, then python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    python="$(command -v python3)"
fi
checkout=(--cuda-tests tests/test_cuda.py --data-config Deblurring/training.yml --docs docs/benchmarks.md)
for arg in "$@"; do
    if [[ "$arg" == --quick ]]; then  # a dry run: the denoising loader, and no docs written unless asked
        checkout=(--cuda-tests tests/test_cuda.py --data-config Denoising/training.yml)
    fi
done
exec "$python" -m dgunet.bench.gpucheck "${checkout[@]}" "$@"
