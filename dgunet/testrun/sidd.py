"""SIDD validation blocks: denoise the .mat of noisy blocks, write Idenoised.mat and PNGs, score.

The published test reads `ValidationNoisyBlocksSrgb` (40 images x 32 blocks x 256 x 256 x 3,
uint8), divides by 255 in float32, restores every block (x8 self-ensemble), clamps to [0, 1] and
saves `Idenoised` with the same 5-D layout as float32 values in [0, 1] (scipy.io.savemat, v5),
plus `%04d_%02d.png` (image, block; 1-based) 8-bit files. We do the same; `--sidd-mat-dtype
uint8` stores the 8-bit values instead. Scores are those of the 8-bit blocks, per block with the
GoPro rules (the `sidd` protocol), averaged over all blocks.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dgunet.data.io import save_png_atomic, to_uint8
from dgunet.errors import DataError
from dgunet.evaluate import EvaluationResult, ImageScore
from dgunet.metrics import get_protocol
from dgunet.testrun.context import Context
from dgunet.testrun.datasets import SIDD_GT, SIDD_NOISY, DatasetSpec
from dgunet.testrun.matfiles import load_mat_variable, savemat_atomic
from dgunet.testrun.restoring import restore_images
from dgunet.testrun.results import DatasetResult


def load_blocks(path: Path, variable: str) -> np.ndarray:
    """The (images, blocks, H, W, 3) array of a SIDD block file, in MATLAB's axis order."""
    blocks = load_mat_variable(path, variable)
    if blocks.ndim != 5 or blocks.shape[-1] != 3:
        raise DataError(f"{path}: {variable} has shape {blocks.shape}; expected images x blocks x "
                        f"H x W x 3 (40x32x256x256x3 for the SIDD validation set)")
    return blocks


def block_tensor(block: np.ndarray) -> torch.Tensor:
    """(H,W,3) values in 0..255 -> (1,3,H,W) float32 in [0,1], as the published float32/255."""
    scaled = np.ascontiguousarray(block, dtype=np.float32) / np.float32(255)
    return torch.from_numpy(scaled).permute(2, 0, 1)[None]


def block_name(image: int, block: int) -> str:
    """0-based indices -> '0001_01' (the published PNG names)."""
    return f"{image + 1:04d}_{block + 1:02d}"


def run_sidd(ctx: Context, spec: DatasetSpec, folder: Path, out_dir: Path) -> DatasetResult:
    start = time.perf_counter()
    noisy = load_blocks(folder / f"{SIDD_NOISY}.mat", SIDD_NOISY)
    gt_path = folder / f"{SIDD_GT}.mat"
    gt = load_blocks(gt_path, SIDD_GT) if gt_path.is_file() else None
    if gt is not None and gt.shape != noisy.shape:
        raise DataError(f"{gt_path}: {SIDD_GT} is {gt.shape} but {SIDD_NOISY} is {noisy.shape}")
    dtype = np.uint8 if ctx.sidd_mat_dtype == "uint8" else np.float32
    denoised = np.empty(noisy.shape, dtype=dtype)
    scorer, scores = get_protocol("gopro"), []  # one block at a time = the sidd protocol
    n_images, n_blocks = noisy.shape[:2]
    for i in range(n_images):
        for k in range(n_blocks):
            out = restore_images(ctx.model, block_tensor(noisy[i, k]), ctx.restore)[0].clamp(0, 1)
            png = to_uint8(out)
            save_png_atomic(out_dir / f"{block_name(i, k)}.png", png)
            denoised[i, k] = png if dtype == np.uint8 else out.permute(1, 2, 0).numpy()
            if gt is not None:
                gt_block = np.asarray(gt[i, k], dtype=np.uint8)
                scores.append(ImageScore(block_name(i, k), *scorer.score(png, gt_block)))
        ctx.log(f"  image {i + 1}/{n_images} ({n_blocks} blocks)")
    savemat_atomic(out_dir / "Idenoised.mat", {"Idenoised": denoised})
    result = DatasetResult(ctx.task, spec.name, out_dir, n_images * n_blocks, time.perf_counter() - start,
                           unit="blocks")
    if gt is not None:
        result.scores = EvaluationResult(spec.protocol, scores)
    else:
        result.note = f"no {gt_path}: results not scored"
    return result
