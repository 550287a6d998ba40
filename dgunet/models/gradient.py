"""The gradient step (FGDM) of the image models, with a learned or a known degradation.

DGUNet unfolds proximal gradient descent on  1/2 ||A x - y||^2 + prior(x).  Its gradient step is

  learned        v = x - r * phi^T(phi(x) - y)          the published step: A and A^T are ResBlocks
  known          v = x - r * A^T(A x - y)                the operator is given (deblurring with a known
                                                         kernel, super-resolution, denoising, ...)
  known+learned  v = x - r * P(A^T(A x - y))             the known gradient through a learned
                 P(g) = phit(g) - phit(0) = g + body(g) - body(0)        preconditioner

Why this form for "known+learned": the known gradient is exact for the model of the degradation,
and what a network can add is a better *metric* for that gradient (the classic role of a
preconditioner), e.g. to absorb a slightly wrong kernel or spatially varying noise. Subtracting
phit(0) makes P(0) = 0, so a data-consistent estimate (A x = y) stays a fixed point of the step:
the learned part can reshape the descent, never pull the estimate away from the measurements.
It reuses the stage's published `phit` ResBlock (identity plus a small residual), so all three
modes have the same parameters and a published checkpoint initialises any of them.

An operator is anything with `A(x)` and `A_adjoint(y)` (dgunet.physics, deepinv's physics, your
own); `A_dagger(y)`, when present, gives the image-space start x0, else `A_adjoint(y)` does.

A "learned" (blind) model given an operator uses it only to bring y to image size: when y already
has the image's size (blur, noise) it starts from y alone, exactly as published; otherwise (SR)
from A_dagger(y), e.g. the bicubic upsampling, the usual input of a blind SR network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import initial_estimate, shape_text

GRADIENTS = ("learned", "known", "known+learned")


@dataclass
class Observation:
    """What every stage's gradient step needs to know about the measurement.

    y: the measurement as given (B,C,H,W) for image-space degradations, any shape otherwise.
    x0: the image-space start (B,C,H',W'): y itself, or physics.A_dagger(y).
    physics: the operator, or None (the published, blind setting).
    mode: one of GRADIENTS.
    """

    y: Tensor
    x0: Tensor
    physics: object | None
    mode: str


def observe(y: Tensor, physics, mode: str, min_size: int, multiple: int) -> Observation:
    """Check y against the operator and the model, and compute the start x0.

    Without an operator (the published setting) nothing is checked or computed: x0 is y.
    """
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
    if mode == "learned" and physics.A_adjoint(y).shape == y.shape:
        return Observation(y, y, None, mode)  # blind: the operator's knowledge is not used
    x0 = initial_estimate(physics, y)
    h, w = x0.shape[-2:]
    if x0.dim() != 4 or h % multiple or w % multiple or min(h, w) < min_size:
        raise PhysicsError(f"the operator's image estimate is {shape_text(x0.shape)}; the model needs "
                           f"(B,C,H,W) with H and W multiples of {multiple} and at least {min_size}: crop the "
                           f"clean images to such sizes before degrading them")
    return Observation(y, x0, physics, mode)


def residual(x: Tensor, obs: Observation) -> Tensor:
    """A x - y, refused when A x and y differ in shape (broadcasting would hide a wrong operator)."""
    ax = obs.physics.A(x)
    if ax.shape != obs.y.shape:
        raise PhysicsError(f"the operator maps a {shape_text(x.shape)} image to {shape_text(ax.shape)}, "
                           f"but y is {shape_text(obs.y.shape)}: pass the operator that produced y")
    return ax - obs.y


def gradient_step(x: Tensor, obs: Observation, r: Tensor, phi: nn.Module, phit: nn.Module) -> Tensor:
    """FGDM: x (B,C,H,W) -> v (B,C,H,W), one step on 1/2 ||A x - y||^2 with step size r."""
    if obs.mode == "learned":
        return x - r * phit(phi(x) - obs.x0)
    g = obs.physics.A_adjoint(residual(x, obs))
    if obs.mode == "known+learned":
        g = phit(g) - phit(torch.zeros_like(g[:1]))
    return x - r * g
