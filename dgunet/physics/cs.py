"""Block compressive sensing: every block x block patch is measured by one fixed Gaussian matrix.

The layout is the published CS model's sampling (a stride-`block` convolution with the rows of
Phi as filters): patch (i, j) of channel c, flattened row-major, gives the measurements
y[:, c*m:(c+1)*m, i, j] = Phi @ patch. For one channel this is exactly image_to_blocks(x) @ Phi^T,
rearranged. This module owns the layout and the measurement count; dgunet.models.cs imports both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image


def num_rows(ratio: float, block: int) -> int:
    """m = ceil(ratio * block^2), the product rounded to 6 decimals first: 0.07 * 10^2 is 7.000000000000001
    in floats, and would give 8 rows without the rounding (block 32 needs it for no ratio of a 0.001% grid)."""
    return math.ceil(round(ratio * block * block, 6))


def gaussian_matrix(m: int, n: int, seed: int) -> Tensor:
    """(m, n) float32 with i.i.d. N(0, 1/m) entries, from a CPU generator seeded with `seed` only
    (independent of the global RNG and of the device, so every machine gets the same matrix)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(m, n, generator=generator, dtype=torch.float32) / math.sqrt(m)


def orthonormal_rows(matrix: Tensor) -> Tensor:
    """(m, n), m <= n -> (m, n) float32 with orthonormal rows spanning the same space (Phi Phi^T = I).

    QR of the transpose in float64; each row's sign follows diag(R) > 0, which makes the result
    unique (it does not depend on the LAPACK build's sign convention).
    """
    q, r = torch.linalg.qr(matrix.double().t())
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return (q * signs).t().contiguous().float()


def sampling_matrix(ratio: float, block: int = 32, seed: int = 0, orthonormal: bool = True) -> Tensor:
    """The seeded (m, block^2) CS matrix, m = num_rows(ratio, block): Gaussian, rows orthonormalised
    (the ISTA-Net convention) unless orthonormal=False (then i.i.d. N(0, 1/m))."""
    gaussian = gaussian_matrix(num_rows(ratio, block), block * block, seed)
    return orthonormal_rows(gaussian) if orthonormal else gaussian


def to_blocks(x: Tensor, block: int) -> Tensor:
    """(B,C,H,W), H and W multiples of block -> (B,C,H/block,W/block,block*block), each block row-major."""
    b, c, h, w = x.shape
    patches = x.reshape(b, c, h // block, block, w // block, block).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(b, c, h // block, w // block, block * block)


def from_blocks(patches: Tensor, block: int) -> Tensor:
    """Inverse of `to_blocks`: (B,C,h,w,block*block) -> (B,C,h*block,w*block)."""
    b, c, h, w, _ = patches.shape
    patches = patches.reshape(b, c, h, w, block, block).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(b, c, h * block, w * block)


def image_to_blocks(img: Tensor, block: int = 32) -> Tensor:
    """(B,C,H,W), H and W multiples of `block` -> (B*H/block*W/block, C*block*block): one row per
    block position (batch, then block rows, then block columns), each block row-major; the CS
    models' layout (for C = 1, row @ Phi^T are the block's measurements)."""
    b, c = img.shape[:2]
    return to_blocks(img, block).permute(0, 2, 3, 1, 4).reshape(-1, c * block * block)


def blocks_to_image(rows: Tensor, shape: torch.Size, block: int = 32) -> Tensor:
    """Inverse of `image_to_blocks`: (N, C*block*block) -> `shape` = (B,C,H,W)."""
    b, c, h, w = shape
    patches = rows.reshape(b, h // block, w // block, c, block * block).permute(0, 3, 1, 2, 4)
    return from_blocks(patches, block)


class CompressedSensing(LinearOperator):
    """x (B,C,H,W), H and W multiples of `block` -> y (B, C*m, H/block, W/block), m = ceil(ratio*block^2).

    `matrix` (m, block^2) is the sampling matrix A uses (a buffer: `.to()` moves it): seeded Gaussian
    with orthonormal rows (Phi Phi^T = I, the convention of ISTA-Net and its successors), so Phi^T y is
    the minimum-norm least-squares solution and L = ||Phi^T Phi|| = 1; orthonormal=False keeps the
    i.i.d. N(0, 1/m) matrix (L = 8.9 at 25%, 115 at 1%). A_dagger is A_adjoint, the published CS
    initial estimate Phi^T y. L (`norm_AtA`) is computed once, exactly, from the matrix (which is fixed).
    """

    def __init__(self, ratio: float, block: int = 32, seed: int = 0, noise_model: nn.Module | None = None,
                 orthonormal: bool = True):
        super().__init__(noise_model)
        if not 0 < ratio <= 1:
            raise PhysicsError(f"CompressedSensing: ratio={ratio!r}; give a fraction in (0, 1], "
                               f"e.g. 0.25 for 25%")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise PhysicsError(f"CompressedSensing: block={block!r}; give a positive integer (32 as published)")
        self.ratio, self.block, self.seed, self.orthonormal = ratio, block, seed, orthonormal
        self.m = num_rows(ratio, block)
        self.register_buffer("matrix", sampling_matrix(ratio, block, seed, orthonormal))
        self._norm = float(torch.linalg.matrix_norm(self.matrix.double(), ord=2)) ** 2

    def A(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) -> y (B,C*m,H/block,W/block)."""
        check_image("CompressedSensing", x)
        b, c, h, w = x.shape
        s = self.block
        if h % s or w % s:
            raise PhysicsError(f"CompressedSensing(block={s}): image {h}x{w} is not divisible by {s}; crop or "
                               f"pad H and W to multiples of {s}")
        y = to_blocks(x, s) @ self.matrix.to(x).t()  # (B,C,H/s,W/s,m)
        return y.permute(0, 1, 4, 2, 3).reshape(b, c * self.m, h // s, w // s)

    def A_adjoint(self, y: Tensor) -> Tensor:
        """y (B,C*m,h,w) -> x (B,C,h*block,w*block)."""
        check_image("CompressedSensing.A_adjoint", y)
        b, c, h, w = self.image_shape(y.shape)
        rows = y.reshape(b, c, self.m, h // self.block, w // self.block).permute(0, 1, 3, 4, 2)  # (B,C,h,w,m)
        return from_blocks(rows @ self.matrix.to(y), self.block)

    def norm_AtA(self, x: Tensor) -> float:
        return self._norm

    def image_shape(self, y_shape) -> torch.Size:
        b, cm, h, w = y_shape
        if cm % self.m:
            raise PhysicsError(f"CompressedSensing.A_adjoint: y has {cm} channels, not a multiple of "
                               f"m={self.m}; pass the y that A of this operator produced")
        return torch.Size((b, cm // self.m, h * self.block, w * self.block))
