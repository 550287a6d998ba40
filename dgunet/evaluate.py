"""`python -m dgunet evaluate`: score a folder of restored images against ground truth.

Pairs are matched by file stem (``0001.png`` pairs with ``0001.tif``) and scored with one of
the named protocols of :mod:`dgunet.metrics.protocols`. Only 8-bit images are accepted: the
paper's numbers are computed on 8-bit results, and silently rescaling a 16-bit file would give
numbers no table reports, so 16-bit and float images raise DataError.

JSON output has no infinity, so an infinite PSNR (identical images) is written as the string
``"inf"``; a mean over images that include one is ``"inf"`` too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dgunet.atomic import write_text_atomic
from dgunet.errors import DataError
from dgunet.imagefiles import IMAGE_EXTENSIONS, is_image
from dgunet.jsonio import json_safe
from dgunet.metrics.protocols import PROTOCOLS, Protocol, get_protocol

_LISTED_NAMES = 5  # how many names an error message shows per side


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass
class EvaluationResult:
    """Per-image scores and their means (a mean PSNR is inf when any image's is)."""

    protocol: str
    images: list[ImageScore] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        return float(np.mean([s.psnr for s in self.images]))

    @property
    def ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.images]))

    def to_json(self) -> dict:
        """The JSON document: {"protocol", "images": [{"name", "psnr", "ssim"}], "psnr", "ssim"}."""
        return {
            "protocol": self.protocol,
            "images": [
                {"name": s.name, "psnr": json_safe(s.psnr), "ssim": json_safe(s.ssim)}
                for s in self.images
            ],
            "psnr": json_safe(self.psnr),
            "ssim": json_safe(self.ssim),
        }

    def table(self) -> str:
        """Aligned text table: one row per image, then the means."""
        width = max([len("mean")] + [len(s.name) for s in self.images])
        rows = [f"{'image':<{width}}  {'PSNR':>9}  {'SSIM':>7}"]
        rows += [f"{s.name:<{width}}  {s.psnr:9.4f}  {s.ssim:7.4f}" for s in self.images]
        rows.append(f"{'mean':<{width}}  {self.psnr:9.4f}  {self.ssim:7.4f}")
        return "\n".join(rows)


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """Image files of ``folder`` (not recursive) keyed by stem; two files with one stem raise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_image(path):
            continue
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path} have the same name; keep only one")
        found[path.stem] = path
    return found


def _some(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f", ... ({len(names) - _LISTED_NAMES} more)" if len(names) > _LISTED_NAMES else ""
    return ", ".join(names[:_LISTED_NAMES]) + more


def match_pairs(
    pred_dir: str | Path, gt_dir: str | Path, allow_missing: bool = False, exclude: Collection[str] = ()
) -> list[tuple[str, Path, Path]]:
    """(stem, prediction path, ground-truth path) for every ground-truth image, sorted by stem.

    Every ground-truth image needs a prediction. A prediction without ground truth is an
    error too, unless ``allow_missing`` (then it is ignored). Stems in ``exclude`` (files a
    test left out) are ignored on both sides.
    """
    preds, gts = images_by_stem(pred_dir), images_by_stem(gt_dir)
    if exclude:
        preds = {k: v for k, v in preds.items() if k not in exclude}
        gts = {k: v for k, v in gts.items() if k not in exclude}
    if not gts:
        raise DataError(f"{gt_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    no_pred = gts.keys() - preds.keys()
    no_gt = set() if allow_missing else preds.keys() - gts.keys()
    if no_pred or no_gt:
        problems = []
        if no_pred:
            problems.append(f"{len(no_pred)} ground-truth image(s) in {gt_dir} have no "
                            f"prediction in {pred_dir}: {_some(no_pred)}")
        if no_gt:
            problems.append(f"{len(no_gt)} prediction(s) in {pred_dir} have no ground truth in "
                            f"{gt_dir}: {_some(no_gt)} (--allow-missing ignores these)")
        raise DataError("; ".join(problems))
    return [(stem, preds[stem], gts[stem]) for stem in sorted(gts)]


def load_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit image as uint8 HxW (gray) or HxWx3 (RGB; an alpha channel is dropped)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: cannot be read as an image")
    if img.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit image, got {img.dtype}; "
                        "the protocols score 8-bit results, save them as 8-bit")
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 2:
        return img
    raise DataError(f"{path}: expected 1, 3 or 4 channels, got shape {img.shape}")


def evaluate_arrays(
    protocol: str | Protocol, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]]
) -> EvaluationResult:
    """Score in-memory (name, pred uint8, gt uint8) pairs; names appear in error messages."""
    proto = get_protocol(protocol)
    result = EvaluationResult(proto.name)
    for name, pred, gt in pairs:
        scores = proto.score(pred, gt, (f"{name} (prediction)", f"{name} (ground truth)"))
        result.images.append(ImageScore(name, *scores))
    if not result.images:
        raise DataError("nothing to evaluate: no image pairs")
    return result


def _score_files(job: tuple[Protocol, str, Path, Path]) -> ImageScore:
    """Load and score one pair. Top-level so a process pool can pickle it (a Protocol pickles
    as long as its scorer is a module-level function)."""
    proto, name, pred_path, gt_path = job
    scores = proto.score(load_image(pred_path), load_image(gt_path), (str(pred_path), str(gt_path)))
    return ImageScore(name, *scores)


def evaluate_folders(
    protocol: str | Protocol,
    pred_dir: str | Path,
    gt_dir: str | Path,
    workers: int = 0,
    allow_missing: bool = False,
    exclude: Collection[str] = (),
) -> EvaluationResult:
    """Score every ground-truth image of ``gt_dir`` against the same-stem file of ``pred_dir``.

    ``workers`` > 0 scores pairs in that many processes (results keep the sorted order);
    0 scores them in this process.
    """
    proto = get_protocol(protocol)
    jobs = [(proto, stem, p, g) for stem, p, g in match_pairs(pred_dir, gt_dir, allow_missing, exclude)]
    if workers > 0:
        chunk = max(1, len(jobs) // (4 * workers))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            scores = list(pool.map(_score_files, jobs, chunksize=chunk))
    else:
        scores = [_score_files(job) for job in jobs]
    return EvaluationResult(proto.name, scores)


def write_json_atomic(path: str | Path, document: dict) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failure leaves any old file untouched.
    """
    write_text_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS),
                        help="scoring rule of the table to reproduce (see docs/evaluation.md)")
    parser.add_argument("--pred", required=True, help="folder of restored 8-bit images")
    parser.add_argument("--gt", required=True, help="folder of ground-truth 8-bit images")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("--workers", type=int, default=0,
                        help="score in this many processes (0: in this process)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="ignore predictions whose ground truth is missing")


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise DataError(f"--workers must be 0 or more, got {args.workers}")
    result = evaluate_folders(args.protocol, args.pred, args.gt, args.workers, args.allow_missing)
    print(f"protocol: {PROTOCOLS[result.protocol].description}")
    print(result.table())
    if args.json:
        write_json_atomic(args.json, result.to_json())
        print(f"wrote {args.json}")
    return 0
