"""Inpainting: y = mask * x (pixel-wise; 0 = missing, 1 = kept; in between: a soft mask, see below)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image, shape_text


class Inpainting(LinearOperator):
    """x (B,C,H,W) -> y (B,C,H,W) = mask * x; mask broadcastable to x: (H,W), (1,1,H,W), (B,1,H,W) one
    per sample, (B,C,H,W), ... The operator is diagonal, so A_adjoint = A and A_dagger(y) = mask * y.

    Values: 0/1 is the usual mask. A value in between is a soft mask: the fraction of the pixel's
    light that reaches the sensor (a vignette, a partly transparent occluder, an anti-aliased mask
    edge); y = m x keeps its meaning and A stays self-adjoint. Values outside [0, 1] or non-finite are
    refused (validate=True, the default; it reads the mask: a host sync when it is on a GPU).
    L = ||A^T A|| = max m^2 per sample (`norm_AtA`): 1 for any mask that keeps a pixel.
    """

    def __init__(self, mask: Tensor, noise_model: nn.Module | None = None, validate: bool = True):
        super().__init__(noise_model)
        mask = torch.as_tensor(mask)
        if mask.dim() < 2 or mask.dim() > 4:
            raise PhysicsError(f"Inpainting: mask is {shape_text(mask.shape)}; give (H,W), (1,1,H,W), "
                               f"(B,1,H,W) or (B,C,H,W)")
        mask = mask if mask.is_floating_point() else mask.float()
        if validate and not bool((torch.isfinite(mask) & (mask >= 0) & (mask <= 1)).all()):
            raise PhysicsError(f"Inpainting: the mask has values outside [0, 1] (min {float(mask.min()):.3g}, "
                               f"max {float(mask.max()):.3g}); give 0 for missing and 1 for kept pixels (in "
                               f"between: the fraction of the pixel kept)")
        self.register_buffer("mask", mask)

    def _masked(self, x: Tensor, who: str) -> Tensor:
        check_image(who, x)
        try:
            shape = torch.broadcast_shapes(self.mask.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise PhysicsError(f"{who}: mask {shape_text(self.mask.shape)} does not broadcast to the image "
                               f"{shape_text(x.shape)}; give a mask of the image's H x W, e.g. (1,1,H,W) or "
                               f"(B,1,H,W)")
        return self.mask.to(x) * x

    def A(self, x: Tensor) -> Tensor:
        return self._masked(x, "Inpainting")

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._masked(y, "Inpainting.A_adjoint")

    def A_dagger(self, y: Tensor) -> Tensor:
        return self._masked(y, "Inpainting.A_dagger")

    def project(self, z: Tensor, y: Tensor) -> Tensor:
        """Kept pixels (m > 0) become y / m, the only values with m x = y; missing ones keep z."""
        mask = self.mask.to(z)
        return torch.where(mask > 0, y.to(z.dtype) / mask.clamp_min(torch.finfo(z.dtype).tiny), z)

    def norm_AtA(self, x: Tensor) -> Tensor:
        """max mask^2 per sample, (Bm,) with Bm the mask's batch (1 for an (H,W) mask)."""
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        mask = mask.reshape(*([1] * (4 - mask.dim())), *mask.shape)
        return mask.pow(2).amax(dim=(1, 2, 3))

    def image_shape(self, y_shape) -> torch.Size:
        return torch.Size(y_shape)
