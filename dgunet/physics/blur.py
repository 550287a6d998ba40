"""Blur: y = k * x, a true convolution with one kernel per sample (or one for all).

Boundaries ("padding"):
  "circular"  periodic image, computed by FFT; y has x's size.
  "valid"     only the positions where the kernel fits; y is smaller by (kh-1, kw-1): its pixel
              (i, j) is pixel (i + kh-1-kh//2, j + kw-1-kw//2) of the same-size results.
  "reflect"   the image is mirrored without repeating the edge pixel (numpy/PyTorch "reflect"), then
              "valid"; y has x's size. Padding and its exact adjoint (folding the border back) are one
              index map, so A_adjoint is exact here too.
Operator norm (`norm_AtA`, the L of the models' step r/L): "circular" is diagonal in the Fourier
basis, so L = max |K|^2 over the FFT grid of the image's size, exactly, one per sample (1 for a
non-negative kernel of sum 1: the maximum sits at frequency 0). "valid" and "reflect" are not
diagonal there; they give an upper bound instead, from the operator with |k| (whose A^T A is a
non-negative matrix): L <= max (A^T A w) / w, with w = 1 refined by 5 products w <- A^T A w
(physics.base.nonnegative_bound; within 1.07x of L in tests/test_physics.py, costing 5 A/A^T pairs).
An upper bound only makes the step safer.
Kernel centre: pixel (kh//2, kw//2) of the kernel sits over the output pixel. For odd sizes that is
the middle; for even sizes it is the lower-right of the four middle pixels, so an even kernel shifts
the image by half a pixel up-left compared with a symmetric odd one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image, nonnegative_bound, shape_text

PADDINGS = ("circular", "valid", "reflect")


def as_kernel_batch(kernel: Tensor, who: str, validate: bool = True) -> Tensor:
    """(kh,kw), (1|B,1|C,kh,kw) -> (Bk,Ck,kh,kw); validate: refuse non-finite kernels and kernels
    whose sum is not positive (an all-zero kernel erases the image; the regularised inverse divides by
    the sum at frequency 0). The value checks read the tensor (a host sync on a GPU): see `Blur`."""
    kernel = torch.as_tensor(kernel)
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    if kernel.dim() != 4 or kernel.numel() == 0:
        raise PhysicsError(f"{who}: kernel is {shape_text(kernel.shape)}; give (k,k), (1,1,k,k), (B,1,k,k) or "
                           f"(B,C,k,k)")
    if not kernel.is_floating_point():
        kernel = kernel.float()
    if validate:
        check_kernel_values(who, kernel)
    return kernel


def check_kernel_values(who: str, kernel: Tensor) -> None:
    """Every kernel of the (Bk,Ck,kh,kw) batch is finite and sums to a positive value."""
    if not bool(torch.isfinite(kernel).all()):
        raise PhysicsError(f"{who}: the kernel has NaN or inf entries; pass a finite kernel")
    sums = kernel.double().sum(dim=(-2, -1)).flatten()
    bad = torch.nonzero(sums <= 0).flatten().tolist()
    if bad:
        what = "is all zeros" if not bool(kernel.flatten(0, 1)[bad[0]].any()) else f"sums to {sums[bad[0]]:.3g}"
        raise PhysicsError(f"{who}: kernel {bad[0]} of the batch {what}; a blur kernel has a positive sum "
                           f"(normalise it: k / k.sum())")


def check_kernel_fits(who: str, kernel: Tensor, x: Tensor, size: bool = True) -> None:
    """The kernel's batch/channel dims broadcast to x's, and (size=True) it is no larger than x."""
    b, c, h, w = x.shape
    kb, kc, kh, kw = kernel.shape
    if kb not in (1, b) or kc not in (1, c):
        raise PhysicsError(f"{who}: kernel {shape_text(kernel.shape)} does not fit images "
                           f"{shape_text(x.shape)}; give one kernel for all (1,1,k,k), one per sample "
                           f"({b},1,k,k) or per channel ({b},{c},k,k)")
    if size and (kh > h or kw > w):
        raise PhysicsError(f"{who}: kernel {kh}x{kw} is larger than the image {h}x{w}; use larger images or a "
                           f"smaller kernel")


def kernel_spectrum(kernel: Tensor, h: int, w: int, full: bool = False) -> Tensor:
    """(Bk,Ck,kh,kw) -> rfft2 (full: fft2) of the kernel zero-padded to (h,w), its centre rolled to (0,0)."""
    kh, kw = kernel.shape[-2:]
    padded = torch.roll(F.pad(kernel, (0, w - kw, 0, h - kh)), (-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fft2(padded) if full else torch.fft.rfft2(padded)


def fft_filter(x: Tensor, kernel: Tensor, adjoint: bool) -> Tensor:
    """Circular convolution of x (B,C,H,W) with kernel (Bk,Ck,kh,kw), or its adjoint (correlation)."""
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):  # FFTs of half types are restricted; compute in fp32
        x = x.float()
    h, w = x.shape[-2:]
    spectrum = kernel_spectrum(kernel.to(x), h, w)
    if adjoint:
        spectrum = spectrum.conj()
    return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=(h, w)).to(dtype)


def tikhonov_deconvolve(y: Tensor, kernel: Tensor, eps: float | Tensor) -> Tensor:
    """argmin_x ||k * x - y||^2 + eps ||grad x||^2 for circular convolution, y (B,C,H,W) -> x (B,C,H,W);
    eps a float or a tensor broadcastable to (B,1,1,1).

    X = conj(K) Y / (|K|^2 + eps |D|^2), |D|^2 = 4 sin^2(pi fy) + 4 sin^2(pi fx) the transfer function
    of forward differences along both axes. |D|^2 is 0 only at frequency 0, where |K| = sum(k) > 0.
    """
    dtype = y.dtype
    y = y.float() if dtype in (torch.float16, torch.bfloat16) else y
    h, w = y.shape[-2:]
    spectrum = kernel_spectrum(kernel.to(y), h, w)
    fy = torch.fft.fftfreq(h, dtype=y.dtype, device=y.device)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=y.dtype, device=y.device)[None, :]
    grad2 = 4 * torch.sin(torch.pi * fy) ** 2 + 4 * torch.sin(torch.pi * fx) ** 2
    if isinstance(eps, Tensor):
        eps = eps.to(y.dtype)
    x = spectrum.conj() * torch.fft.rfft2(y) / (spectrum.abs() ** 2 + eps * grad2)
    return torch.fft.irfft2(x, s=(h, w)).to(dtype)


def _grouped_weight(kernel: Tensor, b: int, c: int, dtype: torch.dtype, device) -> Tensor:
    """(Bk,Ck,kh,kw) -> (B*C,1,kh,kw), flipped: conv2d correlates, and we want a true convolution."""
    kh, kw = kernel.shape[-2:]
    flipped = torch.flip(kernel.to(device=device, dtype=dtype), dims=(-2, -1))
    return flipped.expand(b, c, kh, kw).reshape(b * c, 1, kh, kw)


def valid_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """x (B,C,H,W) -> (B,C,H-kh+1,W-kw+1), each sample/channel with its own kernel (grouped conv)."""
    b, c, h, w = x.shape
    weight = _grouped_weight(kernel, b, c, x.dtype, x.device)
    y = F.conv2d(x.reshape(1, b * c, h, w), weight, groups=b * c)
    return y.reshape(b, c, *y.shape[-2:])


def valid_conv_adjoint(y: Tensor, kernel: Tensor) -> Tensor:
    """The exact adjoint of `valid_conv`: (B,C,h,w) -> (B,C,h+kh-1,w+kw-1)."""
    b, c, h, w = y.shape
    weight = _grouped_weight(kernel, b, c, y.dtype, y.device)
    x = F.conv_transpose2d(y.reshape(1, b * c, h, w), weight, groups=b * c)
    return x.reshape(b, c, *x.shape[-2:])


def reflect_index(n: int, before: int, after: int, device) -> Tensor:
    """Source pixel of each padded position -before .. n+after-1 under "reflect" (edge not repeated)."""
    pos = torch.arange(-before, n + after, device=device)
    pos = pos.abs()
    return torch.where(pos > n - 1, 2 * (n - 1) - pos, pos)


def pad_sizes(k: int) -> tuple[int, int]:
    """Pixels before/after an axis so that "valid" keeps the size with kernel pixel k//2 centred.

    Output i of a valid convolution covers padded inputs i .. i+k-1 with kernel taps k-1 .. 0, so
    tap k//2 meets padded pixel i + k-1-k//2: that many pixels go before, k//2 after.
    """
    return k - 1 - k // 2, k // 2


def reflect_pad(x: Tensor, kh: int, kw: int) -> Tensor:
    """(B,C,H,W) -> (B,C,H+kh-1,W+kw-1), mirrored (so "valid" keeps H and W)."""
    h, w = x.shape[-2:]
    rows = reflect_index(h, *pad_sizes(kh), x.device)
    cols = reflect_index(w, *pad_sizes(kw), x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def reflect_pad_adjoint(g: Tensor, h: int, w: int, kh: int, kw: int) -> Tensor:
    """Adjoint of `reflect_pad`: each padded pixel's value is added back onto its source pixel."""
    rows = reflect_index(h, *pad_sizes(kh), g.device)
    cols = reflect_index(w, *pad_sizes(kw), g.device)
    g = g.new_zeros(*g.shape[:-1], w).index_add(-1, cols, g)
    return g.new_zeros(*g.shape[:-2], h, w).index_add(-2, rows, g)


class Blur(LinearOperator):
    """y = k * x (true convolution; a centred delta image becomes the kernel itself).

    kernel: (k,k), (1,1,k,k), (B,1,k,k) one per sample, or (B,C,k,k) one per sample and channel.
    x: (B,C,H,W) -> y: (B,C,H,W), or (B,C,H-kh+1,W-kw+1) for padding="valid".
    A_dagger, the image-space start of a model:
      "circular": the regularised inverse argmin_x ||k * x - y||^2 + eps ||grad x||^2, in closed
        form by FFT (`tikhonov_deconvolve`). The gradient penalty leaves the mean untouched and damps
        the frequencies the kernel destroys. eps = dagger_eps + dagger_noise_gain * sigma^2 per
        sample, sigma the std of the noise model (0 without one): the best eps grows like sigma^2
        (measured on training photos with random kernels, docs/physics.md).
      "reflect": y itself (the blurred image is the usual start).
      "valid": each pixel gets the mean of the measurements whose kh x kw window covers it (the
        adjoint of a box of the kernel's support, divided by the count): defined everywhere, unlike
        A^T y / A^T 1, which divides by zero where a motion kernel has zero taps.
    validate: check the kernel's values at construction (finite, each kernel's sum positive). Reading
      values is a host sync when the kernel is on a GPU; the training engine builds one operator per
      batch from kernels it drew and checked itself on the CPU, so it passes validate=False. Shapes
      (kernel vs image batch and size) are always checked: that needs no sync.
    """

    def __init__(self, kernel: Tensor, padding: str = "circular", noise_model: nn.Module | None = None,
                 dagger_eps: float = 2e-3, dagger_noise_gain: float = 250.0, validate: bool = True):
        super().__init__(noise_model)
        if padding not in PADDINGS:
            raise PhysicsError(f"Blur: padding={padding!r}; choose one of {', '.join(PADDINGS)}")
        if not dagger_eps > 0 or not dagger_noise_gain >= 0:
            raise PhysicsError(f"Blur: dagger_eps={dagger_eps!r}, dagger_noise_gain={dagger_noise_gain!r}; "
                               f"give a positive regularisation weight and a gain >= 0")
        self.padding = padding
        self.dagger_eps, self.dagger_noise_gain = float(dagger_eps), float(dagger_noise_gain)
        self.register_buffer("kernel", as_kernel_batch(kernel, "Blur", validate))

    def regularisation(self, y: Tensor) -> Tensor:
        """eps of A_dagger per sample, (B,1,1,1) or a scalar: dagger_eps + gain * sigma^2."""
        sigma = getattr(self.noise_model, "sigma", None)
        if not isinstance(sigma, Tensor):
            return torch.tensor(self.dagger_eps, dtype=y.dtype, device=y.device)
        sigma = sigma.to(device=y.device, dtype=y.dtype)
        if sigma.dim() == 1 and sigma.numel() not in (1, y.shape[0]):
            raise PhysicsError(f"Blur.A_dagger: the noise model holds {sigma.numel()} sigmas for a batch of "
                               f"{y.shape[0]}; give one sigma per sample or a single float")
        sigma = sigma.reshape(-1, 1, 1, 1) if sigma.dim() == 1 else sigma
        return self.dagger_eps + self.dagger_noise_gain * sigma**2

    def A(self, x: Tensor) -> Tensor:
        check_image("Blur", x)
        check_kernel_fits("Blur", self.kernel, x)
        if self.padding == "circular":
            return fft_filter(x, self.kernel, adjoint=False)
        if self.padding == "reflect":
            x = reflect_pad(x, *self.kernel.shape[-2:])
        return valid_conv(x, self.kernel)

    def A_adjoint(self, y: Tensor) -> Tensor:
        check_image("Blur.A_adjoint", y)
        check_kernel_fits("Blur.A_adjoint", self.kernel, y, size=self.padding != "valid")
        if self.padding == "circular":
            return fft_filter(y, self.kernel, adjoint=True)
        x = valid_conv_adjoint(y, self.kernel)
        if self.padding == "reflect":
            x = reflect_pad_adjoint(x, *y.shape[-2:], *self.kernel.shape[-2:])
        return x

    def A_dagger(self, y: Tensor) -> Tensor:
        check_image("Blur.A_dagger", y)
        check_kernel_fits("Blur.A_dagger", self.kernel, y, size=self.padding != "valid")
        if self.padding == "circular":
            return tikhonov_deconvolve(y, self.kernel, self.regularisation(y))
        if self.padding == "reflect":
            return y
        box = torch.ones(1, 1, *self.kernel.shape[-2:], dtype=y.dtype, device=y.device)
        count = valid_conv_adjoint(torch.ones_like(y[:1, :1]), box)
        return valid_conv_adjoint(y, box) / count

    def norm_AtA(self, x: Tensor) -> Tensor:
        """L = ||A^T A|| per kernel of the batch, (Bk,), for images shaped like x (B,C,H,W)."""
        check_image("Blur.norm_AtA", x)
        check_kernel_fits("Blur.norm_AtA", self.kernel, x)
        if self.padding != "circular":
            return nonnegative_bound(Blur(self.kernel.abs(), padding=self.padding, validate=False), x)
        spectrum = kernel_spectrum(self.kernel.to(device=x.device, dtype=torch.float32), *x.shape[-2:])
        return spectrum.abs().pow(2).amax(dim=(1, 2, 3)).to(x.dtype if x.is_floating_point() else torch.float32)

    def image_shape(self, y_shape) -> torch.Size:
        if self.padding != "valid":
            return torch.Size(y_shape)
        kh, kw = self.kernel.shape[-2:]
        return torch.Size((*y_shape[:-2], y_shape[-2] + kh - 1, y_shape[-1] + kw - 1))
