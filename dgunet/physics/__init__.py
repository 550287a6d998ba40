"""Linear forward operators (the degradation A of y = A x + n) for the unfolded gradient step.

Every operator is an nn.Module with `A(x)`, `A_adjoint(y)` (exact adjoint), `A_dagger(y)` (a cheap
image-space initial estimate) and `op(x)` = noise_model(A(x)). Anything else with `A` and
`A_adjoint` (deepinv's physics, your own) works wherever these do; see docs/physics.md.
"""

from dgunet.physics.base import Compose, Identity, LinearOperator, initial_estimate
from dgunet.physics.blur import Blur
from dgunet.physics.cs import CompressedSensing
from dgunet.physics.downsample import Downsample, gaussian_prefilter
from dgunet.physics.inpainting import Inpainting
from dgunet.physics.noise import GaussianNoise

__all__ = ["Blur", "Compose", "CompressedSensing", "Downsample", "GaussianNoise", "Identity", "Inpainting",
           "LinearOperator", "gaussian_prefilter", "initial_estimate"]
