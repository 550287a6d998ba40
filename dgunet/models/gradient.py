"""The gradient step (FGDM) of the image models, with a learned or a known degradation.

DGUNet unfolds proximal gradient descent on  1/2 ||A x - y||^2 + prior(x).  Its gradient step is

  learned        v = x - r * phi^T(phi(x) - y)          the published step: A and A^T are ResBlocks
  known          v = x - (r / L) * A^T(A x - y)          the operator is given (deblurring with a known
                                                         kernel, super-resolution, denoising, ...)
  known+learned  v = x - r * P(A^T(A x - y) / L)         the known gradient through a learned
                 P(g) = phit(g) - phit(0) = g + body(g) - body(0)        preconditioner
  with L = ||A^T A||, the Lipschitz constant of the data term's gradient.

Why r / L: a gradient step x - t A^T(A x - y) is stable for t < 2/L and is ISTA's step at t = 1/L,
but L spans three decades across operators (1 for a sum-1 blur, 1/16 for bicubic x4, 9 for an
i.i.d. Gaussian CS matrix at 25%). A bare r of 0.5 moved SR x4 3% of the way of a 1/L step and
overshot fixed-matrix CS 4-50x. Relative to L, r = 0.5 (the published initialisation) is half an
ISTA step for every operator, and the step is unchanged when A -> cA, y -> cy. L comes from the
operator (`physics.base.operator_norm`: its `norm_AtA`, else a power iteration), once per forward
in `observe`, without gradient. `learned` keeps the published step bit for bit.

Noise-aware stages (opt-in, `noise_aware=True`, dgunet.models.image.NoiseConditioning): the model is
told the noise level sigma of y (the operator's `noise_model.sigma`, per sample (B,) or one float,
or `model(y, physics=op, sigma=s)`). It enters as sigma / sqrt(L): the noise of the normalised problem
||(A/sqrt(L)) x - y/sqrt(L)||^2, whose operator has norm 1, i.e. the noise level in the units of x;
it too is unchanged when A -> cA, y -> cy, sigma -> c sigma. A small network maps it to a gain in
(0, 2) on every stage's r (how far to trust y: with more noise a smaller step) and to a per-channel
shift of every stage's proximal features (how strongly to denoise), as USRNet's hyper-network sets
its stages' weights from sigma. Both start neutral (gain 1, shift 0): at initialisation a
noise-aware model computes exactly what the plain known model computes.

Why this form for "known+learned": the known gradient is exact for the model of the degradation,
and what a network can add is a better *metric* for that gradient (the classic role of a
preconditioner), e.g. to absorb a slightly wrong kernel or spatially varying noise. Subtracting
phit(0) makes P(0) = 0, so a data-consistent estimate (A x = y) stays a fixed point of the step:
the learned part can reshape the descent, never pull the estimate away from the measurements.
It reuses the stage's published `phit` ResBlock (identity plus a small residual), so all three
modes have the same parameters and a published checkpoint initialises any of them.

An operator is anything with `A(x)` and `A_adjoint(y)` (dgunet.physics, deepinv's physics, your
own); `A_dagger(y)`, when present, gives the image-space start x0, else `A_adjoint(y)` does; a known
model may start from a classical solver instead (`start=`, dgunet.models.start).

A "learned" (blind) model given an operator uses it only to bring y to image size: when y already
has the image's size (blur, noise) it starts from y alone, exactly as published; otherwise (SR)
from A_dagger(y), e.g. the bicubic upsampling, the usual input of a blind SR network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.models.start import per_sample_sigma, start_estimate
from dgunet.physics.base import adjoint_shape, operator_norm, shape_text

GRADIENTS = ("learned", "known", "known+learned")


@dataclass
class Observation:
    """What every stage's gradient step needs to know about the measurement.

    y: the measurement as given (B,C,H,W) for image-space degradations, any shape otherwise.
    x0: the image-space start (B,C,H',W'): y itself, or physics.A_dagger(y).
    physics: the operator, or None (the published, blind setting).
    mode: one of GRADIENTS.
    step_scale: 1/L, a float or (B,1,1,1), filled by `observe` for the known modes (1 when built by
      hand: the caller's r is then the whole step).
    sigma: (B,) noise level in image units, sigma / sqrt(L), for noise-aware models; else None.
    """

    y: Tensor
    x0: Tensor
    physics: object | None
    mode: str
    step_scale: float | Tensor = 1.0
    sigma: Tensor | None = None


def observe(y: Tensor, physics, mode: str, min_size: int, multiple: int, sigma=None,
            noise_aware: bool = False, start: str = "adagger") -> Observation:
    """Check y against the operator and the model; compute the start x0, 1/L and the noise level.

    Without an operator (the published setting) nothing is checked or computed: x0 is y.
    sigma: the noise level of y (float or (B,)) for a noise-aware model; None: op.noise_model.sigma.
    start: where x0 comes from (dgunet.models.start): the operator's A_dagger, or a classical solver.
    """
    if sigma is not None and not noise_aware:
        raise PhysicsError("sigma= is read by noise-aware models only; build the model with noise_aware=True "
                           "(MODEL.NOISE_AWARE true) or leave sigma out")
    if physics is None:
        if mode != "learned":
            raise PhysicsError(f"gradient={mode!r} needs the degradation operator: call model(y, physics=op) "
                               f"with op from dgunet.physics (or any object with A and A_adjoint), or build "
                               f"the model with gradient='learned'")
        return Observation(y, y, None, mode)
    missing = [name for name in ("A", "A_adjoint") if not callable(getattr(physics, name, None))]
    if missing:
        raise PhysicsError(f"the operator {type(physics).__name__} has no {' or '.join(missing)}; an operator "
                           f"needs A(x) and A_adjoint(y) (see docs/physics.md)")
    if mode == "learned" and adjoint_shape(physics, y) == y.shape:
        return Observation(y, y, None, mode)  # blind: the operator's knowledge is not used
    x0 = start_estimate(physics, y, start, sigma)
    h, w = x0.shape[-2:]
    if x0.dim() != 4 or h % multiple or w % multiple or min(h, w) < min_size:
        raise PhysicsError(f"the operator's image estimate is {shape_text(x0.shape)}; the model needs "
                           f"(B,C,H,W) with H and W multiples of {multiple} and at least {min_size}: crop the "
                           f"clean images to such sizes before degrading them")
    if mode == "learned":
        return Observation(y, x0, physics, mode)
    with torch.no_grad():
        lipschitz = operator_norm(physics, x0.detach())
    obs = Observation(y, x0, physics, mode, inverse_norm(lipschitz))
    if noise_aware:
        obs.sigma = noise_level(physics, sigma, lipschitz, x0)
    return obs


def inverse_norm(lipschitz: float | Tensor) -> float | Tensor:
    """1/L as a float or (B,1,1,1) (L per sample); 0 where L = 0 (A = 0: no step to take)."""
    if not isinstance(lipschitz, Tensor):
        return 1.0 / float(lipschitz) if lipschitz > 0 else 0.0
    lipschitz = lipschitz.detach().float()
    lipschitz = lipschitz.reshape(-1, 1, 1, 1) if lipschitz.dim() == 1 else lipschitz
    return torch.where(lipschitz > 0, 1.0 / lipschitz, torch.zeros_like(lipschitz))


def noise_level(physics, sigma, lipschitz: float | Tensor, x0: Tensor) -> Tensor:
    """(B,) sigma / sqrt(L): the noise of y in the units of x (see the module docstring).

    Built on x0's device without host copies or reads: floats become device fills, tensors stay.
    """
    batch = x0.shape[0]
    sigma = per_sample_sigma(physics, sigma, batch, x0.device, torch.float32, "a noise-aware model")
    tiny = torch.finfo(torch.float32).tiny
    if not isinstance(lipschitz, Tensor):
        return sigma / math.sqrt(max(float(lipschitz), tiny))
    root = lipschitz.detach().to(device=x0.device, dtype=torch.float32).reshape(-1).sqrt()
    return sigma / root.clamp_min(tiny).expand(batch)


def residual(x: Tensor, obs: Observation) -> Tensor:
    """A x - y, refused when A x and y differ in shape (broadcasting would hide a wrong operator)."""
    ax = obs.physics.A(x)
    if ax.shape != obs.y.shape:
        raise PhysicsError(f"the operator maps a {shape_text(x.shape)} image to {shape_text(ax.shape)}, "
                           f"but y is {shape_text(obs.y.shape)}: pass the operator that produced y")
    return ax - obs.y


def gradient_step(x: Tensor, obs: Observation, r: Tensor, phi: nn.Module, phit: nn.Module) -> Tensor:
    """FGDM: x (B,C,H,W) -> v (B,C,H,W), one step on 1/2 ||A x - y||^2 of size r (known: r / L).

    r: the stage's step size, (1,) or (B,1,1,1) (a noise-aware model's per-sample gain times r).
    """
    if obs.mode == "learned":
        return x - r * phit(phi(x) - obs.x0)
    g = obs.physics.A_adjoint(residual(x, obs)) * obs.step_scale  # the gradient of the data term / L
    if obs.mode == "known+learned":
        g = phit(g) - phit(torch.zeros_like(g[:1]))
    return x - r * g
