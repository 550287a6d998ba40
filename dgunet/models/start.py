"""Where the unfolding starts: x0, the image-space estimate the first gradient step is taken from.

Proximal gradient descent converges to a fixed point whatever its start, but seven unfolded stages
do not: they refine x0, and the final head adds its correction onto x0 (`tail(...) + x0`). The
published start is the operator's A_dagger(y) (the blurred image itself for the blind tasks). With
a known operator one can start from a classical solver instead, which is the better estimate the
stages then only have to correct (a warm start, as plug-and-play solvers start from a filtered
estimate):

  adagger         op.A_dagger(y) (else A^T y): the published behaviour, the default
  hyperlaplacian  Krishnan & Fergus's hyper-Laplacian HQS with the true kernel (identity for
                  denoising) and lam tuned on training photos (dgunet.baselines): about 2 dB above
                  A_dagger for deblurring at 1% noise, for a few FFTs per splitting step
  nlm             non-local means (denoising only, scikit-image on the CPU: a host round trip)

A classical start needs what the solver needs: a circular `Blur` (its kernel) or an `Identity`,
and the noise level sigma (the `sigma=` argument or op.noise_model.sigma). An operator that wraps
another (dgunet.testrun.known.PaddedOperator) supplies `classical_start(y, start, sigma)` itself.
It is computed without gradient, in float64, and does not depend on the network's weights, so it
is the same estimate the matching `--method` baseline reports.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dgunet.errors import PhysicsError

STARTS = ("adagger", "hyperlaplacian", "nlm")
DENOISING_ONLY = ("nlm",)


def solver_kernel(physics, y: Tensor) -> Tensor:
    """(B,K,K) kernel of the classical solver: the circular Blur's (one per sample; one kernel for
    every channel), or the 1x1 identity kernel. PhysicsError for any other operator."""
    from dgunet.physics import Blur, Identity

    batch = y.shape[0]
    if isinstance(physics, Identity):
        return torch.ones(batch, 1, 1, dtype=torch.float64, device=y.device)
    if isinstance(physics, Blur) and physics.padding == "circular" and physics.kernel.shape[1] == 1:
        kernel = physics.kernel[:, 0].to(torch.float64)
        return kernel.expand(batch, -1, -1) if kernel.shape[0] == 1 else kernel
    raise PhysicsError(f"a classical start needs a circular Blur with one kernel per sample, or an Identity "
                       f"(denoising); the operator is {type(physics).__name__}: build the model with "
                       f"start='adagger' (MODEL.START adagger)")


def per_sample_sigma(physics, sigma, batch: int, device, dtype: torch.dtype, who: str) -> Tensor:
    """(B,) noise std of y: the `sigma=` argument (one float or (B,)), else op.noise_model.sigma.

    Built on `device` without host reads: a float becomes a device fill, a tensor is moved.
    `who` names what needs it in the error ("a noise-aware model", "a classical start").
    """
    if sigma is None:
        sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
    if sigma is None:
        raise PhysicsError(f"{who} needs the noise level of y: call model(y, physics=op, sigma=s) or give "
                           f"{type(physics).__name__} a noise model with sigma (noise_model=GaussianNoise(s))")
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().to(device=device, dtype=dtype)
    else:
        sigma = torch.full((), float(sigma), device=device, dtype=dtype)
    if sigma.dim() > 1 or sigma.numel() not in (1, batch):
        raise PhysicsError(f"{sigma.numel()} noise levels for a batch of {batch}; give one sigma per sample "
                           f"(B,) or one float")
    return sigma.reshape(-1).expand(batch)


def start_estimate(physics, y: Tensor, start: str, sigma=None) -> Tensor:
    """x0 (B,C,H,W) in y's dtype: see the module docstring for `start`."""
    from dgunet.physics.base import initial_estimate

    if start == "adagger":
        return initial_estimate(physics, y)
    own = getattr(physics, "classical_start", None)
    if callable(own):  # a wrapper (e.g. a padded operator) starts from its inner operator's estimate
        return own(y, start, sigma)
    from dgunet.baselines import BASELINES

    kernel = solver_kernel(physics, y)
    if start in DENOISING_ONLY and kernel.shape[-1] != 1:
        raise PhysicsError(f"start={start!r} denoises; a Blur operator starts from 'hyperlaplacian' or "
                           f"'adagger'")
    sigma = per_sample_sigma(physics, sigma, y.shape[0], y.device, torch.float64, "a classical start")
    params = {"kernel": kernel, "sigma": sigma, "scale": 1}
    with torch.no_grad():  # a fixed function of y: no weights, nothing to learn through
        return BASELINES[start](y.detach(), physics, params).to(device=y.device, dtype=y.dtype)
