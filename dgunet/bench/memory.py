"""Peak memory of one run: the process's resident set on the CPU, the allocator's growth on CUDA."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable

import torch

from dgunet.bench.timer import sync


def gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def rss_bytes() -> int:
    """Current resident set size of this process (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0), so that it measures what follows only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the last reset (VmHWM), else since the process started (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim), so that the RSS peak of the
    next run counts what that run allocates, not pages kept from earlier paths."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: the peak may then undercount


def cuda_peak(run: Callable[[], object]) -> int:
    """Peak CUDA memory `run` allocates on top of what was allocated before it.

    The absolute max_memory_allocated() would count every other path's model copy (and, in the
    training bench, its optimizer state) held by this process; reset_peak_memory_stats() sets
    the peak to the current allocation, so peak - resident is this run's own working memory.
    """
    sync("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    run()
    sync("cuda")
    return torch.cuda.max_memory_allocated() - resident
