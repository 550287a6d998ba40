"""Regenerate the benchmark degradation fixtures: `python -m dgunet.benchmarks.generate [--out DIR]`.

Writes kernels/<name>.npy (float64, sum 1) and protocol.json into DIR (default: this package's
folder). Everything is drawn from NumPy generators with fixed seeds and written with fixed
formatting, so a regeneration gives the same protocol bytes and the same kernels to within the
last bit of NumPy's vectorised math, which differs between CPUs (tests/test_known_tasks.py checks
both). Benchmarks read the stored files, so their results never depend on the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np

from dgunet.atomic import write_bytes_atomic, write_text_atomic
from dgunet.data.kernels import gaussian_blur_kernel, motion_kernel

SEED = 20220619  # the first day of CVPR 2022
MOTION_SIZES = (13, 15, 17, 19, 21, 23, 25, 25)  # 8 motion kernels, up to 25x25
# (size, sigma_x, sigma_y, angle): 2 isotropic, 2 anisotropic Gaussians
GAUSSIANS = ((25, 1.6, None, 0.0), (25, 2.4, None, 0.0), (25, 3.0, 1.0, math.pi / 4),
             (25, 2.5, 0.8, 3 * math.pi / 4))

PROTOCOL = {
    "noise_seed": SEED,
    "nonblind": {"sigmas": [0.01, 0.03], "padding": "circular",
                 "kernels": [f"motion_{i + 1:02d}" for i in range(len(MOTION_SIZES))]
                 + [f"gauss_{i + 1:02d}" for i in range(len(GAUSSIANS))]},
    "sr": {"scales": [2, 3, 4], "kernel": "bicubic", "sigma": 0.0},
    "gaussian": {"sigmas_255": [15, 25, 50]},
    "inputs": "degraded images are rounded to 8 bits before restoration",
}


def kernels() -> dict[str, np.ndarray]:
    """name -> kernel, in the protocol's order."""
    out = {}
    for i, size in enumerate(MOTION_SIZES):
        out[f"motion_{i + 1:02d}"] = motion_kernel(np.random.default_rng([SEED, i]), size)
    for i, (size, sx, sy, angle) in enumerate(GAUSSIANS):
        out[f"gauss_{i + 1:02d}"] = gaussian_blur_kernel(size, sx, sy, angle)
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def protocol_text() -> str:
    return json.dumps(PROTOCOL, indent=1, sort_keys=True) + "\n"


def generate(out: Path) -> list[Path]:
    """Write every fixture under `out`; returns the written paths."""
    written = [write_bytes_atomic(out / "kernels" / f"{name}.npy", npy_bytes(k))
               for name, k in kernels().items()]
    written.append(write_text_atomic(out / "protocol.json", protocol_text()))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the benchmark degradation fixtures.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="target folder")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
