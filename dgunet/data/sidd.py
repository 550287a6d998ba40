"""Cut SIDD-Medium sRGB pairs into random training patches.

Source layout: scene folders `src/*/` each holding `*GT_SRGB*.PNG` and the matching
`*NOISY_SRGB*.PNG` (the SIDD-Medium download), or those files directly in `src/`.
Output: `dst/input/{scene}_{k}.png` (noisy) and `dst/target/{scene}_{k}.png` (clean),
k = 1..per_image, where scene is the GT file name without `_GT_SRGB`, e.g. `0001_010`.
(The published script wrote `groundtruth/`, which its own loader never read.)

Usage: python -m dgunet.data.sidd SRC DST [--patch 256] [--per-image 300] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from dgunet.data.io import save_png_atomic
from dgunet.errors import DataError
from dgunet.imagefiles import is_image

_GT = re.compile(r"GT_SRGB", re.IGNORECASE)


def _noisy_for(gt: Path) -> Path:
    return gt.with_name(_GT.sub("NOISY_SRGB", gt.name))


def scene_name(gt: Path) -> str:
    """'0001_GT_SRGB_010.PNG' -> '0001_010'."""
    return re.sub(r"_?GT_SRGB", "", gt.stem, flags=re.IGNORECASE)


def find_sidd_pairs(src: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(noisy, clean) file pairs in scene folders of `src` or in `src` itself."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"SIDD folder {src} does not exist; point it at SIDD_Medium_Srgb/Data")
    candidates = [p for p in src.glob("*") if p.is_file()] + list(src.glob("*/*"))
    gts = sorted(p for p in candidates if is_image(p) and _GT.search(p.name))
    if not gts:
        raise DataError(f"no *GT_SRGB* images in {src} or its sub-folders; is this SIDD-Medium?")
    missing = [gt for gt in gts if not _noisy_for(gt).is_file()]
    if missing:
        raise DataError(f"{len(missing)} clean image(s) lack their NOISY_SRGB partner, e.g. {missing[0]}")
    return [(_noisy_for(gt), gt) for gt in gts]


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path}; the file is damaged or not an image")
    return bgr[:, :, ::-1]


def cut_pair(noisy_path: Path, clean_path: Path, dst: Path, patch: int, per_image: int, seed: int) -> int:
    """Write `per_image` aligned random crops of one pair; returns the number written."""
    noisy, clean = _read_rgb(noisy_path), _read_rgb(clean_path)
    if noisy.shape != clean.shape:
        raise DataError(f"{noisy_path} and {clean_path} differ in size")
    height, width = clean.shape[:2]
    if height < patch or width < patch:
        raise DataError(f"{clean_path} is {width}x{height}, smaller than the {patch}px patch")
    scene = scene_name(clean_path)
    # Seeded by the scene name, so each scene's patches do not depend on the others.
    rng = np.random.default_rng([seed, zlib.crc32(scene.encode())])
    for k in range(1, per_image + 1):
        top = int(rng.integers(0, height - patch + 1))
        left = int(rng.integers(0, width - patch + 1))
        window = (slice(top, top + patch), slice(left, left + patch))
        save_png_atomic(dst / "input" / f"{scene}_{k}.png", noisy[window])
        save_png_atomic(dst / "target" / f"{scene}_{k}.png", clean[window])
    return per_image


def generate_sidd_patches(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    patch: int = 256,
    per_image: int = 300,
    seed: int = 1234,
    workers: int = 0,
) -> int:
    """Cut every SIDD pair under `src` into patches under `dst`; returns the patch count."""
    pairs = find_sidd_pairs(src)
    dst = Path(dst)
    (dst / "input").mkdir(parents=True, exist_ok=True)
    (dst / "target").mkdir(parents=True, exist_ok=True)
    args = [(noisy, clean, dst, patch, per_image, seed) for noisy, clean in pairs]
    if workers <= 0:
        return sum(cut_pair(*a) for a in args)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(cut_pair, *zip(*args, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="SIDD_Medium_Srgb/Data")
    parser.add_argument("dst", help="output folder, e.g. Denoising/Datasets/train")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--per-image", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    count = generate_sidd_patches(args.src, args.dst, args.patch, args.per_image, args.seed, args.workers)
    print(f"wrote {count} patch pairs to {args.dst}/input and {args.dst}/target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
