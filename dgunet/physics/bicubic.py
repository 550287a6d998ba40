"""MATLAB `imresize` bicubic as matrices: resizing an image is R_h @ x @ R_w^T.

MATLAB's rule, per axis, for output pixel i = 1..n_out (1-based) and scale s = n_out / n_in:
  position in the input  u = i/s + (1 - 1/s)/2          (pixel centres stay aligned)
  kernel                 Keys cubic, a = -0.5; when shrinking (s < 1) with antialiasing it is
                         stretched to h(t) = s * cubic(s t), so its support grows from 4 to 4/s taps
  taps                   floor(u - support/2) + 0 .. ceil(support) + 1, weights h(u - tap),
                         each row normalised to sum 1
  borders                taps outside 1..n_in mirror symmetrically (edge pixel repeated:
                         0 -> 1, -1 -> 2, n_in+1 -> n_in), folded into the matrix
So rows sum to 1 and a constant image stays that constant. Matrices are cached per
(size, dtype, device).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    t = t.abs()
    near = (1.5 * t - 2.5) * t * t + 1
    far = ((-0.5 * t + 2.5) * t - 4) * t + 2
    return torch.where(t <= 1, near, torch.where(t <= 2, far, torch.zeros_like(t)))


@lru_cache(maxsize=64)
def _resize_matrix64(n_in: int, n_out: int, antialias: bool, centred: bool) -> Tensor:
    scale = n_out / n_in
    stretch = scale if (scale < 1 and antialias) else 1.0
    support = 4.0 / stretch
    i = torch.arange(1, n_out + 1, dtype=torch.float64)
    # centred: MATLAB's alignment of pixel centres; else pixel i of the output sits on input
    # pixel 1 + (i-1)/s (the first pixels coincide: the phase-0 sampling of Downsample).
    u = i / scale + 0.5 * (1 - 1 / scale) if centred else 1 + (i - 1) / scale
    taps = torch.floor(u - support / 2)[:, None] + torch.arange(math.ceil(support) + 2, dtype=torch.float64)
    weights = stretch * cubic(stretch * (u[:, None] - taps))
    weights = weights / weights.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(n_in), torch.arange(n_in - 1, -1, -1)])  # 0-based [0..n-1, n-1..0]
    source = mirror[(taps.long() - 1) % (2 * n_in)]
    return torch.zeros(n_out, n_in, dtype=torch.float64).scatter_add_(1, source, weights)


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                  antialias: bool = True, centred: bool = True) -> Tensor:
    """(n_out, n_in) matrix R with resize(v) = R @ v along one axis (MATLAB imresize bicubic).

    Shared and cached: do not modify it in place.
    """
    return _resize_matrix64(n_in, n_out, antialias, centred).to(device=device, dtype=dtype)


def resize(x: Tensor, out_hw: tuple[int, int], centred: bool = True) -> Tensor:
    """x (B,C,H,W) -> (B,C,h,w) = MATLAB imresize(x, [h w], 'bicubic') (antialiased when shrinking)."""
    (h, w), (n_h, n_w) = x.shape[-2:], out_hw
    rows = resize_matrix(h, n_h, x.dtype, x.device, centred=centred)
    cols = resize_matrix(w, n_w, x.dtype, x.device, centred=centred)
    return rows @ x @ cols.t()


def resize_adjoint(y: Tensor, in_hw: tuple[int, int], centred: bool = True) -> Tensor:
    """The exact adjoint of `resize(., out_hw=y's size)`: y (B,C,h,w) -> (B,C,H,W)."""
    (h, w), (n_h, n_w) = in_hw, y.shape[-2:]
    rows = resize_matrix(h, n_h, y.dtype, y.device, centred=centred)
    cols = resize_matrix(w, n_w, y.dtype, y.device, centred=centred)
    return rows.t() @ y @ cols
