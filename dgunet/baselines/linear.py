"""Linear baselines by FFT on the circular blur model y = k * x + n: the flat-spectrum Wiener
filter and the gradient-regularised inverse, with eps by a rule or chosen per image (oracle).

Every filter here acts on y minus its per-channel mean and adds the mean back: a kernel of sum 1
keeps the mean, and shrinking it would darken the image. Kernels are centred on pixel (0, 0) as
physics.Blur's circular convolution uses them (`transfer_function`).

Flat-spectrum Wiener (`wiener_flat`). The linear filter that minimises the expected squared error
for a signal whose power is the same at every frequency:
    X = conj(K) Y / (|K|^2 + NSR),   NSR = s_eff^2 / p_x,
p_x = max(var(y) - s^2, 1e-4) (the blurred signal's variance, a lower bound of the clean one's),
s_eff^2 = s^2 + 1 / (12 * 255^2) (adds the variance of 8-bit rounding, so that a noiseless 8-bit
input does not divide by the zeros of K). Natural images are not flat (their power falls like
1/f^2), so this filter under-regularises high frequencies: a weak baseline, named for what it is.

Gradient-regularised inverse (`regularised_inverse`): argmin_x ||k * x - y||^2 + eps ||grad x||^2,
    X = conj(K) Y / (|K|^2 + eps |D|^2),   |D|^2 = 4 sin^2(pi fy) + 4 sin^2(pi fx),
i.e. Wiener with a 1/f^2 signal spectrum: the best linear family member in practice. physics.Blur's
A_dagger is this filter with eps = dagger_eps + dagger_noise_gain * sigma^2 (its rule, tuned on
training photos); `oracle_eps` chooses eps per image on the ground truth instead, the best any
filter of the family can do on that image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

QUANTISATION_VAR = 1.0 / (12 * 255.0**2)  # variance of rounding to 8 bits, on [0, 1] images
MIN_SIGNAL_VAR = 1e-4
ORACLE_LOG10_RANGE = (-7.0, 1.0)  # eps searched in 1e-7 .. 10
ORACLE_GRID = 17  # log grid points (every 0.5 decade), then golden-section in the best bracket
ORACLE_GOLDEN_STEPS = 24  # bracket of 1 decade shrinks to 1e-5 decade
GOLDEN = (math.sqrt(5) - 1) / 2


def transfer_function(kernel: Tensor, h: int, w: int) -> Tensor:
    """(B,1,k,k) or (k,k) kernel -> (B,1,h,w//2+1) complex spectrum of its circular convolution."""
    if kernel.dim() == 2:
        kernel = kernel[None, None]
    k = kernel.shape[-1]
    padded = kernel.new_zeros(*kernel.shape[:-2], h, w)
    padded[..., :k, :k] = kernel
    padded = torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(-2, -1))  # centre -> (0, 0)
    return torch.fft.rfft2(padded)


def difference_spectra(h: int, w: int, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """Transfer functions (h, w//2+1) of circular forward differences x[i+1] - x[i] along rows
    (vertical, D_v) and columns (horizontal, D_h)."""
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype, device=device)[None, :]
    d_v = torch.exp(2j * math.pi * fy) - 1
    d_h = torch.exp(2j * math.pi * fx) - 1
    return d_v.expand(h, fx.shape[1]), d_h.expand(h, fx.shape[1])


def gradient_power(h: int, w: int, dtype=torch.float64, device=None) -> Tensor:
    """|D_v|^2 + |D_h|^2 = 4 sin^2(pi fy) + 4 sin^2(pi fx), shape (h, w//2+1)."""
    fy = torch.fft.fftfreq(h, dtype=dtype, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=dtype, device=device)[None, :]
    return 4 * torch.sin(math.pi * fy) ** 2 + 4 * torch.sin(math.pi * fx) ** 2


def _as_batch(sigma: float | Tensor, device) -> Tensor:
    return torch.as_tensor(sigma, dtype=torch.float64, device=device).reshape(-1, 1, 1, 1)


def wiener_flat(y: Tensor, kernel: Tensor, sigma: float | Tensor) -> Tensor:
    """y (B,C,H,W) blurred with `kernel` ((k,k) or (B,1,k,k), sum 1), noise std `sigma` -> x (B,C,H,W)."""
    y64 = y.double()
    h, w = y.shape[-2:]
    sigma = _as_batch(sigma, y.device)
    noise_var = sigma**2 + QUANTISATION_VAR
    signal_var = (y64.var(dim=(-3, -2, -1), keepdim=True) - sigma**2).clamp_min(MIN_SIGNAL_VAR)
    nsr = noise_var / signal_var
    spectrum = transfer_function(kernel.to(y.device, torch.float64), h, w)
    mean = y64.mean(dim=(-2, -1), keepdim=True)
    filtered = spectrum.conj() * torch.fft.rfft2(y64 - mean) / (spectrum.abs() ** 2 + nsr)
    return (torch.fft.irfft2(filtered, s=(h, w)) + mean).to(y.dtype)


wiener_deconvolve = wiener_flat  # the name of earlier releases


class RegularisedInverse:
    """The family x(eps) = argmin ||k * x - y||^2 + eps ||grad x||^2 for one batch y (B,C,H,W):
    the FFTs are computed once, so trying many eps costs one division and one inverse FFT each."""

    def __init__(self, y: Tensor, kernel: Tensor):
        self.shape, self.dtype = y.shape[-2:], y.dtype
        y64 = y.double()
        h, w = self.shape
        spectrum = transfer_function(kernel.to(y.device, torch.float64), h, w)
        self.mean = y64.mean(dim=(-2, -1), keepdim=True)
        self.numerator = spectrum.conj() * torch.fft.rfft2(y64 - self.mean)
        self.power = spectrum.abs() ** 2
        self.grad2 = gradient_power(h, w, device=y.device)

    def __call__(self, eps: float | Tensor) -> Tensor:
        """eps: a float or (B,) -> x (B,C,H,W) float64."""
        eps = _as_batch(eps, self.numerator.device)
        x = torch.fft.irfft2(self.numerator / (self.power + eps * self.grad2), s=self.shape)
        return x + self.mean


def regularised_inverse(y: Tensor, kernel: Tensor, eps: float | Tensor) -> Tensor:
    """argmin_x ||k * x - y||^2 + eps ||grad x||^2 (circular), y (B,C,H,W) -> x (B,C,H,W)."""
    return RegularisedInverse(y, kernel)(eps).to(y.dtype)


def _clamped_mse(x: Tensor, clean: Tensor) -> Tensor:
    """(B,C,H,W) pair -> (B,) mean squared error of x clamped to [0, 1], as the scorer sees it."""
    return (x.clamp(0, 1) - clean).pow(2).mean(dim=(-3, -2, -1))


def oracle_eps(y: Tensor, kernel: Tensor, clean: Tensor) -> Tensor:
    """(B,) eps minimising the error of `regularised_inverse` against `clean` (B,C,H,W), per image.

    A log grid (every half decade over ORACLE_LOG10_RANGE) brackets the best eps; golden-section
    search on log10 eps then narrows the bracket around the best grid point to 1e-5 decade. The
    error is that of the output clamped to [0, 1] (what an 8-bit file keeps).
    """
    family, clean = RegularisedInverse(y, kernel), clean.double()
    batch = y.shape[0]
    grid = torch.linspace(*ORACLE_LOG10_RANGE, ORACLE_GRID, dtype=torch.float64)
    errors = torch.stack([_clamped_mse(family(10.0 ** g), clean) for g in grid.tolist()], dim=1)  # (B,G)
    best = errors.argmin(dim=1)
    step = float(grid[1] - grid[0])
    lo, hi = grid[best] - step, grid[best] + step
    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    fa, fb = _clamped_mse(family(10.0**a), clean), _clamped_mse(family(10.0**b), clean)
    for _ in range(ORACLE_GOLDEN_STEPS):  # per image: keep the side of the smaller error
        left = fa < fb
        lo, hi = torch.where(left, lo, a), torch.where(left, b, hi)
        new_a = torch.where(left, hi - GOLDEN * (hi - lo), b)
        new_b = torch.where(left, a, lo + GOLDEN * (hi - lo))
        probe = torch.where(left, new_a, new_b)
        f_probe = _clamped_mse(family(10.0**probe), clean)
        fa, fb = torch.where(left, f_probe, fb), torch.where(left, fa, f_probe)
        a, b = new_a, new_b
    final = torch.where(fa < fb, a, b)
    best_grid = grid[best]  # keep the grid point if the search found nothing better (flat error)
    use_grid = errors[torch.arange(batch), best] < torch.minimum(fa, fb)
    return 10.0 ** torch.where(use_grid, best_grid, final)
