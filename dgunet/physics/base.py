"""The operator contract, the base class of our operators, `Identity` and `Compose`.

Duck-typed contract (all the models need; deepinv's physics objects satisfy it):
  op.A(x)          image x (B,C,H,W) -> measurement y (any shape)
  op.A_adjoint(y)  measurement y -> image (B,C,H,W), the exact adjoint of A
  op.A_dagger(y)   optional: measurement -> image-space initial estimate (else A_adjoint is used)
  op.norm_AtA(x)   optional: L = ||A^T A|| (the squared spectral norm of A) on images shaped like x
                   (only x's shape, dtype and device are read): a float, a 0-d tensor or a (B,)
                   tensor, one L per sample when A acts on each sample separately. Without it,
                   `operator_norm` estimates L by `power_iteration`.
  op.image_shape(y_shape)  optional: the shape A_adjoint returns for a measurement of y_shape,
                   without computing it (the blind models use it to tell same-size operators apart)
  op.project(z, y) optional: the image nearest z (B,C,H,W) with A x = y exactly, z + A^+(y - A z)
                   (read by a model's MODEL.DATA_CONSISTENCY; see `project`)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.noise import GaussianNoise


def shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_image(name: str, x: Tensor) -> None:
    """Every operator takes images (B,C,H,W)."""
    if x.dim() != 4:
        raise PhysicsError(f"{name}: x is {shape_text(x.shape)}; pass an image batch (B,C,H,W), e.g. x[None] "
                           f"for one (C,H,W) image")


def initial_estimate(op, y: Tensor) -> Tensor:
    """op.A_dagger(y) when the operator has one, else op.A_adjoint(y) (works for any duck-typed op)."""
    dagger = getattr(op, "A_dagger", None)
    return dagger(y) if callable(dagger) else op.A_adjoint(y)


# Power iteration for operators without norm_AtA: at most POWER_ITERATIONS products A^T A v; it
# stops early once the estimate moved by less than POWER_TOLERANCE (relative) over the last
# POWER_CHECK_EVERY iterations (checked every POWER_CHECK_EVERY: each check is one host sync on a GPU).
POWER_ITERATIONS = 50
POWER_TOLERANCE = 1e-4
POWER_CHECK_EVERY = 5


def _sum_over(v: Tensor, per_sample: bool) -> Tensor:
    return v.flatten(1).sum(dim=1) if per_sample else v.sum()


@torch.no_grad()
def power_iteration(op, x: Tensor, per_sample: bool = False, iterations: int = POWER_ITERATIONS,
                    tolerance: float = POWER_TOLERANCE) -> Tensor:
    """Estimate L = ||A^T A|| on images shaped like x (B,C,H,W) (a lower bound converging to L).

    per_sample=True: one L per sample, (B,), valid only when A acts on each sample separately (all
    dgunet.physics operators do); False: one L for the whole batch as one vector, 0-d (right for any
    linear A). The start vector is seeded (per device type), so the estimate is repeatable.
    """
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    generator = torch.Generator(device=x.device).manual_seed(0)  # drawn on x's device: no host copy
    v = torch.randn(x.shape, generator=generator, dtype=dtype, device=x.device)
    v = v / _sum_over(v * v, per_sample).sqrt().reshape(-1, *([1] * (v.dim() - 1)))
    estimate, previous = None, None
    for i in range(iterations):
        w = op.A_adjoint(op.A(v))
        estimate = _sum_over(v * w, per_sample)  # Rayleigh quotient <v, A^T A v>, ||v|| = 1
        norm = _sum_over(w * w, per_sample).sqrt().clamp_min(torch.finfo(dtype).tiny)
        v = w / norm.reshape(-1, *([1] * (w.dim() - 1)))
        if (i + 1) % POWER_CHECK_EVERY == 0:
            if previous is not None and bool(((estimate - previous).abs() <= tolerance * estimate.abs()).all()):
                break
            previous = estimate
    return estimate


BOUND_ITERATIONS = 5  # Collatz-Wielandt bound: within 1.07x of L for the padded blurs of tests/test_physics.py


def nonnegative_bound(op, x: Tensor, iterations: int = BOUND_ITERATIONS) -> Tensor:
    """Upper bound of L = ||A^T A|| per sample, (B,), for an A with non-negative entries.

    M = A^T A is then a non-negative symmetric matrix, and for any positive w, L <= max_i (M w)_i / w_i
    (Collatz-Wielandt; w = 1 is Schur's test). Iterating w <- M w lowers the bound towards L: one A
    and one A^T per iteration, no host sync.
    """
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    w = torch.ones(x.shape, dtype=dtype, device=x.device)
    for _ in range(iterations):
        mw = op.A_adjoint(op.A(w))
        bound = (mw / w.clamp_min(torch.finfo(dtype).tiny)).flatten(1).amax(dim=1)
        w = mw / mw.flatten(1).amax(dim=1).clamp_min(torch.finfo(dtype).tiny).reshape(-1, 1, 1, 1)
    return bound


def operator_norm(op, x: Tensor) -> float | Tensor:
    """L = ||A^T A|| of any operator on images shaped like x: op.norm_AtA(x) when it has one, else a
    power iteration over the whole batch (one L for all samples: a duck-typed A may mix samples)."""
    exact = getattr(op, "norm_AtA", None)
    return exact(x) if callable(exact) else power_iteration(op, x)


def project(op, z: Tensor, y: Tensor) -> Tensor:
    """op.project(z, y): the orthogonal projection of z (B,C,H,W) onto {x : A x = y}.

    Why it can only help with noiseless y: the projection is onto an affine set that holds the true
    image, so by Pythagoras it is never farther from it than z is (any z, any image). Raises
    PhysicsError for operators without an exact, cheap projection.
    """
    method = getattr(op, "project", None)
    if not callable(method):
        raise PhysicsError(f"the operator {type(op).__name__} has no project(z, y) (the exact projection onto "
                           f"A x = y): data consistency is for Downsample (bicubic), Inpainting and "
                           f"Identity; turn MODEL.DATA_CONSISTENCY off for this operator")
    return method(z, y)


def adjoint_shape(op, y: Tensor) -> torch.Size:
    """The shape of op.A_adjoint(y), computed without A_adjoint on the whole batch where possible.

    Our operators know it (`image_shape`); a duck-typed one is asked on the first sample, and on the
    whole batch only when it refuses a slice (an operator holding one parameter per sample).
    """
    shape_of = getattr(op, "image_shape", None)
    if callable(shape_of):
        return torch.Size(shape_of(y.shape))
    with torch.no_grad():
        try:
            first = op.A_adjoint(y[:1]).shape
        except (RuntimeError, ValueError):
            return op.A_adjoint(y).shape
    return torch.Size((y.shape[0], *first[1:]))


class LinearOperator(nn.Module):
    """A linear forward operator A with its adjoint; `op(x)` = noise_model(A(x)) simulates a measurement.

    nn.Module so that `.to(device, dtype)` moves kernels, masks and matrices (registered as buffers).
    Subclasses implement `A` and `A_adjoint`; `A_dagger` defaults to the adjoint.
    """

    def __init__(self, noise_model: nn.Module | None = None):
        super().__init__()
        self.noise_model = noise_model if noise_model is not None else GaussianNoise(0.0)

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_dagger(self, y: Tensor) -> Tensor:
        """A cheap image-space initial estimate from y; here the adjoint (subclasses do better)."""
        return self.A_adjoint(y)

    def norm_AtA(self, x: Tensor) -> float | Tensor:
        """L = ||A^T A|| on images shaped like x; here one power iteration per sample (our operators
        act on each sample separately). Subclasses that know L exactly override it."""
        return power_iteration(self, x, per_sample=True)

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,H,W) -> y = A(x) + noise."""
        return self.noise_model(self.A(x))


class Identity(LinearOperator):
    """A = I (denoising): y (B,C,H,W) = x; adjoint and initial estimate are y."""

    def A(self, x: Tensor) -> Tensor:
        check_image("Identity", x)
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def A_dagger(self, y: Tensor) -> Tensor:
        return y

    def norm_AtA(self, x: Tensor) -> float:
        return 1.0

    def project(self, z: Tensor, y: Tensor) -> Tensor:
        """A x = y holds for x = y alone."""
        return y.to(z.dtype).expand_as(z)

    def image_shape(self, y_shape) -> torch.Size:
        return torch.Size(y_shape)


class Compose(LinearOperator):
    """A = A2 A1 (first A1, then A2): e.g. Compose(Downsample(2), Blur(k)) blurs, then subsamples.

    A1 and A2 may be any objects with A and A_adjoint. The adjoint is A1^T A2^T. A_dagger applies
    the parts' initial estimates in reverse order (A1_dagger(A2_dagger(y))): a cheap start, not
    the pseudo-inverse of the product. The noise model is this object's, not the parts'.
    """

    def __init__(self, A2, A1, noise_model: nn.Module | None = None):
        super().__init__(noise_model)
        for name, op in (("A2", A2), ("A1", A1)):
            if not (callable(getattr(op, "A", None)) and callable(getattr(op, "A_adjoint", None))):
                raise PhysicsError(f"Compose: {name} ({type(op).__name__}) has no A/A_adjoint; pass operators "
                                   f"from dgunet.physics or objects with both methods")
        self.A2, self.A1 = A2, A1

    def A(self, x: Tensor) -> Tensor:
        return self.A2.A(self.A1.A(x))

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A1.A_adjoint(self.A2.A_adjoint(y))

    def A_dagger(self, y: Tensor) -> Tensor:
        return initial_estimate(self.A1, initial_estimate(self.A2, y))

    def norm_AtA(self, x: Tensor) -> Tensor:
        """Power iteration on the product (the product of the parts' L is only an upper bound): one L
        per sample when both parts are ours (they act per sample), else one for the batch."""
        ours = isinstance(self.A1, LinearOperator) and isinstance(self.A2, LinearOperator)
        return power_iteration(self, x, per_sample=ours)

    def image_shape(self, y_shape) -> torch.Size:
        middle = _part_image_shape(self.A2, y_shape)
        return _part_image_shape(self.A1, middle)


def _part_image_shape(op, y_shape) -> torch.Size:
    """image_shape of a Compose part; a duck-typed part is asked with one zero measurement."""
    shape_of = getattr(op, "image_shape", None)
    if callable(shape_of):
        return torch.Size(shape_of(y_shape))
    with torch.no_grad():
        return torch.Size((y_shape[0], *op.A_adjoint(torch.zeros(1, *y_shape[1:])).shape[1:]))
