"""Tiny synthetic test sets laid out like the real ones, and reduced-width checkpoints.

Images are odd-sized crops of scikit-image's sample photos; .mat files are written both the way
MATLAB v7.3 stores them (HDF5, axes reversed) and in the older v5 format.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import scipy.io
import torch
from skimage import data as skdata

from dgunet.models import build_model

REPO = Path(__file__).resolve().parents[1]
TINY = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}
# One thread per process: the suite runs on 2 cores, where oversubscription is very slow.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def photo(h: int, w: int, top: int = 0, left: int = 0, gray: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 RGB crop of the astronaut photo, or (h, w) of the camera photo."""
    if gray:
        return np.ascontiguousarray(skdata.camera()[top:top + h, left:left + w])
    return np.ascontiguousarray(skdata.astronaut()[top:top + h, left:left + w])


def degrade(img: np.ndarray, seed: int) -> np.ndarray:
    """A noisy copy (uint8), standing in for a blurred / rainy / noisy input."""
    rng = np.random.default_rng(seed)
    noisy = img.astype(np.float64) + rng.normal(0, 12, img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def write_image(path: Path, rgb_or_gray: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb_or_gray if rgb_or_gray.ndim == 2 else rgb_or_gray[:, :, ::-1]
    assert cv2.imwrite(str(path), img)
    return path


def make_paired(folder: Path, sizes: list[tuple[int, int]], target: bool = True) -> dict[str, np.ndarray]:
    """folder/input/*.png (+ target/*.png); returns stem -> input RGB."""
    inputs = {}
    for n, (h, w) in enumerate(sizes):
        clean = photo(h, w, top=40 * n, left=100 + 30 * n)
        stem = f"img_{n:03d}"
        inputs[stem] = degrade(clean, n)
        write_image(folder / "input" / f"{stem}.png", inputs[stem])
        if target:
            write_image(folder / "target" / f"{stem}.png", clean)
    return inputs


def sidd_blocks(n_images: int = 2, n_blocks: int = 2, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, gt) uint8 arrays shaped (images, blocks, size, size, 3), every block different."""
    gt = np.stack([np.stack([photo(size, size, top=size * i, left=200 + size * k)
                             for k in range(n_blocks)]) for i in range(n_images)])
    return degrade(gt, 7), gt


def write_mat(path: Path, name: str, array: np.ndarray, fmt: str) -> Path:
    """Write `array` (MATLAB axis order) as variable `name`: fmt 'v73' (HDF5) or 'v5'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "v5":
        scipy.io.savemat(path, {name: array})
        return path
    with h5py.File(path, "w") as f:
        # MATLAB writes column-major data, which HDF5 shows with the axes reversed.
        dset = f.create_dataset(name, data=np.ascontiguousarray(array.T))
        dset.attrs["MATLAB_class"] = np.bytes_(str(array.dtype) if array.dtype == np.uint8 else "double")
    return path


def make_sidd(folder: Path, fmt: str, noisy_name: str = "ValidationNoisyBlocksSrgb"):
    """The SIDD .mat pair in `fmt` ('v73' or 'v5'); returns (noisy, gt) in MATLAB axis order."""
    noisy, gt = sidd_blocks()
    write_mat(folder / "ValidationNoisyBlocksSrgb.mat", noisy_name, noisy, fmt)
    write_mat(folder / "ValidationGtBlocksSrgb.mat", "ValidationGtBlocksSrgb", gt, fmt)
    return noisy, gt


def make_dnd(folder: Path, boxes: list[np.ndarray], shape: tuple[int, int] = (70, 90)) -> list[np.ndarray]:
    """info.mat (HDF5, info.boundingboxes -> refs to n x 4 arrays) + images_srgb/%04d.mat."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    with h5py.File(folder / "info.mat", "w") as f:
        info, refs = f.create_group("info"), f.create_group("#refs#")
        ref_list = []
        for i, box in enumerate(boxes):
            target = refs.create_dataset(f"b{i}", data=np.asarray(box, dtype=np.float64).T)
            ref_list.append(target.ref)
        bb = info.create_dataset("boundingboxes", (1, len(boxes)), dtype=h5py.ref_dtype)
        bb[0, :] = ref_list
    for i in range(len(boxes)):
        image = photo(*shape, top=60 * i, left=150).astype(np.float32) / 255
        images.append(image)
        write_mat(folder / "images_srgb" / f"{i + 1:04d}.mat", "InoisySRGB", image, "v73")
    return images


def make_cs(folder: Path) -> dict[str, np.ndarray]:
    """A 33x47 gray .tif and a 128x128 colour .png; returns stem -> image."""
    images = {"odd": photo(33, 47, top=100, left=200, gray=True),
              "exact": photo(128, 128, top=150, left=180)}
    write_image(folder / "odd.tif", images["odd"])
    write_image(folder / "exact.png", images["exact"])
    return images


def tiny_checkpoint(path: Path, task: str, arch: str = "DGUNet", seed: int = 0,
                    wrap: bool = True, **extra) -> Path:
    """A reduced-width model saved as a published-style training checkpoint."""
    torch.manual_seed(seed)
    model = build_model(task, arch, **TINY, **extra)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as nn.DataParallel saved it
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "state_dict": state} if wrap else model.state_dict(), path)
    return path


def run_script(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a Python script/module with the test environment; output captured as text."""
    return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
