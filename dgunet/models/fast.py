"""Faster inference paths that compute the same function as the published model.

1. Merge projection.
The published merge (`blocks.subspace_projection`) forms the explicit inverse of the 16x16
Gram matrix, multiplies it into the (B,16,HW) basis (a full-resolution intermediate), and
ends with a (B,HW,n) product that must be transposed and copied back to (B,n,HW).

Here the same projection `V^T (V V^T)^-1 V f` is evaluated right to left:
  rhs   = V f^T             (B,16,n)   one pass over the full-resolution maps
  coeff = solve(G, rhs)     (B,16,n)   a 16x16 solve with G = V V^T, no inverse
  out   = coeff^T V         (B,n,HW)   already in the layout of `feats`, no copy
so no (B,16,HW) or (B,HW,n) temporary besides V itself. The small products and the solve
always run in float32 (also under autocast): the Gram matrix of L1-normalised rows has
entries around 1/HW, far too fine for bfloat16 or float16.

2. Convolutions. 3x3 ones are 92% of the model's multiply-adds. On CPU, NNPACK's Winograd
kernels compute them 2-2.5x faster than oneDNN's direct ones for float32 NCHW inputs, and
1x1 ones are faster as one matrix product. Winograd rounds differently (about 1e-5
relative), so whole-model outputs stay within 1e-4. `use_fast_convs` swaps the class of
eligible `nn.Conv2d` modules (state dicts unchanged); any call these kernels cannot serve
(GPU, autocast, channels_last, gradients) takes the usual path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from dgunet.models.blocks import MergeBlock, subspace_projection


def fast_subspace_projection(basis: Tensor, feats: Tensor) -> Tensor:
    """Same as `blocks.subspace_projection`, solve-based and without large temporaries.

    basis: (B,K,H,W); feats: (B,n,H,W). Returns (B,n,H,W) in feats' dtype.
    """
    b, k, h, w = basis.shape
    n = feats.shape[1]
    out_dtype = feats.dtype
    device_type = basis.device.type
    # Autocast would run these products in half precision; the Gram solve needs float32.
    with torch.autocast(device_type, enabled=False):
        v = basis.float().reshape(b, k, h * w)
        v = v / (1e-6 + v.abs().sum(dim=2, keepdim=True))
        f = feats.float().reshape(b, n, h * w)
        gram = v @ v.transpose(1, 2)  # (B,K,K)
        rhs = v @ f.transpose(1, 2)  # (B,K,n)
        # LU solve, not Cholesky: no data-dependent branch (no GPU sync, no compile graph
        # break), and a 16x16 factorisation costs nothing next to the products.
        coeff = torch.linalg.solve(gram, rhs)  # (B,K,n)
        out = coeff.transpose(1, 2) @ v  # (B,n,HW)
    return out.reshape(b, n, h, w).to(out_dtype)


def merge_blocks(model: nn.Module) -> list[MergeBlock]:
    """Every MergeBlock inside `model` (DGUNet: 1 shared; DGUNet+: 6; CS models: none)."""
    return [m for m in model.modules() if isinstance(m, MergeBlock)]


def set_fast_merge(model: nn.Module, enabled: bool = True) -> list[MergeBlock]:
    """Switch every MergeBlock of `model` to the fast projection (or back); returns them.

    Sets the instance attribute `projection`, which shadows the class's published one, so
    weights, state dicts and other models are untouched.
    """
    blocks = merge_blocks(model)
    for block in blocks:
        if enabled:
            block.projection = fast_subspace_projection
        else:
            block.__dict__.pop("projection", None)
    return blocks


def is_fast_merge(model: nn.Module) -> bool:
    """True when every MergeBlock of `model` uses the fast projection (and there is one)."""
    blocks = merge_blocks(model)
    return bool(blocks) and all(b.projection is fast_subspace_projection for b in blocks)


@contextlib.contextmanager
def use_fast_merge(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager: the model's merges use the fast projection inside the block.

    >>> with use_fast_merge(model):
    ...     out = model(x)

    Each block's previous setting is restored on exit. Calling `set_fast_merge` instead
    switches permanently.
    """
    blocks = merge_blocks(model)
    previous = [b.__dict__.get("projection") for b in blocks]
    set_fast_merge(model, enabled)
    try:
        yield model
    finally:
        for block, prev in zip(blocks, previous, strict=True):
            if prev is None:
                block.__dict__.pop("projection", None)
            else:
                block.projection = prev


class FastConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose CPU float32 inference runs through faster kernels.

    3x3 (stride 1, padding 1): NNPACK's Winograd convolution, one image at a time (its batched
    entry point uses slower kernels). 1x1: a plain matrix product, about 1.5-2x faster than
    oneDNN's 1x1 convolution on full-resolution maps. Any other call takes the usual path.
    """

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _cpu_fp32_inference(x, weight):
            return super()._conv_forward(x, weight, bias)
        if self.kernel_size == (1, 1):
            return _pointwise(x, weight, bias)
        if torch._nnpack_available():
            w = weight.contiguous()
            outs = [torch._nnpack_spatial_convolution(x[i:i + 1], w, bias, [1, 1], [1, 1])
                    for i in range(x.shape[0])]
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        return super()._conv_forward(x, weight, bias)


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """1x1 convolution as (B,out,in) @ (B,in,HW) (+ bias); x (B,in,H,W) -> (B,out,H,W)."""
    b, c, h, w = x.shape
    mat = weight.reshape(weight.shape[0], c).expand(b, -1, -1)
    flat = x.reshape(b, c, h * w)
    out = torch.bmm(mat, flat) if bias is None else torch.baddbmm(bias[None, :, None], mat, flat)
    return out.reshape(b, -1, h, w)


def _cpu_fp32_inference(x: Tensor, weight: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.is_contiguous() and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def _fast_conv_eligible(conv: nn.Module) -> bool:
    if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1):
        return False
    if conv.kernel_size == (1, 1):
        return conv.padding == (0, 0)
    return conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.padding_mode == "zeros"


def set_fast_convs(model: nn.Module, enabled: bool = True) -> int:
    """Swap every plain 3x3 and 1x1 `nn.Conv2d` of `model` to `FastConv2d` (or back); returns how many."""
    count = 0
    for module in model.modules():
        if enabled and _fast_conv_eligible(module):
            module.__class__ = FastConv2d
            count += 1
        elif not enabled and type(module) is FastConv2d:
            module.__class__ = nn.Conv2d
            count += 1
    return count


@contextlib.contextmanager
def use_fast_convs(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager around `set_fast_convs`; the previous classes come back on exit."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    previous = [type(m) for m in convs]
    set_fast_convs(model, enabled)
    try:
        yield model
    finally:
        for conv, cls in zip(convs, previous, strict=True):
            conv.__class__ = cls


@contextlib.contextmanager
def use_fast(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Both output-preserving speedups: the fast merge and the fast CPU convolutions."""
    with use_fast_merge(model, enabled), use_fast_convs(model, enabled):
        yield model


__all__ = ["FastConv2d", "fast_subspace_projection", "is_fast_merge", "merge_blocks", "set_fast_convs",
           "set_fast_merge", "subspace_projection", "use_fast", "use_fast_convs", "use_fast_merge"]
