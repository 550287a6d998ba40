"""Restoring images of any size with a DGUNet model.

The networks need sides that are multiples of 8 (image tasks: three 2x downsamplings) or 32
(compressive sensing: 32x32 blocks). `restore` reflect-pads the bottom and right edges up to
that multiple and crops the result back, so any size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def size_multiple(model: nn.Module) -> int:
    """The side multiple a model needs (8 for image tasks, 32 for CS); 8 if unknown."""
    return int(getattr(model, "size_multiple", 8))


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> tuple[Tensor, tuple[int, int]]:
    """Pad (B,C,H,W) at the bottom and right to multiples of `multiple` (and at least `min_size`).

    Returns the padded tensor and the original (H, W). Reflection needs a pad smaller than the
    side; for tiny inputs (a side shorter than the pad) we fall back to edge replication.
    """
    h, w = x.shape[-2:]
    pad_h = max((-h) % multiple, min_size - h)
    pad_w = max((-w) % multiple, min_size - w)
    if pad_h or pad_w:
        if mode == "reflect" and (pad_h >= h or pad_w >= w):
            mode = "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


def final_output(outputs: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """DGUNet returns the 7 stage images with the final one first; other models a tensor."""
    return outputs[0] if isinstance(outputs, list | tuple) else outputs


def forward_padded(model: nn.Module, x: Tensor) -> Tensor:
    """The final stage of `model` on (B,C,H,W) of any size; output (B,C_out,H,W)."""
    padded, (h, w) = pad_to_multiple(x, size_multiple(model), min_size=getattr(model, "min_size", 0))
    return final_output(model(padded))[..., :h, :w]


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"restore expects a (B,C,H,W) tensor, got {shape}; "
                         f"use img.unsqueeze(0) for a single (C,H,W) image")


@torch.inference_mode()
def restore(model: nn.Module, images: Tensor) -> Tensor:
    """Restore a batch: (B,C,H,W) float in [0,1] -> (B,C,H,W), the model's final stage.

    Runs on the model's device and dtype; the output is not clamped (clamp before saving).
    """
    _check_images(images)
    in_c = getattr(model, "in_c", images.shape[1])
    if images.shape[1] != in_c:
        raise ValueError(f"the model expects {in_c}-channel images, got {images.shape[1]} channels")
    param = next(model.parameters())
    x = images.to(device=param.device, dtype=param.dtype)
    return forward_padded(model, x)
