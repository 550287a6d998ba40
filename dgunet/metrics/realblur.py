"""RealBlur protocol: align the restored image to the ground truth, then score inside the overlap.

RealBlur's ground truth is not pixel-aligned with the blurred input, so the published
evaluation first matches the restored image's intensity to the ground truth, registers it with
OpenCV's ECC (homography), warps it, and scores PSNR and SSIM only where the warped image has
data. The steps below follow that published evaluation (facts, re-implemented here).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from dgunet.errors import DataError
from dgunet.metrics.psnr import check_same_shape, psnr_masked
from dgunet.metrics.ssim import ssim_masked

ECC_ITERATIONS = 100
ECC_EPS = 0.0
ECC_GAUSS_FILTER = 5


def match_intensity(restored: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Scale ``restored`` by the least-squares gain towards ``gt``.

    Minimising sum (gt - s * restored)^2 over one scalar s (all pixels and channels together,
    no offset term) gives s = sum(gt * restored) / sum(restored^2). This is the published
    RealBlur evaluation's "simple intensity matching"; a fit with an offset would change its
    numbers, so none is used. An all-black ``restored`` has no defined gain and is returned
    unchanged.

    Args:
        restored, gt: float32 arrays of the same shape (HxW or HxWxC), values in [0, 1].

    Returns:
        float32 array shaped like ``restored``.
    """
    energy = float(np.sum(restored * restored, dtype=np.float64))
    if energy == 0:
        return restored
    gain = float(np.sum(gt * restored, dtype=np.float64)) / energy
    return (restored * gain).astype(np.float32)


def _gray(img: np.ndarray) -> np.ndarray:
    """float32 HxW luma for ECC (OpenCV's RGB->GRAY weights); 2-D input is returned as is."""
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def ecc_homography(gt_gray: np.ndarray, restored_gray: np.ndarray) -> np.ndarray:
    """Homography mapping ground-truth pixel coordinates into the restored image.

    ``cv2.findTransformECC`` with MOTION_HOMOGRAPHY, 100 iterations, eps 0 (so it always runs
    all 100), Gaussian pre-filter 5, started at the identity. When ECC fails (it raises on
    flat or uncorrelated images) the identity is returned with a warning, so one bad image
    does not stop a whole evaluation.

    Args:
        gt_gray, restored_gray: float32 HxW images in [0, 1].

    Returns:
        float32 3x3 matrix, for ``warpPerspective`` with WARP_INVERSE_MAP.
    """
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPS)
    try:
        _, warp = cv2.findTransformECC(
            gt_gray, restored_gray, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, ECC_GAUSS_FILTER
        )
    except cv2.error as err:
        message = str(err).strip().splitlines()[-1]
        warnings.warn(f"ECC alignment failed ({message}); scoring unaligned", stacklevel=2)
        return np.eye(3, dtype=np.float32)
    return warp


def align_to_gt(restored: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity-match, register and warp ``restored`` onto ``gt``.

    The restored image is warped with bicubic interpolation and reflected borders; a ones
    image is warped with nearest-neighbour and zero borders to give the 0/1 mask of pixels
    that came from inside the restored image. Both images are then zeroed outside the mask.

    Args:
        restored, gt: float32 HxW or HxWxC arrays in [0, 1] of the same shape.

    Returns:
        (aligned restored, masked gt, mask), float32 arrays shaped like ``gt``.
    """
    check_same_shape(restored, gt, ("restored image", "ground truth"))
    matched = match_intensity(restored, gt)
    warp = ecc_homography(_gray(gt), _gray(matched))
    size = (gt.shape[1], gt.shape[0])
    aligned = cv2.warpPerspective(
        matched, warp, size, flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    mask = cv2.warpPerspective(
        np.ones_like(matched), warp, size, flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    # warpPerspective drops a trailing axis of length 1; keep the input's shape.
    aligned, mask = aligned.reshape(gt.shape), mask.reshape(gt.shape)
    return aligned * mask, gt * mask, mask


def realblur_scores(pred_uint8: np.ndarray, gt_uint8: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of the RealBlur protocol on 8-bit images.

    Both images become float32 in [0, 1] (value / 255), the prediction is aligned with
    :func:`align_to_gt`, then PSNR (data range 1, MSE over the masked values of all channels)
    and :func:`~dgunet.metrics.ssim.ssim_masked` are computed. The aligned image is not clipped,
    as in the published evaluation (bicubic warping can overshoot [0, 1] slightly).

    Args:
        pred_uint8, gt_uint8: uint8 HxWx3 (RGB) or HxW arrays of the same shape.
    """
    check_same_shape(pred_uint8, gt_uint8, ("prediction", "ground truth"))
    if min(np.shape(gt_uint8)[:2]) < 11:
        raise DataError(f"RealBlur scoring needs at least 11x11 pixels, got {np.shape(gt_uint8)}")
    pred = np.asarray(pred_uint8, dtype=np.float32) / 255.0
    gt = np.asarray(gt_uint8, dtype=np.float32) / 255.0
    aligned, gt_masked, mask = align_to_gt(pred, gt)
    return (
        psnr_masked(gt_masked, aligned, mask, data_range=1.0),
        ssim_masked(gt_masked, aligned, mask, data_range=1.0),
    )
