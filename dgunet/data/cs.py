"""Compressive-sensing data: random grayscale (Y) crops for training, Y images for testing.

Training Y is BT.601 studio range, Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on
0..255 RGB, divided by 255. Testing Y is OpenCV's full-range YCrCb Y of the 8-bit image
(0.299 R + 0.587 G + 0.114 B, rounded), which equals the gray value of gray images.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dgunet.data.io import list_images, read_image
from dgunet.errors import ConfigError, DataError

STUDIO_Y = (65.481, 128.553, 24.966)


def studio_y(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> (H, W) float64 Y in [16/255, 235/255]."""
    weights = torch.tensor(STUDIO_Y, dtype=torch.float64).view(3, 1, 1)
    # (65.481 R255 + ...) / 255 with R255 = 255 R is simply 65.481 R + ...
    return (16.0 + (rgb.double() * weights).sum(dim=0)) / 255.0


def load_y_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W) float64 in 0..255: OpenCV full-range YCrCb Y of the 8-bit colour image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found; check the test set folder")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}; the file is damaged or not an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[:, :, 0].astype(np.float64)


def _pad_reflect(y: np.ndarray, crop: int) -> np.ndarray:
    """Reflect-pad an (H, W) array at bottom/right to at least crop x crop."""
    pad_h, pad_w = max(crop - y.shape[0], 0), max(crop - y.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return y
    # numpy's reflect repeats itself for pads longer than the side, unlike torch's.
    return np.pad(y, ((0, pad_h), (0, pad_w)), mode="reflect")


class CSCropDataset(Dataset):
    """Items are (1, crop, crop) float32 Y crops; `crops_per_image` per image and epoch.

    Item i uses image i // crops_per_image: a random crop, then horizontal flip,
    vertical flip and transpose, each with probability 1/2. All images are read once,
    in the constructor (so forked workers share them); `cache_dtype="uint8"` stores Y
    rounded to 1/255 steps in a quarter of the memory, for large sets such as DIV2K.
    Randomness as in PairedImageDataset: seeded by (seed, epoch, i); call `set_epoch`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        crop: int = 32,
        crops_per_image: int = 200,
        seed: int = 1234,
        cache_dtype: str = "float32",
    ) -> None:
        if cache_dtype not in ("float32", "uint8"):
            raise ConfigError(f"cache_dtype must be 'float32' or 'uint8', got {cache_dtype!r}")
        if crop < 1 or crops_per_image < 1:
            raise ConfigError("crop and crops_per_image must be positive")
        files = list_images(root)
        if not files:
            raise DataError(f"folder {root} holds no images for compressive-sensing training")
        self.files = files
        self.crop = crop
        self.crops_per_image = crops_per_image
        self.seed = seed
        self.epoch = 0
        self.cache_dtype = cache_dtype
        self.images = [self._cache(_pad_reflect(self._y(path), crop)) for path in files]

    @staticmethod
    def _y(path: Path) -> np.ndarray:
        return studio_y(read_image(path)).numpy()

    def _cache(self, y: np.ndarray) -> np.ndarray:
        if self.cache_dtype == "uint8":
            return np.rint(y * 255.0).astype(np.uint8)
        return y.astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.crops_per_image * len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index // self.crops_per_image]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        top = int(rng.integers(0, image.shape[0] - self.crop + 1))
        left = int(rng.integers(0, image.shape[1] - self.crop + 1))
        patch = image[top : top + self.crop, left : left + self.crop]
        if patch.dtype == np.uint8:
            patch = patch.astype(np.float32) / 255.0
        hflip, vflip, transpose = rng.random(3) < 0.5
        if hflip:
            patch = patch[:, ::-1]
        if vflip:
            patch = patch[::-1, :]
        if transpose:
            patch = patch.T
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]
