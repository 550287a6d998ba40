"""Building blocks shared by every DGUNet variant.

Module and attribute names follow the published checkpoints exactly (`conv_du`, `csff_enc`,
`skip_conv`, ...): renaming any of them would break `load_state_dict(strict=True)`.
Registration order inside each module also follows the published one, so that our
`state_dict()` lists keys in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    """'same'-padded convolution (padding = kernel_size // 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias, stride=stride)


class ResBlock(nn.Module):
    """A learned degradation operator (phi) or its transpose (phi^T): `x + body(x)`.

    Always 3 channels wide, even in the grayscale CS model (where it is never called).
    `act` is passed in because the published model shares one PReLU across all ResBlocks.
    """

    def __init__(self, act: nn.Module, channels: int = 3, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1, bias=True),
            act,
            nn.Conv2d(hidden, channels, 3, padding=1, bias=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class CALayer(nn.Module):
    """Channel attention: rescale channels by a squeeze-excite gate."""

    def __init__(self, channels: int, reduction: int = 4, bias: bool = False):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(self.avg_pool(x))


class CAB(nn.Module):
    """Channel attention block: `x + CA(conv(act(conv(x))))`."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module):
        super().__init__()
        self.CA = CALayer(channels, reduction, bias)
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size, bias), act, conv(channels, channels, kernel_size, bias)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.CA(self.body(x)) + x


def shallow_feat(in_c: int, n_feat: int, kernel_size: int, reduction: int, bias: bool,
                 act: nn.Module) -> nn.Sequential:
    """Image -> features: conv then one CAB. Keys `0.weight`, `1.CA...`, `1.body...`."""
    return nn.Sequential(conv(in_c, n_feat, kernel_size, bias), CAB(n_feat, kernel_size, reduction, bias, act))


class SAM(nn.Module):
    """Supervised attention module of the image tasks.

    forward(feat (B,n,H,W), x_img (B,C,H,W)) -> (feat' (B,n,H,W), img (B,C,H,W))
    """

    def __init__(self, n_feat: int, out_c: int = 3, kernel_size: int = 1, bias: bool = False):
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias)
        self.conv2 = conv(n_feat, out_c, kernel_size, bias)

    def forward(self, feat: Tensor, x_img: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv1(feat) + feat, self.conv2(feat) + x_img


class GatedSAM(SAM):
    """SAM of the CS model: the new image also gates the features (`conv3`)."""

    def __init__(self, n_feat: int, out_c: int = 1, kernel_size: int = 1, bias: bool = False):
        super().__init__(n_feat, out_c, kernel_size, bias)
        self.conv3 = conv(out_c, n_feat, kernel_size, bias)

    def forward(self, feat: Tensor, x_img: Tensor) -> tuple[Tensor, Tensor]:
        img = self.conv2(feat) + x_img
        gate = torch.sigmoid(self.conv3(img))
        return self.conv1(feat) * gate + feat, img


def subspace_projection(basis: Tensor, feats: Tensor) -> Tensor:
    """Project `feats` on the span of the 16 learned basis maps, the published way.

    basis: (B,K,H,W) with K = 16; feats: (B,n,H,W). Returns (B,n,H,W).
    Rows of V (B,K,HW) are L1-normalised, then `V^T (V V^T)^-1 V f` per channel.
    This forms the explicit inverse as the published code does; `dgunet.models.fast`
    holds a solve-based equivalent.
    """
    b, k, h, w = basis.shape
    v = basis.reshape(b, k, h * w)
    v = v / (1e-6 + v.abs().sum(dim=2, keepdim=True))
    gram_inv = torch.inverse(v @ v.transpose(1, 2))  # (B,K,K)
    proj = gram_inv @ v  # (B,K,HW)
    coeff = proj @ feats.reshape(b, feats.shape[1], h * w).transpose(1, 2)  # (B,K,n)
    out = v.transpose(1, 2) @ coeff  # (B,HW,n)
    return out.transpose(1, 2).reshape(feats.shape)


class MergeBlock(nn.Module):
    """Full-scale inter-stage pathway: fuse the previous stage's SAM features `b` into `x`.

    forward(x (B,n,H,W), b (B,n,H,W)) -> (B,n,H,W)
    """

    projection = staticmethod(subspace_projection)

    def __init__(self, n_feat: int, kernel_size: int = 3, bias: bool = True, subspace_dim: int = 16):
        super().__init__()
        self.conv_block = conv(2 * n_feat, n_feat, kernel_size, bias)
        self.subnet = conv(2 * n_feat, subspace_dim, kernel_size, bias)

    def forward(self, x: Tensor, bridge: Tensor) -> Tensor:
        basis = self.subnet(torch.cat([x, bridge], dim=1))
        projected = self.projection(basis, bridge)
        return self.conv_block(torch.cat([x, projected], dim=1)) + x


class UNetConvBlock(nn.Module):
    """Two 3x3 convs with a 1x1 identity path, optional half-instance norm, cross-stage
    feature fusion (CSFF) and a strided downsampling conv.

    csff: None, "gated" (image tasks: sigmoid(phi(k)) gate plus gamma(k) shift) or
    "additive" (CS: plain sum of the projected previous-stage features).
    forward(x, enc=None, dec=None) -> (down, h) when downsampling else h.
    """

    def __init__(self, in_size: int, out_size: int, downsample: bool = False, relu_slope: float = 0.2,
                 csff: str | None = None, use_hin: bool = False):
        super().__init__()
        self.identity = nn.Conv2d(in_size, out_size, 1)
        self.conv_1 = nn.Conv2d(in_size, out_size, 3, padding=1)
        self.relu_1 = nn.LeakyReLU(relu_slope)
        self.conv_2 = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.relu_2 = nn.LeakyReLU(relu_slope)
        self.csff = csff
        if csff is not None:
            self.csff_enc = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.csff_dec = nn.Conv2d(in_size, out_size, 3, padding=1)
        if csff == "gated":
            self.phi = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.gamma = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.use_hin = use_hin
        if use_hin:
            self.norm = nn.InstanceNorm2d(out_size // 2, affine=True)
        self.downsample = nn.Conv2d(out_size, out_size, 4, 2, 1, bias=False) if downsample else None

    def forward(self, x: Tensor, enc: Tensor | None = None, dec: Tensor | None = None):
        h = self.conv_1(x)
        if self.use_hin:
            # Half-instance norm: normalise the first half of the channels only.
            first, second = torch.chunk(h, 2, dim=1)
            h = torch.cat([self.norm(first), second], dim=1)
        h = self.relu_1(h)
        h = self.relu_2(self.conv_2(h)) + self.identity(x)
        if enc is not None and dec is not None:
            h = self._fuse(h, enc, dec)
        if self.downsample is None:
            return h
        return self.downsample(h), h

    def _fuse(self, h: Tensor, enc: Tensor, dec: Tensor) -> Tensor:
        if self.csff == "gated":
            k = F.leaky_relu(self.csff_enc(enc) + self.csff_dec(dec), 0.1)
            return h * torch.sigmoid(self.phi(k)) + self.gamma(k) + h
        return h + self.csff_enc(enc) + self.csff_dec(dec)


class UNetUpBlock(nn.Module):
    """Transposed-conv upsampling, concatenation with the skip, then a UNetConvBlock."""

    def __init__(self, in_size: int, out_size: int, relu_slope: float = 0.2):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2, bias=True)
        self.conv_block = UNetConvBlock(2 * out_size, out_size, False, relu_slope)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv_block(torch.cat([self.up(x), skip], dim=1))


class Encoder(nn.Module):
    """Four-level U-Net encoder; level i has n + s*(i+1) channels (the bottom repeats n+3s).

    forward(x (B,n,H,W), enc=None, dec=None) -> (skips, bottom): skips are the three
    full-resolution outputs of levels 0..2, bottom is (B,n+3s,H/8,W/8). With the previous
    stage's `enc` (its skips) and `dec` (its decoder outputs), level i fuses enc[i], dec[-i-1].
    """

    def __init__(self, n_feat: int, scale: int, csff: str | None = None, depth: int = 4):
        super().__init__()
        widths = [n_feat + scale * i for i in range(depth)]  # input width of each level
        blocks = []
        for i in range(depth):
            down = i + 1 < depth
            out = widths[i + 1] if down else widths[i]
            # Only downsampling levels carry cross-stage fusion; the bottom never does.
            blocks.append(UNetConvBlock(widths[i], out, down, 0.2, csff if down else None, use_hin=True))
        self.body = nn.ModuleList(blocks)

    def forward(self, x: Tensor, enc: list[Tensor] | None = None, dec: list[Tensor] | None = None):
        skips = []
        for i, block in enumerate(self.body):
            if block.downsample is None:
                x = block(x)
                continue
            if enc is not None and dec is not None:
                x, h = block(x, enc[i], dec[-i - 1])
            else:
                x, h = block(x)
            skips.append(h)
        return skips, x


class Decoder(nn.Module):
    """U-Net decoder: forward(bottom, skips) -> outputs at 1/4, 1/2 and full resolution,
    with n+2s, n+s and n channels."""

    def __init__(self, n_feat: int, scale: int, depth: int = 4):
        super().__init__()
        ups = []
        skip_convs = []
        for i in range(depth - 1):
            wide, narrow = n_feat + scale * (depth - 1 - i), n_feat + scale * (depth - 2 - i)
            ups.append(UNetUpBlock(wide, narrow, 0.2))
            skip_convs.append(nn.Conv2d(wide, narrow, 3, padding=1))
        self.body = nn.ModuleList(ups)
        self.skip_conv = nn.ModuleList(skip_convs)

    def forward(self, x: Tensor, skips: list[Tensor]) -> list[Tensor]:
        outs = []
        for i, (up, skip_conv) in enumerate(zip(self.body, self.skip_conv, strict=True)):
            x = up(x, skip_conv(skips[-i - 1]))
            outs.append(x)
        return outs
