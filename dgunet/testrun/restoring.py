"""Calling `dgunet.inference.restore` with the speed/accuracy options of the command line.

Only options that differ from restore's defaults are passed, so the faithful path (fp32, whole
image, no ensemble) is exactly `restore(model, images)`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from dgunet import inference
from dgunet.errors import ConfigError


@dataclass(frozen=True)
class RestoreOptions:
    tile: int | None = None
    overlap: int = 32
    self_ensemble: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    fast: bool = False

    def kwargs(self) -> dict:
        """The options that differ from the defaults (overlap only matters with a tile)."""
        default = RestoreOptions()
        chosen = {f.name: getattr(self, f.name) for f in fields(self)
                  if getattr(self, f.name) != getattr(default, f.name)}
        if self.tile is None:
            chosen.pop("overlap", None)
        return chosen


def check_supported(options: RestoreOptions) -> None:
    """ConfigError before any work when this dgunet.inference lacks a requested option."""
    accepted = inspect.signature(inference.restore).parameters
    missing = [name for name in options.kwargs() if name not in accepted]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"{flags}: not supported by this version of dgunet.inference.restore")


def restore_images(model: nn.Module, images: Tensor, options: RestoreOptions) -> Tensor:
    """(B,C,H,W) in [0,1] -> (B,C,H,W) float32 on the CPU, unclamped (callers clamp on saving)."""
    out = inference.restore(model, images, **options.kwargs())
    return out.detach().to("cpu", torch.float32)
