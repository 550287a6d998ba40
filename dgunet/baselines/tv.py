"""Reconstruction with a total-variation prior for any linear operator: the classical solver of the
compressive-sensing tables (TVAL3's problem), written here from the papers' descriptions.

    min_x  1/2 ||A x - y||^2 + lam * TV(x),     TV(x) = sum_i |grad x|_i  (isotropic, per channel)

solved by FISTA (Beck & Teboulle, SIAM J. Imaging Sci. 2009): a gradient step of size 1/L on the
data term (L = ||A^T A||, 1 for the orthonormal CS matrix), then the proximal map of (lam/L) TV,
with Nesterov's momentum. The proximal map (the ROF denoiser) is Chambolle's dual projection
algorithm (J. Math. Imaging Vis. 2004): for prox_{w TV}(f) it iterates on a dual field p (B,C,2,H,W),

    p <- (p + tau grad(div p - f / w)) / (1 + tau |grad(div p - f / w)|),   tau = 1/8,

and returns f - w div p. grad is the forward difference with a zero last row/column (Neumann
boundary), div = -grad^T. The dual field is carried from one FISTA step to the next (a warm start),
so a few inner iterations per step suffice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgunet.physics.base import initial_estimate, operator_norm

TAU = 0.125  # Chambolle's step: converges for tau <= 1/8 in 2-D
FISTA_STEPS = 100
PROX_STEPS = 10


def grad(x: Tensor) -> Tensor:
    """(B,C,H,W) -> (B,C,2,H,W): forward differences down and across, 0 on the last row / column."""
    down = torch.zeros_like(x)
    across = torch.zeros_like(x)
    down[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    across[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack((down, across), dim=2)


def div(p: Tensor) -> Tensor:
    """(B,C,2,H,W) -> (B,C,H,W), the negative adjoint of `grad`: <grad x, p> = -<x, div p>."""
    down, across = p[:, :, 0], p[:, :, 1]
    out = torch.zeros_like(down)
    out[..., :-1, :] += down[..., :-1, :]
    out[..., 1:, :] -= down[..., :-1, :]
    out[..., :, :-1] += across[..., :, :-1]
    out[..., :, 1:] -= across[..., :, :-1]
    return out


def total_variation(x: Tensor) -> Tensor:
    """(B,) isotropic TV of x (B,C,H,W)."""
    return grad(x).pow(2).sum(dim=2).sqrt().flatten(1).sum(dim=1)


def tv_prox(f: Tensor, weight: float | Tensor, steps: int = 200, dual: Tensor | None = None
            ) -> tuple[Tensor, Tensor]:
    """(prox_{weight TV}(f), the dual field): argmin_u 1/2 ||u - f||^2 + weight TV(u), f (B,C,H,W).

    weight: a float or (B,); dual: a starting dual field (B,C,2,H,W) (the previous call's)."""
    w = torch.as_tensor(weight, dtype=f.dtype, device=f.device).reshape(-1, 1, 1, 1)
    p = torch.zeros(*f.shape[:2], 2, *f.shape[2:], dtype=f.dtype, device=f.device) if dual is None else dual
    for _ in range(steps):
        g = grad(div(p) - f / w)
        p = (p + TAU * g) / (1 + TAU * g.pow(2).sum(dim=2, keepdim=True).sqrt())
    return f - w * div(p), p


def tv_reconstruct(y: Tensor, op, lam: float | Tensor, steps: int = FISTA_STEPS,
                   prox_steps: int = PROX_STEPS) -> Tensor:
    """x (B,C,H,W) float64 minimising 1/2 ||A x - y||^2 + lam TV(x) (module docstring), from A_dagger."""
    y = y.double()  # the operator casts its matrix or kernel to y's dtype (ours do; nothing is modified)
    x = initial_estimate(op, y)
    step = 1.0 / float(torch.as_tensor(operator_norm(op, x)).max())
    lam = torch.as_tensor(lam, dtype=torch.float64, device=y.device)
    z, t, dual = x, 1.0, None
    for _ in range(steps):
        x_next, dual = tv_prox(z - step * op.A_adjoint(op.A(z) - y), step * lam, prox_steps, dual)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_next + (t - 1) / t_next * (x_next - x)
        x, t = x_next, t_next
    return x
