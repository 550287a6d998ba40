"""Reading and writing images: OpenCV underneath, (C, H, W) float tensors in [0, 1] on top."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from dgunet.atomic import write_bytes_atomic
from dgunet.errors import ConfigError, DataError
from dgunet.imagefiles import is_image

# ITU-R BT.601 luma weights for R, G, B; OpenCV's gray and full-range YCrCb Y use them too.
LUMA = (0.299, 0.587, 0.114)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; extensions case-insensitive."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; check the data set path")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def _scale(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 / uint16 / float image -> float32 in [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype in (np.float32, np.float64):
        return array.astype(np.float32)
    raise DataError(f"{path}: unsupported pixel type {array.dtype}; convert it to 8-bit PNG")


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """OpenCV's (H, W), (H, W, 1), BGR or BGRA -> (H, W, 3) RGB."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return array[:, :, 2::-1]  # drops alpha and reverses BGR


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Read an image as a float32 tensor in [0, 1].

    channels=3 -> (3, H, W) RGB, gray files repeated to three channels;
    channels=1 -> (1, H, W) luma 0.299 R + 0.587 G + 0.114 B (unrounded; the gray value
    itself for gray files).
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    return image_from_array(decode_image(path), path, channels)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """The file's pixels as OpenCV decodes them: (H, W) or (H, W, C) BGR(A), its own dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found; check the data set folder")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DataError(f"cannot read image {path}; the file is damaged or not an image")
    return array


def image_from_array(array: np.ndarray, path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """`read_image`'s conversion of decoded pixels (see `decode_image`); `path` names errors."""
    array = _scale(np.asarray(array), Path(path))
    if channels == 1 and (array.ndim == 2 or array.shape[2] == 1):
        # Gray files keep their exact values (float luma weights do not sum to exactly 1).
        return torch.from_numpy(np.ascontiguousarray(array.reshape(1, *array.shape[:2])))
    rgb = _to_rgb(array)
    if channels == 1:
        gray = rgb @ np.asarray(LUMA, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(gray[None]))
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) float tensor -> (H, W, C) or (H, W) uint8, RGB order.

    Clamps to [0, 1] and rounds to nearest (half to even) in the tensor's precision
    (float64 stays float64, anything else float32), exactly as skimage's img_as_ubyte.
    """
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    array = image.detach().to("cpu", dtype).clamp(0, 1).numpy()
    array = np.rint(array * array.dtype.type(255)).astype(np.uint8)
    if array.ndim == 3:
        array = array.transpose(1, 2, 0)
        if array.shape[2] == 1:
            array = array[:, :, 0]
    return array


def save_png_atomic(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write an 8-bit PNG so that readers never see a half-written file.

    `image` is a float tensor ((C, H, W) or (H, W), values in [0, 1]) or a uint8 array
    ((H, W, 3) RGB or (H, W)). The file is written next to its destination and moved
    into place with os.replace, which is atomic on one file system.
    """
    path = Path(path)
    array = to_uint8(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"arrays to save must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = array[:, :, ::-1]  # RGB -> OpenCV's BGR
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise DataError(f"OpenCV could not encode {path} as PNG")
    return write_bytes_atomic(path, encoded.tobytes())
