"""DND sRGB benchmark: denoise the 20 crops of each of the 50 images, write the submission.

Input (the benchmark's download): `info.mat` (MATLAB v7.3) whose `info.boundingboxes` holds one
reference per image to a 20 x 4 array of 1-based inclusive boxes (first row, first column, last
row, last column), and `images_srgb/0001.mat` ... with `InoisySRGB`, an H x W x 3 float image in
[0, 1]. Output, under the result folder:

* `0001_01.png` ...: the 8-bit crops, to look at;
* `mat/0001_01.mat` ...: `Idenoised_crop`, the float32 crop, the per-crop files the benchmark's
  own bundling script reads;
* `bundled/0001.mat` ...: the submission, per image `Idenoised` (a 1 x 20 cell of float32
  crops), `israw` = false and `eval_version` = '1.0'. Upload this folder to the server; the
  ground truth is not public, so nothing is scored here.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import torch

from dgunet.data.io import save_png_atomic
from dgunet.errors import DataError
from dgunet.testrun.context import Context
from dgunet.testrun.datasets import DatasetSpec
from dgunet.testrun.matfiles import load_mat_variable, savemat_atomic
from dgunet.testrun.restoring import restore_images
from dgunet.testrun.results import DatasetResult

SUBMIT_NOTE = "no public ground truth: submit {} to the DND benchmark server"


def read_boxes(info_path: Path) -> list[np.ndarray]:
    """Per image an (n, 4) int array of 1-based inclusive boxes (row1, col1, row2, col2)."""
    if not h5py.is_hdf5(str(info_path)):
        raise DataError(f"{info_path} is not a MATLAB v7.3 (HDF5) file; use the benchmark's info.mat")
    with h5py.File(info_path, "r") as f:
        if "info" not in f or "boundingboxes" not in f["info"]:
            raise DataError(f"{info_path} has no variable info.boundingboxes")
        refs = np.asarray(f["info"]["boundingboxes"]).ravel()
        # Each reference points at a MATLAB n x 4 array, stored transposed (4 x n) in HDF5.
        return [np.asarray(f[ref]).T.astype(np.int64) for ref in refs]


def crop(image: np.ndarray, box: np.ndarray, where: str) -> np.ndarray:
    """The (h, w, 3) crop of an (H, W, 3) image for one 1-based inclusive box."""
    r1, c1, r2, c2 = (int(v) for v in box)
    if not (1 <= r1 <= r2 <= image.shape[0] and 1 <= c1 <= c2 <= image.shape[1]):
        raise DataError(f"{where}: box {box.tolist()} lies outside the {image.shape[:2]} image")
    return image[r1 - 1:r2, c1 - 1:c2]


def load_noisy(path: Path) -> np.ndarray:
    image = load_mat_variable(path, "InoisySRGB")
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{path}: InoisySRGB has shape {image.shape}, expected H x W x 3")
    return np.asarray(image, dtype=np.float32)


def denoise_crop(ctx: Context, patch: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 in [0,1] -> denoised (h, w, 3) float32, clamped to [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None]
    out = restore_images(ctx.model, x, ctx.restore)[0].clamp(0, 1)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def run_dnd(ctx: Context, spec: DatasetSpec, folder: Path, out_dir: Path) -> DatasetResult:
    start = time.perf_counter()
    all_boxes = read_boxes(folder / "info.mat")
    count = 0
    for i, boxes in enumerate(all_boxes):
        path = folder / "images_srgb" / f"{i + 1:04d}.mat"
        noisy = load_noisy(path)
        cells = np.empty((1, len(boxes)), dtype=object)  # saved as a 1 x n MATLAB cell
        for k, box in enumerate(boxes):
            name = f"{i + 1:04d}_{k + 1:02d}"
            cells[0, k] = denoise_crop(ctx, crop(noisy, box, f"{path} box {k + 1}"))
            save_png_atomic(out_dir / f"{name}.png", torch.from_numpy(cells[0, k]).permute(2, 0, 1))
            savemat_atomic(out_dir / "mat" / f"{name}.mat", {"Idenoised_crop": cells[0, k]})
            count += 1
        savemat_atomic(out_dir / "bundled" / f"{i + 1:04d}.mat",
                       {"Idenoised": cells, "israw": False, "eval_version": "1.0"})
        ctx.log(f"  image {i + 1}/{len(all_boxes)} ({len(boxes)} crops)")
    result = DatasetResult(ctx.task, spec.name, out_dir, count, time.perf_counter() - start, unit="crops")
    result.note = SUBMIT_NOTE.format(out_dir / "bundled")
    return result
