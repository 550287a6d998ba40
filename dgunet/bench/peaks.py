"""Peak arithmetic rates of the device, the denominators of MFU (model FLOP/s utilisation).

GPUs: dense (no 2:4 sparsity) peaks from the vendors' data sheets, in TFLOP/s. fp32 training
on Ampere and newer runs its convolutions in TF32 (PyTorch's default for cuDNN), so a fp32
path is measured against the TF32 peak there; Volta has no TF32 (fp32 peak) and no bf16.
CPUs: no table can know the clock and core count a job gets, so the peak is measured: the
best rate of a large matrix product in fp32 and bf16 with the current thread count.
"""

from __future__ import annotations

import time

import torch

# name fragment (lower case, most specific first) -> {precision: dense TFLOP/s}
GPU_PEAKS_TFLOPS: list[tuple[str, dict[str, float]]] = [
    ("h200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("h100 pcie", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("h100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("gh200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("a100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
    ("l40s", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.1}),
    ("a10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0}),
    ("rtx 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2}),
    ("rtx 3090", {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0}),
    ("v100", {"fp32": 15.7, "tf32": 15.7, "bf16": 125.0}),  # "bf16" here: fp16 tensor cores
    ("t4", {"fp32": 8.1, "tf32": 8.1, "bf16": 65.0}),  # fp16 tensor cores
]


def precision_of(amp: str) -> str:
    """The peak an AMP mode is measured against: fp16 and bf16 share the tensor-core peak."""
    return "fp32" if amp == "none" else "bf16"


def gpu_peaks(name: str) -> dict[str, float] | None:
    """{"fp32": FLOP/s, "bf16": FLOP/s} of a card by name (fp32 -> TF32 peak), None if unknown."""
    lowered = name.lower()
    for fragment, peaks in GPU_PEAKS_TFLOPS:
        if fragment in lowered:
            return {"fp32": peaks["tf32"] * 1e12, "bf16": peaks["bf16"] * 1e12}
    return None


def measure_gemm(dtype: torch.dtype, n: int = 1024, runs: int = 6) -> float:
    """Best FLOP/s of an n x n by n x n matrix product on the CPU, in dtype."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    best = float("inf")
    for i in range(runs + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        if i:  # the first call warms up oneDNN
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def peak_flops(device: str, threads: int | None = None) -> dict:
    """{"fp32": FLOP/s, "bf16": FLOP/s, "source": text}; empty of rates for an unknown card."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peaks = gpu_peaks(name)
        if peaks is None:
            return {"source": f"{name} is not in dgunet/bench/peaks.py (add its dense peaks there)"}
        return {**peaks, "source": f"{name} data sheet (fp32 paths against TF32)"}
    threads = threads or torch.get_num_threads()
    return {"fp32": measure_gemm(torch.float32), "bf16": measure_gemm(torch.bfloat16),
            "source": f"best 1024^3 GEMM, {threads} thread(s), measured before and after the timing"}
