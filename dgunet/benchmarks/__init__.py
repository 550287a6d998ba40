"""The fixed, seeded benchmark degradations of the known-operator protocols (docs/known_tasks.md).

Files (regenerate with `python -m dgunet.benchmarks.generate`; a test checks the bytes):
  kernels/motion_01..08.npy  camera-trajectory motion kernels, 13x13 to 25x25
  kernels/gauss_01..04.npy   2 isotropic and 2 anisotropic Gaussian kernels, 25x25
  protocol.json              noise levels, SR scales, the noise seed

Protocols, each a list of `Case`s applied to every clean test image:
  nonblind  every kernel x noise 1% and 3% (std on [0, 1] images), circular blur
  sr        bicubic downsampling x2, x3, x4, no noise
  gaussian  AWGN with sigma 15, 25, 50 (on 0..255)
The noise of (image, case) comes from NumPy's generator seeded by (noise_seed, crc32(image name),
case index): the same inputs on every machine, whatever the order of the images.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgunet.data.kernels import load_kernel_folder
from dgunet.errors import ConfigError

BENCH_DIR = Path(__file__).resolve().parent
PROTOCOL_NAMES = ("nonblind", "sr", "gaussian")
# scikit-image photos for training and for tuning the classical baselines: none of them is a test
# photo (dgunet.testrun.known.PHOTOS: astronaut, chelsea, coffee, rocket).
TRAIN_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "page", "text",
                "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")


@dataclass(frozen=True)
class Case:
    """One degradation applied to every test image.

    kind: blur | sr | noise (as DEGRADE.KIND); kernel: (k,k) float64 or None; sigma: noise std on
    [0, 1] images; scale: SR factor (1 otherwise); index: position in the protocol (noise seed).
    """

    name: str
    kind: str
    kernel: np.ndarray | None
    sigma: float
    scale: int
    index: int

    def noise_rng(self, image_name: str, seed: int) -> np.random.Generator:
        return np.random.default_rng([seed, zlib.crc32(image_name.encode()), self.index])


def protocol() -> dict:
    return json.loads((BENCH_DIR / "protocol.json").read_text())


def benchmark_kernels() -> dict[str, np.ndarray]:
    return load_kernel_folder(BENCH_DIR / "kernels")


def cases(name: str, scales: list[int] | None = None, kernel_dir: str | os.PathLike | None = None,
          sigmas: list[float] | None = None) -> list[Case]:
    """The cases of protocol `name`; `kernel_dir` replaces the benchmark kernels (nonblind),
    `scales` selects SR factors, `sigmas` (std on [0, 1]) replaces the noise levels."""
    spec = protocol()
    if name == "nonblind":
        if kernel_dir:
            kernels = load_kernel_folder(kernel_dir)
        else:
            stored = benchmark_kernels()
            kernels = {k: stored[k] for k in spec["nonblind"]["kernels"]}
        levels = sigmas if sigmas is not None else spec["nonblind"]["sigmas"]
        pairs = [(k, s) for k in kernels for s in levels]
        return [Case(f"{k}_noise{s * 100:g}", "blur", kernels[k], float(s), 1, i)
                for i, (k, s) in enumerate(pairs)]
    if name == "sr":
        chosen = scales or spec["sr"]["scales"]
        bad = [s for s in chosen if s not in spec["sr"]["scales"]]
        if bad:
            raise ConfigError(f"--scale {bad[0]}: the SR protocol has scales {spec['sr']['scales']}")
        sigma = float(spec["sr"]["sigma"]) if sigmas is None else float(sigmas[0])
        return [Case(f"x{s}", "sr", None, sigma, s, i) for i, s in enumerate(chosen)]
    if name == "gaussian":
        levels = sigmas if sigmas is not None else [s / 255 for s in spec["gaussian"]["sigmas_255"]]
        return [Case(f"sigma{s * 255:g}", "noise", None, float(s), 1, i) for i, s in enumerate(levels)]
    raise ConfigError(f"unknown benchmark protocol {name!r}; choose one of {', '.join(PROTOCOL_NAMES)}")
