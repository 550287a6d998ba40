"""Non-blind deconvolution with a hyper-Laplacian gradient prior (Krishnan & Fergus, NeurIPS 2009),
written here from the paper's description, by half-quadratic splitting (HQS) on circular blur.

    min_x  1/2 ||k * x - y||^2 + lam * sum_i (|D_h x|_i^alpha + |D_v x|_i^alpha),   alpha = 2/3

with D_h, D_v circular forward differences. HQS adds auxiliary gradients w and a penalty beta,

    J_beta(x, w) = 1/2 ||k * x - y||^2 + lam * sum |w|^alpha + beta/2 ||D x - w||^2,

and alternates two exact minimisations while beta grows (beta -> inf gives back the problem):
  w-step, per pixel: argmin_w lam |w|^alpha + beta/2 (w - v)^2, v = D x. For alpha < 1 the minimiser
    is 0 or the largest root t in (0, |v|) of  t - |v| + c t^(alpha-1) = 0, c = lam alpha / beta;
    that function is convex in t > 0, so Newton's method from t = |v| descends monotonically onto
    the root (NEWTON_STEPS steps; no root when it turns uphill). The root is kept when its energy
    is below that of w = 0.
  x-step, closed form by FFT:
    X = (conj(K) Y + beta (conj(D_h) W_h + conj(D_v) W_v)) / (|K|^2 + beta (|D_h|^2 + |D_v|^2)).
The schedule is the paper's in our units: beta / lam from BETA_START to below BETA_MAX, times
BETA_RATE each step, one (w, x) pass per beta. lam as a function of the noise std comes from
dgunet.baselines.tuned (tuned on training photos by scripts/tune_baselines.py). With the identity
kernel (K = 1) the same solver is a hyper-Laplacian denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dgunet.baselines.linear import difference_spectra, transfer_function

NEWTON_STEPS = 12
TINY = 1e-30


@dataclass(frozen=True)
class Schedule:
    """alpha: the prior's exponent; beta / lam runs start, start*rate, ... while below max."""

    alpha: float = 2 / 3
    beta_start: float = 1.0
    beta_rate: float = 2 * math.sqrt(2)
    beta_max: float = 256.0

    def betas(self, lam: Tensor) -> list[Tensor]:
        ratios, r = [], self.beta_start
        while r < self.beta_max:
            ratios.append(r)
            r *= self.beta_rate
        return [lam * r for r in ratios]


def shrink(v: Tensor, lam: Tensor, beta: Tensor, alpha: float) -> Tensor:
    """argmin_w lam |w|^alpha + beta/2 (w - v)^2 elementwise, 0 < alpha < 1 (module docstring)."""
    a = v.abs()
    c = lam * alpha / beta
    t = a.clone()
    for _ in range(NEWTON_STEPS):
        safe = t.clamp_min(TINY)
        power = safe ** (alpha - 1)  # the solver's cost: one fractional power per step; t^(alpha-2) = power / t
        f = t - a + c * power
        slope = 1 + c * (alpha - 1) * power / safe
        downhill = (slope > 0) & (t > 0)  # past the minimum of the convex f: no root, w = 0
        t = torch.where(downhill, (t - f / torch.where(downhill, slope, 1.0)).clamp(0), torch.zeros_like(t))
    energy = lam * t**alpha + beta / 2 * (t - a) ** 2
    return torch.where(energy < beta / 2 * a**2, t, torch.zeros_like(t)) * torch.sign(v)


def gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Circular forward differences (D_h x, D_v x) of x (B,C,H,W)."""
    return torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x


def objective(x: Tensor, y: Tensor, kernel: Tensor, lam: Tensor, alpha: float) -> Tensor:
    """(B,) value of 1/2 ||k * x - y||^2 + lam sum |D x|^alpha (the problem HQS solves)."""
    h, w = x.shape[-2:]
    blurred = torch.fft.irfft2(transfer_function(kernel, h, w) * torch.fft.rfft2(x), s=(h, w))
    g_h, g_v = gradients(x)
    prior = g_h.abs().pow(alpha).sum(dim=(-3, -2, -1)) + g_v.abs().pow(alpha).sum(dim=(-3, -2, -1))
    return 0.5 * (blurred - y).pow(2).sum(dim=(-3, -2, -1)) + lam.flatten() * prior


def split_objective(x: Tensor, w: tuple[Tensor, Tensor], y: Tensor, kernel: Tensor, lam: Tensor, beta: Tensor,
                    alpha: float) -> Tensor:
    """(B,) J_beta(x, w) of the module docstring."""
    h, wd = x.shape[-2:]
    blurred = torch.fft.irfft2(transfer_function(kernel, h, wd) * torch.fft.rfft2(x), s=(h, wd))
    g_h, g_v = gradients(x)
    lam4, beta4 = lam.reshape(-1, 1, 1, 1), beta.reshape(-1, 1, 1, 1)
    terms = (0.5 * (blurred - y).pow(2) + lam4 * (w[0].abs().pow(alpha) + w[1].abs().pow(alpha))
             + beta4 / 2 * ((g_h - w[0]).pow(2) + (g_v - w[1]).pow(2)))
    return terms.sum(dim=(-3, -2, -1))


class HyperLaplacian:
    """The HQS solver for one batch: y (B,C,H,W), kernel (B,1,k,k) or (k,k), sum 1."""

    def __init__(self, y: Tensor, kernel: Tensor):
        self.y = y.double()
        h, w = y.shape[-2:]
        self.kernel = kernel.to(y.device, torch.float64)
        spectrum = transfer_function(self.kernel, h, w)
        self.d_v, self.d_h = difference_spectra(h, w, device=y.device)
        self.numerator = spectrum.conj() * torch.fft.rfft2(self.y)
        self.power = spectrum.abs() ** 2
        self.grad2 = self.d_h.abs() ** 2 + self.d_v.abs() ** 2

    def w_step(self, x: Tensor, lam: Tensor, beta: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        g_h, g_v = gradients(x)
        return shrink(g_h, lam, beta, alpha), shrink(g_v, lam, beta, alpha)

    def x_step(self, w: tuple[Tensor, Tensor], beta: Tensor) -> Tensor:
        h, wd = self.y.shape[-2:]
        prior = self.d_h.conj() * torch.fft.rfft2(w[0]) + self.d_v.conj() * torch.fft.rfft2(w[1])
        x = (self.numerator + beta * prior) / (self.power + beta * self.grad2)
        return torch.fft.irfft2(x, s=(h, wd))

    def solve(self, lam: float | Tensor, schedule: Schedule = Schedule(), trace=None) -> Tensor:
        """x (B,C,H,W) float64; lam a float or (B,); trace(x, w, beta) is called after every pass."""
        lam = torch.as_tensor(lam, dtype=torch.float64, device=self.y.device).reshape(-1, 1, 1, 1)
        x = self.y
        for beta in schedule.betas(lam):
            w = self.w_step(x, lam, beta, schedule.alpha)
            x = self.x_step(w, beta)
            if trace is not None:
                trace(x, w, beta)
        return x


def hyper_laplacian_deconvolve(y: Tensor, kernel: Tensor, lam: float | Tensor,
                               schedule: Schedule = Schedule()) -> Tensor:
    """y (B,C,H,W) -> x (B,C,H,W) by HQS with the hyper-Laplacian prior (module docstring)."""
    return HyperLaplacian(y, kernel).solve(lam, schedule).to(y.dtype)
