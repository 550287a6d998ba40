"""Additive white Gaussian noise, one sigma for the batch or one per sample."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError


class GaussianNoise(nn.Module):
    """y -> y + sigma * n, n ~ N(0, 1) i.i.d.; sigma a float or a (B,) tensor (one per sample).

    Sigma is in the units of y (images in [0,1]: sigma 25/255 for the usual "sigma 25").
    `generator` (optional torch.Generator on y's device) makes the noise reproducible.
    validate: check the values (finite, >= 0) at construction. Reading them is a host sync when sigma
    is on a GPU; the training engine, which builds one noise model per batch from sigmas it drew itself,
    passes validate=False. The shape (0-d or (B,)) is always checked.
    """

    def __init__(self, sigma: float | Tensor = 0.0, generator: torch.Generator | None = None,
                 validate: bool = True):
        super().__init__()
        sigma = torch.as_tensor(sigma, dtype=torch.float32).detach().clone()
        if sigma.dim() > 1 or (validate and not bool(((sigma >= 0) & torch.isfinite(sigma)).all())):
            raise PhysicsError(f"GaussianNoise: sigma {sigma.tolist()} must be a float >= 0 or a (B,) tensor "
                               f"of them")
        self.register_buffer("sigma", sigma)
        self.generator = generator
        # A 0-d sigma of 0 adds nothing: decided here from a CPU value, never per call on a GPU.
        self._noiseless = sigma.dim() == 0 and sigma.device.type == "cpu" and float(sigma) == 0.0

    def forward(self, y: Tensor) -> Tensor:
        """y (B,...) -> y + noise, same shape."""
        if self.sigma.dim() == 0:
            if self._noiseless:
                return y
            sigma = self.sigma.to(y)
        else:
            if self.sigma.numel() != y.shape[0]:
                raise PhysicsError(f"GaussianNoise: {self.sigma.numel()} sigmas for a batch of {y.shape[0]}; "
                                   f"give one sigma per sample or a single float")
            sigma = self.sigma.to(y).reshape(-1, *([1] * (y.dim() - 1)))
        noise = torch.randn(y.shape, generator=self.generator, device=y.device, dtype=y.dtype)
        return y + sigma * noise
