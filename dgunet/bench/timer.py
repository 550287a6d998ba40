"""The one timer of every benchmark: warm each path up, then time the paths in turns.

Taking turns run after run (rather than all runs of one path, then the next) spreads the load
of other processes over every path, so the ratios between paths stay meaningful on a shared
machine even when the absolute times drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

Output = TypeVar("Output")


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously; the CPU does not)."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_in_turns(runs: dict[str, Callable[[], Output]], warmup: int, repeats: int, device: str = "cpu"
                  ) -> tuple[dict[str, list[float]], dict[str, Output]]:
    """Warm every path up, then time them in turns.

    runs: name -> a no-argument callable doing one run. Each timed run starts and ends with a
    device sync, so that it counts its own kernels only. Returns each path's `repeats` seconds
    and its last output (from the warm-up when `repeats` is 0).
    """
    outputs: dict[str, Output] = {}
    for name, run in runs.items():
        for _ in range(warmup):
            outputs[name] = run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            outputs[name] = run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times, outputs
