"""Shipped known-operator models: `load_pretrained("deblurring")` returns the model of
`pretrained/` in eval mode. The manifest and its files are `dgunet.shipped`'s (re-exported here,
the names users import)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dgunet.shipped import (
    MANIFEST,
    MAX_BYTES,
    Entry,
    export,
    find,
    pretrained_dir,
    read_manifest,
    sha256,
    shipped_weights,
    weights_path,
    write_manifest,
)

__all__ = ["MANIFEST", "MAX_BYTES", "Entry", "export", "find", "load_pretrained", "pretrained_dir",
           "read_manifest", "sha256", "shipped_weights", "weights_path", "write_manifest"]


def load_pretrained(name_or_task: str, scale: int | None = None, device: str | torch.device = "cpu",
                    folder: Path | None = None) -> nn.Module:
    """The shipped model, strictly loaded, in eval mode on `device`."""
    from dgunet.testrun.loading import load_model

    entry = find(name_or_task, scale, folder)
    return load_model(entry.task, weights_path(entry, folder), device=device).model  # its own config
