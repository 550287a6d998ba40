"""Metric functions against hand-computed values and brute-force reference loops."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
from skimage.data import astronaut
from skimage.metrics import structural_similarity

from dgunet.errors import DataError
from dgunet.metrics import (
    PROTOCOLS,
    psnr,
    psnr_masked,
    psnr_torch,
    realblur_scores,
    rgb_to_y_opencv,
    rgb_to_y_studio,
    ssim_matlab3d,
    ssim_skimage_gray,
    ssim_wang,
)
from dgunet.metrics.color import round_half_away
from dgunet.metrics.realblur import ecc_homography

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _gauss(n: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(n) - n // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_from_windows(windows_a, windows_b, weights) -> float:
    """SSIM of one position from its two windows and the window weights (population stats)."""
    mu_a, mu_b = np.sum(weights * windows_a), np.sum(weights * windows_b)
    var_a = np.sum(weights * windows_a**2) - mu_a**2
    var_b = np.sum(weights * windows_b**2) - mu_b**2
    cov = np.sum(weights * windows_a * windows_b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / (
        (mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)
    )


def _brute_wang(a: np.ndarray, b: np.ndarray) -> float:
    """'valid' 11x11 Gaussian SSIM with an explicit loop over window positions."""
    w = np.outer(_gauss(), _gauss())
    h, wd = a.shape
    values = [
        _ssim_from_windows(a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11], w)
        for i in range(h - 10) for j in range(wd - 10)
    ]
    assert len(values) == (h - 10) * (wd - 10)
    return float(np.mean(values))


def _brute_3d(a: np.ndarray, b: np.ndarray) -> float:
    """Replicate-padded 11-tap Gaussian SSIM over every axis, one position at a time."""
    g = _gauss()
    w = g
    for _ in range(a.ndim - 1):
        w = np.multiply.outer(w, g)
    pa, pb = np.pad(a, 5, mode="edge"), np.pad(b, 5, mode="edge")
    values = []
    for idx in np.ndindex(a.shape):
        sl = tuple(slice(i, i + 11) for i in idx)
        values.append(_ssim_from_windows(pa[sl], pb[sl], w))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return astronaut()[120:184, 160:224].copy()  # 64x64x3 uint8, textured


def test_identical_images_psnr_inf_ssim_one(photo):
    y = rgb_to_y_studio(photo)
    assert psnr(photo, photo) == math.inf
    assert ssim_matlab3d(photo, photo) == pytest.approx(1.0, abs=1e-6)
    assert ssim_wang(y, y) == pytest.approx(1.0)
    assert ssim_skimage_gray(y, y) == pytest.approx(1.0)


def test_constant_offset_psnr():
    a = np.full((8, 9, 3), 100, np.uint8)
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)
    assert psnr(a / 255.0, (a + 5) / 255.0, data_range=1.0) == pytest.approx(
        20 * math.log10(255 / 5), abs=1e-9
    )


def test_psnr_shape_mismatch_is_data_error():
    with pytest.raises(DataError, match=r"shape \(4, 4\).*shape \(4, 5\)"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_psnr_torch_per_image_mean_and_clamp():
    target = torch.full((2, 3, 4, 4), 0.5)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.2
    expected = np.mean([20 * math.log10(1 / 0.1), 20 * math.log10(1 / 0.2)])
    assert psnr_torch(pred, target) == pytest.approx(expected, abs=1e-6)
    # Values above 1 are clamped first: 1.7 vs 1.0 is a perfect match.
    assert psnr_torch(torch.full((3, 2, 2), 1.7), torch.ones(3, 2, 2)) == math.inf
    pred[1] = target[1]
    assert psnr_torch(pred, target) == math.inf


def test_psnr_masked_counts_only_masked_values():
    a = np.zeros((4, 4, 3))
    b = np.zeros((4, 4, 3))
    mask = np.zeros((4, 4, 3))
    mask[:2] = 1
    b[:2] = 0.1  # error only inside the mask, MSE there 0.01
    assert psnr_masked(a, b, mask) == pytest.approx(20.0)


def test_round_half_away_from_zero():
    assert list(round_half_away(np.array([52.5, 53.5, 52.49, -0.5]))) == [53, 54, 52, -1]


def test_y_studio_values_and_halfway_case():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [5, 65, 25]]], np.uint8)
    # 16 + (65.481*5 + 128.553*65 + 24.966*25) / 255 = 52.5 exactly: MATLAB gives 53,
    # numpy's round-half-even would give 52.
    assert rgb_to_y_studio(rgb, rounded=False)[0, 2] == 52.5
    y = rgb_to_y_studio(rgb)
    assert y.dtype == np.uint8
    assert y.tolist() == [[16, 235, 53]]


def test_y_studio_rejects_gray():
    with pytest.raises(DataError, match="HxWx3"):
        rgb_to_y_studio(np.zeros((4, 4), np.uint8))


def test_y_opencv(photo):
    gray = photo[:, :, 1]
    assert rgb_to_y_opencv(gray) is gray
    expected = cv2.cvtColor(photo[:, :, ::-1].copy(), cv2.COLOR_BGR2YCrCb)[:, :, 0]
    np.testing.assert_array_equal(rgb_to_y_opencv(photo), expected)
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert rgb_to_y_opencv(red)[0, 0] == round(0.299 * 255)


def test_ssim_wang_matches_valid_window_loop():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (14, 15)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim_wang(a, b) == pytest.approx(_brute_wang(a, b), abs=1e-12)


def test_ssim_wang_too_small():
    with pytest.raises(DataError, match="11x11"):
        ssim_wang(np.zeros((10, 20)), np.zeros((10, 20)))


def test_ssim_matlab3d_matches_brute_force_volume(photo):
    a = photo[:13, :12].astype(np.float64)
    b = photo[3:16, 2:14].astype(np.float64)
    reference = _brute_3d(a, b)
    # float64 input keeps float64: equal to rounding; L given explicitly as 255.
    assert ssim_matlab3d(a, b, data_range=255) == pytest.approx(reference, abs=1e-12)
    # uint8 input: L = 255 by default, single-precision arithmetic.
    assert ssim_matlab3d(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(
        reference, abs=2e-5
    )
    # Not per-channel SSIM: the colour axis is filtered too.
    per_channel = np.mean([_brute_3d(a[..., c], b[..., c]) for c in range(3)])
    assert abs(per_channel - reference) > 1e-3


def test_ssim_matlab3d_2d_input(photo):
    a = photo[:12, :13, 0].astype(np.float64)
    b = photo[2:14, 1:14, 0].astype(np.float64)
    assert ssim_matlab3d(a, b, data_range=255) == pytest.approx(_brute_3d(a, b), abs=1e-12)


def test_ssim_skimage_gray_equals_skimage(photo):
    a, b = photo[:, :, 0], photo[:, :, 1]
    expected = structural_similarity(a.astype(float), b.astype(float), data_range=255)
    assert ssim_skimage_gray(a, b) == expected


def test_cs_protocol_equals_direct_computation(photo):
    noisy = np.clip(photo.astype(int) + 7 * (np.indices(photo.shape).sum(0) % 3 - 1), 0, 255)
    noisy = noisy.astype(np.uint8)
    y_pred = cv2.cvtColor(noisy, cv2.COLOR_RGB2YCrCb)[:, :, 0].astype(np.float64)
    y_gt = cv2.cvtColor(photo, cv2.COLOR_RGB2YCrCb)[:, :, 0].astype(np.float64)
    rmse = np.sqrt(np.mean((y_pred - y_gt) ** 2))
    got = PROTOCOLS["cs"].score(noisy, photo)
    assert got[0] == pytest.approx(20 * np.log10(255 / rmse), abs=1e-10)
    assert got[1] == structural_similarity(y_pred, y_gt, data_range=255)
    # Gray ground truth against an RGB prediction: both reduce to Y.
    assert PROTOCOLS["cs"].score(photo, rgb_to_y_opencv(photo)) == (math.inf, 1.0)


def test_realblur_alignment_recovers_shift():
    img = astronaut()
    gt = img[100:196, 100:196]
    shifted = img[102:198, 101:197]  # 2 px down, 1 px right
    unaligned = psnr(shifted, gt)
    aligned, ssim = realblur_scores(shifted, gt)
    assert aligned > unaligned + 15
    assert ssim > 0.99


def test_realblur_flat_image_falls_back_to_identity():
    flat = np.full((32, 32), 0.5, np.float32)
    with pytest.warns(UserWarning, match="ECC alignment failed"):
        warp = ecc_homography(flat, flat)
    np.testing.assert_array_equal(warp, np.eye(3))


def test_protocol_size_mismatch_names_both_files(photo):
    for name in ("gopro", "realblur", "cs"):
        with pytest.raises(DataError, match=r"out/a\.png is 64x63.*gt/a\.tif is 64x64"):
            PROTOCOLS[name].score(photo[:, :63], photo, ("out/a.png", "gt/a.tif"))


def test_protocol_errors_name_files(photo):
    with pytest.raises(DataError, match=r"p\.png vs g\.png: .*HxWx3"):
        PROTOCOLS["deraining"].score(photo[..., 0], photo[..., 0], ("p.png", "g.png"))
    with pytest.raises(DataError, match=r"p\.png: expected an 8-bit image"):
        PROTOCOLS["gopro"].score(photo.astype(np.uint16), photo, ("p.png", "g.png"))


def test_deraining_protocol_is_y_psnr_and_wang(photo):
    other = photo[::-1].copy()
    y1, y2 = rgb_to_y_studio(other), rgb_to_y_studio(photo)
    assert PROTOCOLS["deraining"].score(other, photo) == (psnr(y1, y2), ssim_wang(y1, y2))


def test_sidd_protocol_averages_256_blocks():
    img = np.concatenate([astronaut()[:256, :256], astronaut()[256:512, :256]], axis=1)
    noisy = img.copy()
    noisy[:, :256] //= 2
    left = PROTOCOLS["gopro"].score(noisy[:, :256], img[:, :256])
    both = PROTOCOLS["sidd"].score(noisy, img)
    assert both[0] == math.inf and both[1] == pytest.approx((left[1] + 1.0) / 2, abs=1e-6)
    with pytest.raises(DataError, match="256x256"):
        PROTOCOLS["sidd"].score(img[:100], img[:100])


def test_no_warnings_on_normal_realblur(photo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        realblur_scores(photo, photo)
