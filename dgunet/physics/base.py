"""The operator contract, the base class of our operators, `Identity` and `Compose`.

Duck-typed contract (all the models need; deepinv's physics objects satisfy it):
  op.A(x)          image x (B,C,H,W) -> measurement y (any shape)
  op.A_adjoint(y)  measurement y -> image (B,C,H,W), the exact adjoint of A
  op.A_dagger(y)   optional: measurement -> image-space initial estimate (else A_adjoint is used)
"""

from __future__ import annotations

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
