"""Peak signal-to-noise ratio, on numpy arrays (evaluation) and on torch batches (validation)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from dgunet.errors import DataError

if TYPE_CHECKING:  # torch is only needed by the caller of psnr_torch
    import torch


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise DataError naming both inputs when their shapes differ."""
    if np.shape(a) != np.shape(b):
        raise DataError(
            f"{names[0]} has shape {np.shape(a)} but {names[1]} has shape {np.shape(b)}; "
            "the images must have the same size and number of channels"
        )


def psnr_from_mse(mse: float, data_range: float) -> float:
    """10 log10(peak^2 / mse); ``math.inf`` when mse is 0 (identical images)."""
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB between two arrays of the same shape, computed in float64.

    The mean squared error runs over every element (all pixels and all channels), so on an
    HxWx3 image this is MATLAB's ``psnr(A, ref)`` on RGB. Identical inputs give ``math.inf``
    (callers that write JSON must turn it into something JSON can hold).

    Args:
        a, b: HxW or HxWxC arrays of any numeric dtype on the same scale as ``data_range``.
        data_range: the peak value, 255 for 8-bit images, 1 for [0, 1] floats.
    """
    check_same_shape(a, b)
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return psnr_from_mse(float(np.mean(diff * diff)), data_range)


def psnr_torch(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Validation PSNR of the training scripts: mean over the batch of per-image PSNR.

    Both tensors are clamped to [0, 1]; each image scores 20 log10(1 / rmse) with the rmse over
    its C*H*W values (float64 here, to keep the value independent of the tensor dtype). An
    image with rmse 0 scores inf, and then so does the mean.

    Args:
        pred, target: float tensors of shape BxCxHxW (or CxHxW for one image), values ~[0, 1].
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise DataError(
            f"prediction has shape {tuple(pred.shape)} but target has {tuple(target.shape)}"
        )
    if pred.dim() == 3:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    diff = pred.detach().double().clamp(0, 1) - target.detach().double().clamp(0, 1)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    scores = [psnr_from_mse(float(m), 1.0) for m in mse.cpu()]
    return float(np.mean(scores))


def psnr_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR over the pixels where ``mask`` is set (the RealBlur protocol).

    The squared error is summed over all elements and divided by the sum of ``mask``, so with
    a 0/1 mask of the same shape as the images (channels included) and images already zero
    outside it, this is the MSE over the masked values.

    Args:
        a, b: float arrays HxW or HxWxC, [0, data_range].
        mask: float or bool array of the same shape, 1 inside the valid region.
    """
    check_same_shape(a, b)
    check_same_shape(a, mask, ("image", "mask"))
    count = float(np.sum(mask, dtype=np.float64))
    if count == 0:
        raise DataError("the mask is empty: no valid pixels to compare")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return psnr_from_mse(float(np.sum(diff * diff)) / count, data_range)
