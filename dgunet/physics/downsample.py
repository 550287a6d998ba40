"""Downsample: the super-resolution degradations, y = (anti-alias filter, then keep 1 pixel in f^2).

kernel="bicubic" (default): MATLAB `imresize(x, 1/f)`, the field's standard bicubic degradation,
  as one matrix per axis (dgunet.physics.bicubic); A_dagger = `imresize(y, f)` (bicubic upsampling).
kernel="gaussian" or a kernel tensor: blur with that kernel (true convolution, "circular" by FFT or
  "reflect"; see Blur), then keep pixels (f*i, f*j): sample phase 0, i.e. output pixel (0,0) is the
  blurred input pixel (0,0) (the convention of USRNet and deepinv). A_dagger = bicubic
  interpolation of y on those sample positions (a cheap start, not the pseudo-inverse).
The Gaussian's default sigma is (f-1)/2 (scikit-image's anti-aliasing rule), truncated at 3 sigma.

Data consistency (`project`, bicubic only): A x = y pins the h*w low-resolution samples, and
A^+ = R_h^+ (x) R_w^+ with R^+ = R^T (R R^T)^-1 (each R has full row rank), so the nearest image to z
with A x = y is z + R_h^+ (y - A z) R_w^+^T: two small matrix products, no iteration.

Operator norm L = ||A^T A|| (`norm_AtA`): bicubic, A x = R_h x R_w^T, so A^T A = (R_h^T R_h) (x) (R_w^T R_w)
and L = ||R_h||^2 ||R_w||^2 exactly (about 1/f^2). Filtered and circular: A A^T is diagonal in the
Fourier basis of the small grid, (1/f^2) sum over the f^2 aliases of |K|^2, and L is its maximum,
exactly, per kernel. Filtered and "reflect": an upper bound, as Blur's (physics.base.nonnegative_bound).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image, nonnegative_bound
from dgunet.physics.bicubic import resize, resize_adjoint, resize_matrix
from dgunet.physics.blur import Blur, kernel_spectrum


def gaussian_prefilter(sigma: float) -> Tensor:
    """(k,k) normalised Gaussian, k = 2*ceil(3 sigma) + 1 (sigma 0: the 1x1 identity kernel)."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


class Downsample(LinearOperator):
    """x (B,C,H,W) -> y (B,C,H/f,W/f); H and W must be multiples of the factor f.

    kernel: "bicubic" (MATLAB imresize), "gaussian" (sigma, default (f-1)/2) or a kernel tensor as
    for Blur ((k,k), (1,1,k,k), (B,1,k,k), (B,C,k,k)); padding ("circular" | "reflect") applies to
    the filtered kinds only (bicubic mirrors its borders as MATLAB does). validate: as for Blur.
    """

    def __init__(self, factor: int = 2, kernel: str | Tensor = "bicubic", sigma: float | None = None,
                 padding: str = "circular", noise_model: nn.Module | None = None, validate: bool = True):
        super().__init__(noise_model)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise PhysicsError(f"Downsample: factor={factor!r}; give an integer >= 1 (2, 3 or 4 in the "
                               f"usual benchmarks)")
        self.factor = factor
        if isinstance(kernel, str) and kernel not in ("bicubic", "gaussian"):
            raise PhysicsError(f"Downsample: kernel={kernel!r}; choose 'bicubic', 'gaussian' or pass a tensor")
        if padding == "valid":
            raise PhysicsError("Downsample: padding='valid' would change the size before subsampling; use "
                               "'circular' or 'reflect'")
        self.kind = kernel if isinstance(kernel, str) else "kernel"
        self.blur = None
        if self.kind == "gaussian":
            self.sigma = (factor - 1) / 2 if sigma is None else float(sigma)
            if self.sigma < 0:
                raise PhysicsError(f"Downsample: sigma={sigma}; give sigma >= 0")
            kernel = gaussian_prefilter(self.sigma)
        if self.kind != "bicubic":
            self.blur = Blur(kernel, padding=padding, validate=validate)

    def _check(self, x: Tensor) -> None:
        check_image("Downsample", x)
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise PhysicsError(f"Downsample(factor={self.factor}): image {h}x{w} is not divisible by "
                               f"{self.factor}; crop H and W to multiples of {self.factor}")

    def A(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) -> (B,C,H/f,W/f)."""
        self._check(x)
        f = self.factor
        h, w = x.shape[-2:]
        if self.blur is None:
            return resize(x, (h // f, w // f))
        return self.blur.A(x)[..., ::f, ::f]

    def A_adjoint(self, y: Tensor) -> Tensor:
        """y (B,C,h,w) -> (B,C,h*f,w*f)."""
        check_image("Downsample.A_adjoint", y)
        f = self.factor
        b, c, h, w = y.shape
        if self.blur is None:
            return resize_adjoint(y, (h * f, w * f))
        full = y.new_zeros(b, c, h * f, w * f)
        full[..., ::f, ::f] = y
        return self.blur.A_adjoint(full)

    def A_dagger(self, y: Tensor) -> Tensor:
        """y (B,C,h,w) -> (B,C,h*f,w*f), bicubic upsampling aligned with the sampling positions."""
        check_image("Downsample.A_dagger", y)
        h, w = y.shape[-2:]
        return resize(y, (h * self.factor, w * self.factor), centred=self.blur is None)

    def project(self, z: Tensor, y: Tensor) -> Tensor:
        """z (B,C,H,W) -> the image nearest z with A x = y (bicubic; see the module docstring)."""
        if self.blur is not None:
            raise PhysicsError(f"Downsample(kernel={self.kind!r}).project: the exact projection is implemented "
                               f"for the bicubic kernel only; turn MODEL.DATA_CONSISTENCY off here")
        (h, w), (n_h, n_w) = z.shape[-2:], y.shape[-2:]
        rows = pseudo_inverse(h, n_h).to(device=z.device, dtype=z.dtype)
        cols = pseudo_inverse(w, n_w).to(device=z.device, dtype=z.dtype)
        return z + rows @ (y.to(z.dtype) - self.A(z)) @ cols.t()

    def norm_AtA(self, x: Tensor) -> float | Tensor:
        """L = ||A^T A|| on images shaped like x: a float (bicubic) or one per kernel (Bk,)."""
        self._check(x)
        f = self.factor
        h, w = x.shape[-2:]
        if self.blur is None:
            return bicubic_norm(h, h // f) * bicubic_norm(w, w // f)
        if self.blur.padding != "circular":
            magnitude = Downsample(f, self.blur.kernel.abs(), padding=self.blur.padding, validate=False)
            return nonnegative_bound(magnitude, x)
        power = kernel_spectrum(self.blur.kernel.to(device=x.device, dtype=torch.float32), h, w, full=True)
        power = power.abs().pow(2)
        kb, kc = power.shape[:2]
        aliased = power.reshape(kb, kc, f, h // f, f, w // f).sum(dim=(2, 4)) / f**2
        return aliased.amax(dim=(1, 2, 3)).to(x.dtype)

    def image_shape(self, y_shape) -> torch.Size:
        return torch.Size((*y_shape[:-2], y_shape[-2] * self.factor, y_shape[-1] * self.factor))


@lru_cache(maxsize=64)
def pseudo_inverse(n_in: int, n_out: int) -> Tensor:
    """(n_in, n_out) R^+ = R^T (R R^T)^-1 of MATLAB's bicubic (n_out, n_in) resize matrix (float64, CPU,
    cached: do not modify it in place)."""
    matrix = resize_matrix(n_in, n_out)
    return matrix.t() @ torch.linalg.inv(matrix @ matrix.t())


@lru_cache(maxsize=64)
def bicubic_norm(n_in: int, n_out: int) -> float:
    """||R||_2^2 of MATLAB's bicubic (n_out, n_in) resize matrix (float64, CPU, cached with it)."""
    matrix = resize_matrix(n_in, n_out)
    return float(torch.linalg.matrix_norm(matrix, ord=2)) ** 2
