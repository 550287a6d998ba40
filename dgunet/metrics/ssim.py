"""The four SSIM variants behind the paper's tables.

They differ in window, padding, colour handling and precision, and give visibly different
numbers on the same images, so each protocol must call its own:

* :func:`ssim_wang`: Wang et al.'s original ``ssim_index`` (deraining, on Y);
* :func:`ssim_matlab3d`: MATLAB's default ``ssim`` on 8-bit RGB (GoPro, HIDE, SIDD);
* :func:`ssim_skimage_gray`: scikit-image defaults (compressive sensing, on Y);
* :func:`ssim_masked`: scikit-image Gaussian SSIM averaged inside a mask (RealBlur).

Shared constants: K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L the data range.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from dgunet.errors import DataError
from dgunet.metrics.psnr import check_same_shape

K1, K2 = 0.01, 0.03
GAUSS_SIGMA = 1.5
# Window size used by both MATLAB ssim (2*ceil(3*sigma)+1) and ssim_index (fixed 11).
GAUSS_SIZE = 2 * math.ceil(3 * GAUSS_SIGMA) + 1


def gaussian_taps(size: int = GAUSS_SIZE, sigma: float = GAUSS_SIGMA) -> np.ndarray:
    """1-D Gaussian exp(-x^2 / (2 sigma^2)) on x = -(size//2)..size//2, summing to 1; float64."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return taps / taps.sum()


def _smooth(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable filtering with ``taps`` along every axis, replicate padding; keeps x's dtype.

    A normalised N-D Gaussian is the product of normalised 1-D ones, so one pass per axis
    equals the full N-D window. scipy's mode 'nearest' repeats the edge value as far as
    needed, which is replicate padding even when the window is wider than the axis (the
    11-tap window over the 3-deep colour axis).
    """
    for axis in range(x.ndim):
        x = correlate1d(x, taps, axis=axis, mode="nearest")
    return x


def _ssim_map(a: np.ndarray, b: np.ndarray, taps: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM map from Gaussian local statistics (population variances), same shape/dtype as a."""
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    mu_a, mu_b = _smooth(a, taps), _smooth(b, taps)
    var_a = _smooth(a * a, taps) - mu_a * mu_a
    var_b = _smooth(b * b, taps) - mu_b * mu_b
    cov = _smooth(a * b, taps) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def _require_2d(a: np.ndarray, what: str) -> None:
    if a.ndim != 2:
        raise DataError(f"{what} needs a 2-D grayscale image (e.g. Y), got shape {a.shape}")


def ssim_wang(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Wang et al.'s original ``ssim_index`` on a grayscale image, in float64.

    11x11 Gaussian window (sigma 1.5, normalised), 'valid' filtering: the map covers only the
    positions where the whole window fits, (H-10)x(W-10); its mean is returned.

    Args:
        a, b: HxW arrays (e.g. the rounded Y channel), H and W at least 11.
    """
    check_same_shape(a, b)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _require_2d(a, "ssim_wang")
    if min(a.shape) < GAUSS_SIZE:
        raise DataError(f"ssim_wang needs images of at least 11x11 pixels, got {a.shape}")
    # Padding only changes outputs within 5 px of the border; cropping them leaves 'valid'.
    r = GAUSS_SIZE // 2
    ssim_map = _ssim_map(a, b, gaussian_taps(), data_range)[r:-r, r:-r]
    return float(np.mean(ssim_map))


def _matlab_range_and_dtype(x: np.ndarray, data_range: float | None) -> tuple[float, type]:
    """MATLAB's defaults: integer classes run in single with L = class range; floats keep
    their precision with L = 1."""
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return (float(info.max - info.min) if data_range is None else data_range), np.float32
    if x.dtype == np.float32:
        return (1.0 if data_range is None else data_range), np.float32
    return (1.0 if data_range is None else data_range), np.float64


def ssim_matlab3d(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Reimplementation of MATLAB's documented default ``ssim(A, ref)`` (not checked against
    MATLAB itself).

    An HxWx3 image is one 3-D volume: Gaussian sigma 1.5 over all three dimensions, 11 taps
    in each (2*ceil(3*sigma)+1), replicate padding on every axis (also the 3-deep colour axis),
    K1 0.01, K2 0.03, and the mean of the whole HxWx3 map, no border cropped. A 2-D input gets
    the 2-D version of the same rules. This is not per-channel SSIM, which scores differently.

    Args:
        a, b: HxW or HxWx3 arrays of the same shape and dtype class. Integer inputs are computed
            in float32 (MATLAB "single") with L = range of the type (255 for uint8); float32
            and float64 inputs keep their precision with L = 1.
        data_range: overrides L.
    """
    a, b = np.asarray(a), np.asarray(b)
    check_same_shape(a, b)
    if a.ndim not in (2, 3):
        raise DataError(f"ssim_matlab3d needs an HxW or HxWxC image, got shape {a.shape}")
    peak, dtype = _matlab_range_and_dtype(a, data_range)
    ssim_map = _ssim_map(a.astype(dtype), b.astype(dtype), gaussian_taps().astype(dtype), peak)
    return float(np.mean(ssim_map, dtype=np.float64))


def ssim_skimage_gray(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """scikit-image ``structural_similarity`` with its defaults on a 2-D image, in float64.

    Defaults: 7x7 uniform window, sample covariance (N-1), mean over the map with a 3-pixel
    border dropped. Used by the compressive-sensing test on Y in 0..255.
    """
    check_same_shape(a, b)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    _require_2d(a, "ssim_skimage_gray")
    if min(a.shape) < 7:
        raise DataError(f"scikit-image SSIM needs images of at least 7x7 pixels, got {a.shape}")
    return float(structural_similarity(a, b, data_range=data_range))


def _skimage_gaussian_pad(sigma: float = GAUSS_SIGMA, truncate: float = 3.5) -> int:
    """Half-width of scikit-image's Gaussian window (scipy's radius int(truncate*sigma + 0.5))."""
    return int(truncate * sigma + 0.5)


def ssim_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """RealBlur SSIM: scikit-image Gaussian SSIM map averaged over a mask, per channel.

    The map comes from ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, full=True)`` (per channel for colour). The map and the mask
    lose a 5-pixel border (the half-width of the window, where scikit-image's own mean also
    stops); then each channel scores sum(map * mask) / sum(mask) and the channel scores are
    averaged.

    Args:
        a, b: float HxW or HxWxC images in [0, data_range], zero outside the mask.
        mask: array of the same shape, 1 on valid pixels and 0 elsewhere.
    """
    check_same_shape(a, b)
    check_same_shape(a, mask, ("image", "mask"))
    channel_axis = 2 if a.ndim == 3 else None
    _, ssim_map = structural_similarity(
        a, b, gaussian_weights=True, sigma=GAUSS_SIGMA, use_sample_covariance=False,
        data_range=data_range, full=True, channel_axis=channel_axis,
    )
    pad = _skimage_gaussian_pad()
    inner = (slice(pad, -pad), slice(pad, -pad))
    weights = np.asarray(mask, dtype=np.float64)[inner]
    weighted = np.asarray(ssim_map, dtype=np.float64)[inner] * weights
    per_channel_den = weights.sum(axis=(0, 1))
    if np.any(per_channel_den == 0):
        raise DataError("the mask is empty inside the SSIM border: no valid pixels to compare")
    return float(np.mean(weighted.sum(axis=(0, 1)) / per_channel_den))
