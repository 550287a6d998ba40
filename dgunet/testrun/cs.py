"""Compressive-sensing test: the published tile protocol (see PROTOCOLS.md), scored on the float output.

Per image: Y = OpenCV full-range YCrCb Y of the 8-bit image (the gray value for gray images);
zero-pad right and bottom by `TILE - (side mod TILE)` (a whole extra tile when the side is
already a multiple, as published, which changes nothing inside the image but is kept so the
tiles, and so the numbers, are the published ones); cut 128 x 128 tiles, each restored on its
own (the model samples and reconstructs it); reassemble, crop, clip to [0, 1]. PSNR
`20 log10(255 / rmse)` and scikit-image SSIM (defaults, data_range 255) compare `restored * 255`
(float64, not rounded) with the original Y. The PNGs written are rounded to 8 bits (the
published script truncated them); the scores never come from the PNGs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dgunet.data.cs import load_y_image
from dgunet.data.io import list_images, save_png_atomic
from dgunet.data.paired import by_stem
from dgunet.evaluate import EvaluationResult, ImageScore
from dgunet.metrics import psnr, ssim_skimage_gray
from dgunet.testrun.context import Context
from dgunet.testrun.datasets import DatasetSpec
from dgunet.testrun.restoring import restore_images
from dgunet.testrun.results import DatasetResult

TILE = 128
TILES_PER_BATCH = 16  # results do not depend on it: tiles never interact


def pad_for_tiles(y: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(H, W) -> (H + tile - H % tile, W + tile - W % tile), zeros at the bottom and right."""
    h, w = y.shape
    return np.pad(y, ((0, tile - h % tile), (0, tile - w % tile)))


def split_tiles(padded: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(H, W), sides multiples of `tile` -> (N, tile, tile), row-major tile order."""
    h, w = padded.shape
    return padded.reshape(h // tile, tile, w // tile, tile).swapaxes(1, 2).reshape(-1, tile, tile)


def merge_tiles(tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `split_tiles`: (N, tile, tile) -> `shape`."""
    tile = tiles.shape[-1]
    rows, cols = shape[0] // tile, shape[1] // tile
    return tiles.reshape(rows, cols, tile, tile).swapaxes(1, 2).reshape(shape)


def reconstruct(ctx: Context, y: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Y (H, W) in 0..255 -> the reconstruction (H, W) float64 in [0, 1]."""
    padded = pad_for_tiles(y, tile)
    tiles = torch.from_numpy(split_tiles(padded / 255.0, tile).astype(np.float32))[:, None]
    outputs = [restore_images(ctx.model, tiles[s:s + TILES_PER_BATCH], ctx.restore)
               for s in range(0, len(tiles), TILES_PER_BATCH)]
    restored = torch.cat(outputs)[:, 0].numpy().astype(np.float64)
    full = merge_tiles(restored, padded.shape)
    return np.clip(full[: y.shape[0], : y.shape[1]], 0.0, 1.0)


def cs_scores(restored: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of restored (H, W) in [0,1] against Y (H, W) in 0..255, both float64."""
    scaled = restored * 255.0
    return psnr(scaled, y, 255.0), ssim_skimage_gray(scaled, y, 255.0)


def run_cs(ctx: Context, spec: DatasetSpec, folder: Path, out_dir: Path) -> DatasetResult:
    start = time.perf_counter()
    scores = []
    skipped = ctx.bad_files.get(spec.name, [])
    skip = {f.stem for f in skipped}
    for stem, path in by_stem(list_images(folder)).items():
        if stem in skip:
            continue
        y = load_y_image(path)
        restored = reconstruct(ctx, y)
        save_png_atomic(out_dir / f"{path.stem}.png", torch.from_numpy(restored)[None])
        score = ImageScore(path.stem, *cs_scores(restored, y))
        scores.append(score)
        ctx.log(f"  {path.name}: PSNR {score.psnr:.4f} dB, SSIM {score.ssim:.4f}")
    result = DatasetResult(ctx.task, spec.name, out_dir, len(scores), time.perf_counter() - start,
                           cs_ratio=ctx.cs_ratio, skipped=skipped)
    result.scores = EvaluationResult(spec.protocol, scores)
    return result
