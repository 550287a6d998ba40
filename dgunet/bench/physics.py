"""`python -m dgunet bench --physics`: what the known operators cost inside a DGUNet forward.

With a known degradation every stage's gradient step computes A^T(A x - y): one A and one A^T per
stage, 7 stages per forward. This times those 7 pairs against the forward of the published
deblurring DGUNet (n_feat 80) at the same size, in one process, taking turns run after run (so
load from other processes spreads over all of them), and reports medians and the share.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dgunet.bench.machine import machine
from dgunet.bench.timer import time_in_turns
from dgunet.models.registry import build_model
from dgunet.physics.blur import Blur
from dgunet.physics.downsample import Downsample

STAGES = 7  # gradient steps per DGUNet forward


@dataclass
class Timing:
    name: str
    seconds: float  # median


def random_kernel(size: int, seed: int = 0) -> Tensor:
    """(size, size) positive kernel summing to 1 (random: the FFT's cost does not depend on values)."""
    k = torch.rand(size, size, generator=torch.Generator().manual_seed(seed))
    return k / k.sum()


def gradient_steps(op, x: Tensor) -> Callable[[], Tensor]:
    """The operator work of one forward: STAGES times A^T(A x - y)."""
    y = op.A(x)

    def run() -> Tensor:
        for _ in range(STAGES):
            g = op.A_adjoint(op.A(x) - y)
        return g

    return run


def operator_share(device: str = "cpu", size: int = 256, batch: int = 1, warmup: int = 1, repeats: int = 3
                   ) -> list[Timing]:
    """Median seconds of the DGUNet deblurring forward (first) and of each operator's 7 gradient steps."""
    model = build_model("deblurring", "DGUNet").eval().to(device)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    ops = {
        "Blur 25x25 circular (FFT)": Blur(random_kernel(25)),
        "Blur 25x25 reflect (conv)": Blur(random_kernel(25), padding="reflect"),
        "Downsample x4 bicubic": Downsample(4),
        "Downsample x4 gaussian (FFT)": Downsample(4, "gaussian"),
    }

    def forward() -> Tensor:
        return model(x)[0]

    runs = {"DGUNet forward": forward}
    runs.update({name: gradient_steps(op.to(device), x) for name, op in ops.items()})
    with torch.no_grad():
        times, _ = time_in_turns(runs, warmup, repeats, device)
    return [Timing(name, statistics.median(t)) for name, t in times.items()]


def report(timings: list[Timing], size: int, batch: int) -> str:
    model, *ops = timings
    lines = [f"machine: {machine()}",
             f"published deblurring DGUNet (n_feat 80), {batch}x3x{size}x{size}: forward "
             f"{model.seconds * 1e3:.0f} ms (median)",
             "",
             f"| operator | {STAGES} x A^T(A x - y) (ms) | share of the forward |",
             "|---|---|---|"]
    for t in ops:
        lines.append(f"| {t.name} | {t.seconds * 1e3:.2f} | {100 * t.seconds / model.seconds:.2f}% |")
    return "\n".join(lines)


def run_physics_bench(device: str = "cpu", size: int = 256, batch: int = 1, warmup: int = 1,
                      repeats: int = 3) -> int:
    print(report(operator_share(device, size, batch, warmup, repeats), size, batch))
    return 0
