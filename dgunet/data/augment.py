"""Pure augmentation functions on (C, H, W) tensors, as the published training loaders use them.

Randomness always comes from an explicit `numpy.random.Generator`, never from global state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dgunet.data.io import LUMA
from dgunet.errors import ConfigError, DataError

DIHEDRAL_MODES = 9  # randint(0, 8) in the published code: 0 and 8 are both identity


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def pad_to(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Pad bottom and right so that (C, H, W) becomes at least `size`.

    Reflect padding as published; reflection cannot pad by as much as the side
    length, so tiny images fall back to replicate padding.
    """
    height, width = img.shape[-2:]
    pad_h = max(_size2(size)[0] - height, 0)
    pad_w = max(_size2(size)[1] - width, 0)
    if pad_h == 0 and pad_w == 0:
        return img
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    # F.pad wants a batch dimension for non-constant modes on every torch version.
    return F.pad(img[None], (0, pad_w, 0, pad_h), mode=mode)[0]


def random_crop(
    inp: torch.Tensor,
    tgt: torch.Tensor,
    size: int | tuple[int, int],
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random (size x size) window of two (C, H, W) images of equal H, W."""
    if inp.shape[-2:] != tgt.shape[-2:]:
        raise DataError(f"input {tuple(inp.shape)} and target {tuple(tgt.shape)} differ in size")
    crop_h, crop_w = _size2(size)
    height, width = tgt.shape[-2:]
    if crop_h > height or crop_w > width:
        raise DataError(f"crop {crop_h}x{crop_w} exceeds image {height}x{width}; pad first")
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
    return inp[window], tgt[window]


def center_crop(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Central window of a (C, H, W) image; offsets rounded as torchvision's center_crop."""
    crop_h, crop_w = _size2(size)
    height, width = img.shape[-2:]
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return img[..., top : top + crop_h, left : left + crop_w]


def dihedral(img: torch.Tensor, mode: int) -> torch.Tensor:
    """One of the published `randint(0, 8)` outcomes on a (C, H, W) tensor.

    0, 8: identity; 1: flip rows (upside down); 2: flip columns (mirror);
    3/4/5: rotate 90/180/270 degrees counter-clockwise; 6: flip rows then rotate 90;
    7: flip columns then rotate 90. Modes 0..7 are the 8 distinct symmetries of a square.
    """
    rows, cols = img.dim() - 2, img.dim() - 1
    if mode in (0, 8):
        return img
    if mode == 1:
        return img.flip(rows)
    if mode == 2:
        return img.flip(cols)
    if mode in (3, 4, 5):
        return torch.rot90(img, k=mode - 2, dims=(rows, cols))
    if mode == 6:
        return torch.rot90(img.flip(rows), dims=(rows, cols))
    if mode == 7:
        return torch.rot90(img.flip(cols), dims=(rows, cols))
    raise ConfigError(f"dihedral mode must be in 0..8, got {mode}")


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) luma 0.299 R + 0.587 G + 0.114 B."""
    weights = torch.tensor(LUMA, dtype=img.dtype, device=img.device).view(3, 1, 1)
    return (img * weights).sum(dim=-3, keepdim=True)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend a (3, H, W) RGB image with its grayscale: 0 -> gray, 1 -> unchanged.

    The same operation as torchvision's adjust_saturation (PIL's ImageEnhance.Color),
    with the result clamped to [0, 1].
    """
    return (factor * img + (1.0 - factor) * grayscale(img)).clamp(0.0, 1.0)


def random_saturation_factor(rng: np.random.Generator) -> float | None:
    """Published deblurring draw: with probability 1/3 a factor in (0.8, 1.2], else None."""
    if rng.integers(0, 3) != 1:
        return None
    return 1.0 + (0.2 - 0.4 * float(rng.random()))
