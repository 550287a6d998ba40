"""DGUNet and DGUNet+ for deblurring, deraining and denoising.

Each of the 7 stages is one step of proximal gradient descent:
  gradient step (FGDM):  v = x - r * phi^T(phi(x) - y)        phi, phi^T learned ResBlocks
  proximal step (IPMM):  x = SAM(U-Net(merge(feat(v), previous SAM features)))
The last stage replaces the U-Net by a conv head and adds the degraded input back.

The gradient step has three modes (`gradient=`), see `dgunet.models.gradient`:
"learned" (published), "known" (x - r A^T(Ax - y) with the operator passed to forward) and
"known+learned" (the known gradient through a learned preconditioner). Every mode has the same
parameters and state-dict keys, so a published checkpoint initialises any of them.

DGUNet shares one stage (`basic`) across stages 2..6; DGUNet+ gives every stage its own
weights. Attribute names are the published checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dgunet.models.blocks import SAM, Decoder, Encoder, MergeBlock, ResBlock, conv, shallow_feat
from dgunet.models.gradient import GRADIENTS, Observation, gradient_step, observe

NUM_STAGES = 7


@dataclass
class Carry:
    """What one stage hands to the next: SAM features and the U-Net's encoder/decoder maps."""

    feats: Tensor
    enc: list[Tensor]
    dec: list[Tensor]


def step_size() -> nn.Parameter:
    """A learned gradient step size r, initialised to 0.5 as published."""
    return nn.Parameter(torch.tensor([0.5]))


def proximal_step(v: Tensor, carry: Carry | None, shallow: nn.Module, merge: nn.Module | None,
                  encoder: Encoder, decoder: Decoder, sam: nn.Module) -> tuple[Tensor, Carry]:
    """IPMM: features of v, fused with the previous stage, through the U-Net and SAM."""
    feats = shallow(v)
    if carry is None:
        skips, bottom = encoder(feats)
    else:
        feats = merge(feats, carry.feats)
        skips, bottom = encoder(feats, carry.enc, carry.dec)
    dec = decoder(bottom, skips)
    sam_feats, img = sam(dec[-1], v)
    return img, Carry(sam_feats, skips, dec)


class _ImageUnfolding(nn.Module):
    """Common constructor arguments and helpers of the two image variants."""

    size_multiple = 8  # three 2x downsamplings
    min_size = 16  # the 1/8 bottom must keep 2+ pixels: instance norm needs more than one

    def __init__(self, in_c: int, out_c: int, n_feat: int, scale_unetfeats: int,
                 scale_orsnetfeats: int, kernel_size: int, reduction: int, bias: bool,
                 gradient: str = "learned"):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient={gradient!r}; choose one of {', '.join(GRADIENTS)}")
        self.gradient = gradient
        self.in_c, self.out_c = in_c, out_c
        self.n_feat, self.scale_unetfeats, self.scale_orsnetfeats = n_feat, scale_unetfeats, scale_orsnetfeats
        self._kernel_size, self._reduction, self._bias = kernel_size, reduction, bias

    def _shallow(self, act: nn.Module) -> nn.Sequential:
        return shallow_feat(self.in_c, self.n_feat, self._kernel_size, self._reduction, self._bias, act)

    def _sam(self) -> SAM:
        return SAM(self.n_feat, self.out_c, kernel_size=1, bias=self._bias)

    def step_sizes(self) -> list[float]:
        """The 7 learned gradient step sizes r_k, stage 1 first."""
        raise NotImplementedError

    def observe(self, y: Tensor, physics=None) -> Observation:
        """y and the operator, checked, with the image-space start x0 (B,out_c,H,W)."""
        return observe(y, physics, self.gradient, self.min_size, self.size_multiple)


class SharedStage(nn.Module):
    """Stages 2..6 of DGUNet: one set of weights applied five times (published `basic`)."""

    def __init__(self, owner: _ImageUnfolding, resblock_act: nn.Module):
        super().__init__()
        n = owner.n_feat
        self.r1 = step_size()
        self.phi_1 = ResBlock(resblock_act)
        self.phit_1 = ResBlock(resblock_act)
        self.shallow_feat2 = owner._shallow(nn.PReLU())  # this block's own PReLU
        self.stage2_encoder = Encoder(n, owner.scale_unetfeats, csff="gated")
        self.stage2_decoder = Decoder(n, owner.scale_unetfeats)
        self.sam23 = owner._sam()
        self.concat12 = conv(2 * n, n, owner._kernel_size, owner._bias)  # published but never used
        self.merge12 = MergeBlock(n, 3, bias=True)

    def forward(self, x: Tensor, obs: Observation, carry: Carry) -> tuple[Tensor, Carry]:
        v = gradient_step(x, obs, self.r1, self.phi_1, self.phit_1)
        return proximal_step(v, carry, self.shallow_feat2, self.merge12, self.stage2_encoder,
                             self.stage2_decoder, self.sam23)


class DGUNet(_ImageUnfolding):
    """DGUNet: stage 1, the shared stage five times, stage 7.

    forward(y, physics=None) -> list of 7 (B,out_c,H,W), final first. Without an operator y is
    the degraded image (B,in_c,H,W), H and W multiples of 8; with one, y is its measurement.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, gradient: str = "learned"):
        super().__init__(in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size,
                         reduction, bias, gradient)
        n, s, o = n_feat, scale_unetfeats, scale_orsnetfeats
        resblock_act = nn.PReLU()  # one PReLU for every phi/phi^T (published quirk)
        act = nn.PReLU()  # one PReLU for this module's own CABs
        self.r0 = step_size()
        self.r6 = step_size()
        self.basic = SharedStage(self, resblock_act)
        self.shallow_feat1 = self._shallow(act)
        self.shallow_feat7 = self._shallow(act)
        self.stage1_encoder = Encoder(n, s, csff=None)
        self.stage1_decoder = Decoder(n, s)
        self.sam12 = self._sam()
        self.phi_0 = ResBlock(resblock_act)
        self.phit_0 = ResBlock(resblock_act)
        self.phi_6 = ResBlock(resblock_act)
        self.phit_6 = ResBlock(resblock_act)
        self.concat67 = conv(2 * n, n + o, kernel_size, bias)
        self.tail = conv(n + o, out_c, kernel_size, bias)

    def forward(self, y: Tensor, physics=None) -> list[Tensor]:
        obs = self.observe(y, physics)
        v = gradient_step(obs.x0, obs, self.r0, self.phi_0, self.phit_0)
        x, carry = proximal_step(v, None, self.shallow_feat1, None, self.stage1_encoder,
                                 self.stage1_decoder, self.sam12)
        estimates = [x]
        for _ in range(NUM_STAGES - 2):
            x, carry = self.basic(x, obs, carry)
            estimates.append(x)
        v = gradient_step(x, obs, self.r6, self.phi_6, self.phit_6)
        feats = torch.cat([self.shallow_feat7(v), carry.feats], dim=1)
        final = self.tail(self.concat67(feats)) + obs.x0
        return [final, *reversed(estimates)]

    def step_sizes(self) -> list[float]:
        return [self.r0.item()] + [self.basic.r1.item()] * 5 + [self.r6.item()]


class DGUNetPlus(_ImageUnfolding):
    """DGUNet+: the same unfolding with separate weights in every stage.

    forward(y, physics=None) -> list of 7 (B,out_c,H,W), final first. Without an operator y is
    the degraded image (B,in_c,H,W), H and W multiples of 8; with one, y is its measurement.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 80, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, gradient: str = "learned"):
        super().__init__(in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size,
                         reduction, bias, gradient)
        n, s = n_feat, scale_unetfeats
        resblock_act = nn.PReLU()
        act = nn.PReLU()
        # Registration order below reproduces the published state-dict key order.
        for k in range(NUM_STAGES):
            setattr(self, f"r{k}", step_size())
        for k in range(1, NUM_STAGES + 1):
            setattr(self, f"shallow_feat{k}", self._shallow(act))
        for k in range(NUM_STAGES):
            setattr(self, f"phi_{k}", ResBlock(resblock_act))
            setattr(self, f"phit_{k}", ResBlock(resblock_act))
        for k in range(1, NUM_STAGES):
            setattr(self, f"stage{k}_encoder", Encoder(n, s, csff=None if k == 1 else "gated"))
            setattr(self, f"stage{k}_decoder", Decoder(n, s))
        for k in range(1, NUM_STAGES):
            setattr(self, f"sam{k}{k + 1}", self._sam())
            setattr(self, f"merge{k}{k + 1}", MergeBlock(n, 3, bias=True))
        self.tail = conv(n, out_c, kernel_size, bias)

    def forward(self, y: Tensor, physics=None) -> list[Tensor]:
        obs = self.observe(y, physics)
        x, carry, estimates = obs.x0, None, []
        for k in range(1, NUM_STAGES):
            v = gradient_step(x, obs, getattr(self, f"r{k - 1}"), getattr(self, f"phi_{k - 1}"),
                              getattr(self, f"phit_{k - 1}"))
            merge = getattr(self, f"merge{k - 1}{k}") if k > 1 else None
            x, carry = proximal_step(v, carry, getattr(self, f"shallow_feat{k}"), merge,
                                     getattr(self, f"stage{k}_encoder"),
                                     getattr(self, f"stage{k}_decoder"), getattr(self, f"sam{k}{k + 1}"))
            estimates.append(x)
        v = gradient_step(x, obs, self.r6, self.phi_6, self.phit_6)
        final = self.tail(self.merge67(self.shallow_feat7(v), carry.feats)) + obs.x0
        return [final, *reversed(estimates)]

    def step_sizes(self) -> list[float]:
        return [getattr(self, f"r{k}").item() for k in range(NUM_STAGES)]
