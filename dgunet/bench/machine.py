"""What a benchmark ran on: the CPU model and the flags that pick torch's kernels, the GPU."""

from __future__ import annotations

import os
import platform

import torch

from dgunet.inference import cpu_has_fast_bf16

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides torch's CPU kernels


def cpu_description() -> str:
    """The CPU model and the vector/matrix flags in CPU_FLAGS it has (Linux /proc/cpuinfo)."""
    cpu, flags = platform.processor() or "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        have = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        flags = [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return f"{cpu} (flags: {' '.join(flags) or 'unknown'})"


def machine() -> str:
    """The CPU model, flags and core count, torch's threads, and the CUDA card if any."""
    text = (f"{cpu_description()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, native CPU bf16: {cpu_has_fast_bf16()}, "
            f"NNPACK: {torch.backends.nnpack.is_available()}")
    if torch.cuda.is_available():
        text += f"; GPU: {torch.cuda.get_device_name()}"
    return text
