"""Block compressive sensing: every block x block patch is measured by one fixed Gaussian matrix.

The layout is the published CS model's sampling (a stride-`block` convolution with the rows of
Phi as filters): patch (i, j) of channel c, flattened row-major, gives the measurements
y[:, c*m:(c+1)*m, i, j] = Phi @ patch. For block 32 and one channel this is exactly
dgunet.models.cs.image_to_blocks(x) @ Phi^T, rearranged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image


def num_rows(ratio: float, block: int) -> int:
    """m = ceil(ratio * block^2); rounded first so that 0.25 * 1024 is 256, not 257 by float error."""
    return math.ceil(round(ratio * block * block, 6))


def gaussian_matrix(m: int, n: int, seed: int) -> Tensor:
    """(m, n) float32 with i.i.d. N(0, 1/m) entries, from a CPU generator seeded with `seed` only
    (independent of the global RNG and of the device, so every machine gets the same matrix)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(m, n, generator=generator, dtype=torch.float32) / math.sqrt(m)


class CompressedSensing(LinearOperator):
    """x (B,C,H,W), H and W multiples of `block` -> y (B, C*m, H/block, W/block), m = ceil(ratio*block^2).

    `matrix` (m, block^2) is the sampling matrix A uses (a buffer: `.to()` moves it). A_dagger is
    A_adjoint, the published CS initial estimate Phi^T y.
    """

    def __init__(self, ratio: float, block: int = 32, seed: int = 0, noise_model: nn.Module | None = None):
        super().__init__(noise_model)
        if not 0 < ratio <= 1:
            raise PhysicsError(f"CompressedSensing: ratio={ratio!r}; give a fraction in (0, 1], "
                               f"e.g. 0.25 for 25%")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise PhysicsError(f"CompressedSensing: block={block!r}; give a positive integer (32 as published)")
        self.ratio, self.block, self.seed = ratio, block, seed
        self.m = num_rows(ratio, block)
        self.register_buffer("matrix", gaussian_matrix(self.m, block * block, seed))

    def A(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) -> y (B,C*m,H/block,W/block)."""
        check_image("CompressedSensing", x)
        b, c, h, w = x.shape
        s = self.block
        if h % s or w % s:
            raise PhysicsError(f"CompressedSensing(block={s}): image {h}x{w} is not divisible by {s}; crop or "
                               f"pad H and W to multiples of {s}")
        patches = x.reshape(b, c, h // s, s, w // s, s).permute(0, 1, 2, 4, 3, 5)
        patches = patches.reshape(b, c, h // s, w // s, s * s)
        y = patches @ self.matrix.to(x).t()  # (B,C,H/s,W/s,m)
        return y.permute(0, 1, 4, 2, 3).reshape(b, c * self.m, h // s, w // s)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """y (B,C*m,h,w) -> x (B,C,h*block,w*block)."""
        check_image("CompressedSensing.A_adjoint", y)
        b, cm, h, w = y.shape
        s, m = self.block, self.m
        if cm % m:
            raise PhysicsError(f"CompressedSensing.A_adjoint: y has {cm} channels, not a multiple of "
                               f"m={m}; pass the y that A of this operator produced")
        c = cm // m
        rows = y.reshape(b, c, m, h, w).permute(0, 1, 3, 4, 2)  # (B,C,h,w,m)
        patches = rows @ self.matrix.to(y)  # (B,C,h,w,s*s)
        return patches.reshape(b, c, h, w, s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * s, w * s)
