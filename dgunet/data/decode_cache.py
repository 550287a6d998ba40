"""Opt-in decode cache for training images (DATA.DECODE_CACHE): decode each file once.

A training item reads two full-size images to cut one patch: for GoPro's 1280x720 PNGs,
decoding is nearly all of a loader worker's time (docs/training.md, "Feeding the GPU").
With a cache folder, each image's decoded pixels are written once as an uncompressed .npy
and memory-mapped on every later read; the conversion to a float tensor is `read_image`'s
own (`image_from_array`), so the samples are the same as without the cache. Costs disk:
H x W x 3 bytes per 8-bit image (GoPro train: 2 x 2103 x 2.8 MB = 11.6 GB).

Entries are named by the source's resolved path, size and modification time, so an edited
image is decoded again; several loader workers may fill the cache at once (atomic writes).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from dgunet.atomic import atomic_open
from dgunet.data.io import decode_image, image_from_array


def cache_file(path: Path, cache_dir: Path) -> Path:
    """The .npy under cache_dir for image `path` (changes when the file changes)."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{path.stem}-{key}.npy"


def decoded(path: str | os.PathLike, cache_dir: str | os.PathLike) -> np.ndarray:
    """`decode_image(path)`, from the cache (memory-mapped, read-only) when it is there."""
    path, cache_dir = Path(path), Path(cache_dir)
    if not path.is_file():
        return decode_image(path)  # the usual "not found" error
    entry = cache_file(path, cache_dir)
    if entry.is_file():
        return np.load(entry, mmap_mode="r")
    array = decode_image(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(entry, "wb") as f:
        np.save(f, array)
    return array


def read_image_cached(path: str | os.PathLike, cache_dir: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Same tensor as `read_image(path, channels)`, decoded at most once per file version."""
    return image_from_array(decoded(path, cache_dir), path, channels)
