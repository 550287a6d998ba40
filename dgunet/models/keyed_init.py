"""Deterministic weights that depend only on each state-dict key and shape.

This is the rule under which the reference outputs of the published implementation were
produced (see the README, "Verifying against the published code"): any implementation
with the same keys gets the same weights, so outputs can be compared without checkpoints.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn


def keyed_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    last = key.split(".")[-1]
    if len(shape) == 4:
        value = z * 0.6 / (shape[1] * shape[2] * shape[3]) ** 0.5
    elif len(shape) == 2:
        value = z / shape[1] ** 0.5
    elif z.numel() == 1:
        value = 0.5 + 0.05 * z if last.startswith("r") else 0.25 + 0.05 * z
    elif last == "weight" and ".norm." in f".{key}":
        value = 1 + 0.1 * z
    else:
        value = 0.02 * z
    return value.float()


def tie_groups(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict keys that are one parameter, in state-dict order (groups of 2+)."""
    by_storage: dict[int, list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        by_storage.setdefault(id(tensor), []).append(key)
    return [keys for keys in by_storage.values() if len(keys) > 1]


def keyed_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The key-named weights for `model`; tied keys take their group's first key's values."""
    state = {k: keyed_tensor(k, tuple(v.shape)) for k, v in model.state_dict().items()}
    for group in tie_groups(model):
        for key in group[1:]:
            state[key] = state[group[0]]
    return state
