"""Classical baselines for the known-operator protocols: Wiener deconvolution and bicubic upsampling.

Both are "methods" of the test protocol (`test.py --method wiener|bicubic`): callables
`(y, op, params) -> x` like a model's final output, so a table can put them next to DGUNet.

Wiener deconvolution (deblurring, denoising). With the circular blur model y = k * x + n,
n ~ N(0, s^2), the linear filter that minimises the expected squared error, assuming a signal
whose power is the same at every frequency, is in the Fourier domain

    X = conj(K) Y / (|K|^2 + NSR),    NSR = noise power / signal power = s_eff^2 / p_x,

with K the kernel's transfer function (kernel centred on pixel (0, 0), as physics.Blur's circular
convolution uses it). We take p_x = max(var(y) - s^2, 1e-4) (the blurred signal's variance, a lower
bound of the clean one's) and s_eff^2 = s^2 + 1 / (12 * 255^2), which adds the variance of 8-bit
rounding, so that a noiseless but 8-bit input does not divide by the zeros of K. The constant
NSR makes this the textbook parametric Wiener filter, not an oracle on the true spectrum. The
filter acts on y minus its per-channel mean (a kernel of sum 1 keeps the mean; shrinking it would
darken the image). With the identity kernel it reduces to shrinking y toward its mean.

Bicubic upsampling (super-resolution): MATLAB `imresize(y, s)` (physics.Downsample's A_dagger),
the standard "Bicubic" row of SR tables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dgunet.errors import ConfigError

QUANTISATION_VAR = 1.0 / (12 * 255.0**2)  # variance of rounding to 8 bits, on [0, 1] images
MIN_SIGNAL_VAR = 1e-4


def transfer_function(kernel: Tensor, h: int, w: int) -> Tensor:
    """(B,1,k,k) or (k,k) kernel -> (B,1,h,w//2+1) complex spectrum of its circular convolution."""
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    k = kernel.shape[-1]
    padded = kernel.new_zeros(*kernel.shape[:-2], h, w)
    padded[..., :k, :k] = kernel
    padded = torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))  # centre -> (0, 0)
    return torch.fft.rfft2(padded)


def wiener_deconvolve(y: Tensor, kernel: Tensor, sigma: float | Tensor) -> Tensor:
    """y (B,C,H,W) blurred with `kernel` ((k,k) or (B,1,k,k), sum 1), noise std `sigma` -> x (B,C,H,W)."""
    y64 = y.double()
    h, w = y.shape[-2:]
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).reshape(-1, 1, 1, 1)
    noise_var = sigma**2 + QUANTISATION_VAR
    signal_var = (y64.var(dim=(-3, -2, -1), keepdim=True) - sigma**2).clamp_min(MIN_SIGNAL_VAR)
    nsr = noise_var / signal_var
    spectrum = transfer_function(kernel.to(y.device, torch.float64), h, w)
    mean = y64.mean(dim=(-2, -1), keepdim=True)  # the kernel keeps the mean (sum 1): filter the rest
    filtered = spectrum.conj() * torch.fft.rfft2(y64 - mean) / (spectrum.abs() ** 2 + nsr)
    return (torch.fft.irfft2(filtered, s=(h, w)) + mean).to(y.dtype)


def bicubic_upsample(y: Tensor, scale: int) -> Tensor:
    """y (B,C,h,w) -> (B,C,h*scale,w*scale) by MATLAB-style bicubic interpolation."""
    from dgunet.physics import Downsample

    return Downsample(scale, kernel="bicubic").A_dagger(y)


# A method maps (y, op, params) to the restored image; params: {"kernel": (B,K,K), "sigma": (B,),
# "scale": int} as the protocol made them.
Method = Callable[[Tensor, object, dict], Tensor]


def _wiener(y: Tensor, _op, params: dict) -> Tensor:
    if params.get("scale", 1) != 1:
        raise ConfigError("the wiener baseline deconvolves same-size images; use --method bicubic for "
                          "super-resolution")
    return wiener_deconvolve(y, params["kernel"][:, None], params["sigma"])


def _bicubic(y: Tensor, _op, params: dict) -> Tensor:
    if params.get("scale", 1) == 1:
        raise ConfigError("the bicubic baseline upsamples; use --method wiener for deblurring and denoising")
    return bicubic_upsample(y, params["scale"])


BASELINES: dict[str, Method] = {"wiener": _wiener, "bicubic": _bicubic}
