"""Luma (Y) conversions used by the evaluation protocols.

Two different definitions are in use and they must not be mixed:

* the deraining tables use MATLAB's ``rgb2ycbcr`` (BT.601 *studio* range, Y in 16..235,
  rounded to uint8), see :func:`rgb_to_y_studio`;
* the compressive-sensing test uses OpenCV's ``YCrCb`` conversion (BT.601 *full* range,
  Y in 0..255), see :func:`rgb_to_y_opencv`.
"""

from __future__ import annotations

import cv2
import numpy as np

from dgunet.errors import DataError

# BT.601 studio-range luma weights for 0..255 RGB (MATLAB rgb2ycbcr, first row of its matrix).
_STUDIO_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_STUDIO_OFFSET = 16.0


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (MATLAB ``round``).

    ``np.round`` rounds ties to even (52.5 -> 52); MATLAB gives 53. Float array in, same shape out.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _require_rgb(rgb: np.ndarray, what: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{what} needs an HxWx3 RGB image, got an array of shape {rgb.shape}: this protocol "
                        f"scores RGB images; repeat a gray image over 3 channels, or score it with a "
                        f"protocol that takes gray images (sr_x*, nonblind, nonblind_y, gaussian, cs)")
    return rgb


def rgb_to_y_studio(rgb_uint8: np.ndarray, rounded: bool = True) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` on an 8-bit RGB image.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in 0..255, evaluated in
    float64 in that order. With ``rounded`` (the default, MATLAB's uint8 output) the result is
    rounded half away from zero and clipped to 0..255, returned as uint8 HxW; otherwise the
    unrounded float64 HxW values. Exact ties are rare (under 200 of the 2^24 colours) and
    their floating-point value can depend on the order of the sums; MATLAB's own order was
    not checked here.

    Args:
        rgb_uint8: HxWx3 array, uint8 (or any numeric type holding 0..255 values), RGB order.
    """
    rgb = _require_rgb(rgb_uint8, "rgb_to_y_studio").astype(np.float64)
    y = _STUDIO_OFFSET + (rgb @ _STUDIO_WEIGHTS) / 255.0
    if not rounded:
        return y
    return np.clip(round_half_away(y), 0, 255).astype(np.uint8)


def rgb_to_y_opencv(img_uint8: np.ndarray) -> np.ndarray:
    """Y of OpenCV's full-range ``YCrCb`` conversion (the compressive-sensing test).

    Args:
        img_uint8: uint8 HxW (gray: returned unchanged), HxWx1 (squeezed) or HxWx3 in RGB order.

    Returns:
        uint8 HxW, Y = 0.299 R + 0.587 G + 0.114 B rounded the way OpenCV does it.
    """
    img = np.asarray(img_uint8)
    if img.dtype != np.uint8:
        raise DataError(f"rgb_to_y_opencv needs uint8 input, got {img.dtype}")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    _require_rgb(img, "rgb_to_y_opencv")
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YCrCb)[:, :, 0]
