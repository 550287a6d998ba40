"""Inpainting: y = mask * x (pixel-wise; 0 = missing, 1 = kept)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dgunet.errors import PhysicsError
from dgunet.physics.base import LinearOperator, check_image, shape_text


class Inpainting(LinearOperator):
    """x (B,C,H,W) -> y (B,C,H,W) = mask * x; mask broadcastable to x: (H,W), (1,1,H,W), (B,1,H,W) one
    per sample, (B,C,H,W), ... The operator is diagonal, so A_adjoint = A and A_dagger(y) = mask * y.
    Any real mask works (a soft mask is still self-adjoint); 0/1 is the usual one.
    """

    def __init__(self, mask: Tensor, noise_model: nn.Module | None = None):
        super().__init__(noise_model)
        mask = torch.as_tensor(mask)
        if mask.dim() < 2 or mask.dim() > 4:
            raise PhysicsError(f"Inpainting: mask is {shape_text(mask.shape)}; give (H,W), (1,1,H,W), "
                               f"(B,1,H,W) or (B,C,H,W)")
        self.register_buffer("mask", mask if mask.is_floating_point() else mask.float())

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
