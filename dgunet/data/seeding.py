"""Seeds for reproducible runs and DataLoader workers."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, NumPy and torch (CPU and all GPUs) in this process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: derive python and NumPy seeds from the worker's torch seed.

    torch gives each worker `base_seed + worker_id`, where the base seed comes from the
    main process's torch RNG; python's and NumPy's generators would otherwise start
    identical in every forked worker.
    """
    del worker_id  # already part of torch.initial_seed()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

