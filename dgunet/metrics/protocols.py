"""Named evaluation protocols: which channel, which PSNR and which SSIM each table used.

Every protocol scores one (prediction, ground truth) pair of 8-bit images and returns
(PSNR dB, SSIM); a data set's score is the mean over its images. See docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dgunet.errors import DataError
from dgunet.metrics.color import rgb_to_y_opencv, rgb_to_y_studio
from dgunet.metrics.psnr import psnr
from dgunet.metrics.realblur import realblur_scores
from dgunet.metrics.ssim import ssim_matlab3d, ssim_skimage_gray, ssim_wang

Scores = tuple[float, float]
SIDD_BLOCK = 256


def _score_gopro(pred: np.ndarray, gt: np.ndarray) -> Scores:
    """PSNR over all channels (peak 255) and MATLAB-style 3-D SSIM, both on 8-bit RGB."""
    return psnr(pred, gt, 255.0), ssim_matlab3d(pred, gt)


def _blocks(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Row-major list of the size x size tiles of an image whose sides are multiples of size."""
    rows, cols = img.shape[0] // size, img.shape[1] // size
    return [
        img[r * size:(r + 1) * size, c * size:(c + 1) * size]
        for r in range(rows) for c in range(cols)
    ]


def _score_sidd(pred: np.ndarray, gt: np.ndarray) -> Scores:
    """GoPro scoring per 256x256 block; a file holding several blocks scores their mean."""
    height, width = gt.shape[:2]
    if height % SIDD_BLOCK or width % SIDD_BLOCK:
        raise DataError(
            f"SIDD scores 256x256 blocks, got a {height}x{width} image (sides must be multiples of 256)"
        )
    pairs = zip(_blocks(pred, SIDD_BLOCK), _blocks(gt, SIDD_BLOCK), strict=True)
    scores = [_score_gopro(p, g) for p, g in pairs]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def _score_deraining(pred: np.ndarray, gt: np.ndarray) -> Scores:
    """MATLAB rgb2ycbcr Y (rounded to uint8), PSNR peak 255 and Wang's ssim_index on it."""
    y_pred, y_gt = rgb_to_y_studio(pred), rgb_to_y_studio(gt)
    return psnr(y_pred, y_gt, 255.0), ssim_wang(y_pred, y_gt, 255.0)


def _score_cs(pred: np.ndarray, gt: np.ndarray) -> Scores:
    """OpenCV full-range Y, PSNR 20 log10(255 / rmse) in float64, scikit-image default SSIM."""
    y_pred, y_gt = rgb_to_y_opencv(pred), rgb_to_y_opencv(gt)
    return psnr(y_pred, y_gt, 255.0), ssim_skimage_gray(y_pred, y_gt, 255.0)


def _y_float(img: np.ndarray) -> np.ndarray:
    """Unrounded studio-range Y (MATLAB rgb2ycbcr on im2double input, times 255): the SR field's Y."""
    return img.astype(np.float64) if img.ndim == 2 else rgb_to_y_studio(img, rounded=False)


def _score_y(pred: np.ndarray, gt: np.ndarray, border: int = 0) -> Scores:
    """PSNR (peak 255) and Wang's ssim_index on unrounded Y, `border` pixels cropped on every side."""
    y_pred, y_gt = _y_float(pred), _y_float(gt)
    if border:
        if min(y_gt.shape) <= 2 * border + 10:
            raise DataError(f"an image of {y_gt.shape[0]}x{y_gt.shape[1]} is too small to crop a border of "
                            f"{border} and still fit the 11x11 SSIM window")
        y_pred, y_gt = y_pred[border:-border, border:-border], y_gt[border:-border, border:-border]
    return psnr(y_pred, y_gt, 255.0), ssim_wang(y_pred, y_gt, 255.0)


def _sr_scorer(scale: int) -> Callable[[np.ndarray, np.ndarray], Scores]:
    def score(pred: np.ndarray, gt: np.ndarray) -> Scores:
        return _score_y(pred, gt, border=scale)

    return score


@dataclass(frozen=True)
class Protocol:
    """One table's scoring rule.

    Attributes:
        name: registry key, also the CLI's ``--protocol`` value.
        description: one line for help texts and reports.
        scorer: (pred uint8, gt uint8) -> (psnr, ssim) on images already checked to match.
        same_channels: whether the two images must also have the same number of channels
            (False for CS, which reduces both to Y first).
    """

    name: str
    description: str
    scorer: Callable[[np.ndarray, np.ndarray], Scores]
    same_channels: bool = True

    def score(
        self, pred: np.ndarray, gt: np.ndarray, names: tuple[str, str] = ("prediction", "ground truth")
    ) -> Scores:
        """(PSNR, SSIM) of one pair of uint8 images, HxW or HxWxC (RGB order).

        ``names`` (usually the two file paths) go into every DataError raised here, e.g. for
        images of different sizes, which is checked before any work (before ECC for RealBlur).
        """
        for img, name in zip((pred, gt), names, strict=True):
            if np.asarray(img).dtype != np.uint8:
                raise DataError(f"{name}: expected an 8-bit image, got dtype {np.asarray(img).dtype}")
        pred_shape, gt_shape = np.shape(pred), np.shape(gt)
        compared = (pred_shape, gt_shape) if self.same_channels else (pred_shape[:2], gt_shape[:2])
        if compared[0] != compared[1]:
            raise DataError(
                f"{names[0]} is {_describe(pred_shape)} but {names[1]} is {_describe(gt_shape)}; "
                f"the {self.name} protocol needs images of the same size"
            )
        try:
            psnr_value, ssim_value = self.scorer(pred, gt)
        except DataError as err:
            raise DataError(f"{names[0]} vs {names[1]}: {err}") from err
        return float(psnr_value), float(ssim_value)


def _describe(shape: tuple[int, ...]) -> str:
    """'480x320 (3 channels)' style text for error messages."""
    channels = shape[2] if len(shape) == 3 else 1
    return f"{shape[0]}x{shape[1]} ({channels} channel{'s' if channels != 1 else ''})"


def _build_registry() -> dict[str, Protocol]:
    protocols = [
        Protocol("gopro", "GoPro/HIDE: RGB PSNR (peak 255) + MATLAB-style 3-D SSIM", _score_gopro),
        Protocol("realblur", "RealBlur: ECC-aligned, masked PSNR + masked Gaussian SSIM",
                 realblur_scores),
        Protocol("deraining", "Rain100L/H, Test100/1200/2800: studio Y (rounded), PSNR + "
                 "Wang ssim_index", _score_deraining),
        Protocol("sidd", "SIDD: per 256x256 block, RGB PSNR + MATLAB-style 3-D SSIM", _score_sidd),
        Protocol("cs", "Compressive sensing: OpenCV Y, float PSNR + scikit-image SSIM", _score_cs,
                 same_channels=False),
        # Known-operator benchmarks (dgunet/benchmarks, docs/known_tasks.md).
        *(Protocol(f"sr_x{s}", f"Super-resolution x{s}: unrounded studio Y, {s}-pixel border cropped, "
                   f"PSNR + Wang ssim_index", _sr_scorer(s)) for s in (2, 3, 4)),
        Protocol("nonblind", "Non-blind deblurring: RGB PSNR (peak 255) + MATLAB-style 3-D SSIM", _score_gopro),
        Protocol("nonblind_y", "Non-blind deblurring on Y: unrounded studio Y, PSNR + Wang ssim_index",
                 _score_y),
        Protocol("gaussian", "Gaussian denoising: RGB PSNR (peak 255) + MATLAB-style 3-D SSIM", _score_gopro),
    ]
    return {p.name: p for p in protocols}


PROTOCOLS: dict[str, Protocol] = _build_registry()


def get_protocol(name: str | Protocol) -> Protocol:
    """Look a protocol up by name (a Protocol is passed through); unknown names raise DataError."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise DataError(
            f"unknown evaluation protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None
