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

2. 3x3 convolutions. They are 92% of the model's multiply-adds. On CPU, NNPACK's Winograd
kernels compute them 2-2.5x faster than oneDNN's direct ones for float32 NCHW inputs;
Winograd rounds differently (about 1e-5 relative), so whole-model outputs stay within 1e-4.
`use_fast_convs` swaps the class of eligible `nn.Conv2d` modules (state dicts unchanged);
any call NNPACK cannot serve (GPU, autocast, channels_last, gradients) takes the usual path.
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


class WinogradConv2d(nn.Conv2d):
    """An `nn.Conv2d` (3x3, stride 1, padding 1) that runs inference through NNPACK on CPU."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _nnpack_can_run(x, weight):
            return super()._conv_forward(x, weight, bias)
        # NNPACK's batched entry point uses slower kernels than its single-image one.
        outs = [torch._nnpack_spatial_convolution(x[i:i + 1], weight.contiguous(), bias, [1, 1], [1, 1])
                for i in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def _nnpack_can_run(x: Tensor, weight: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.is_contiguous() and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and torch._nnpack_available())


def _winograd_eligible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def set_fast_convs(model: nn.Module, enabled: bool = True) -> int:
    """Swap every plain 3x3 `nn.Conv2d` of `model` to `WinogradConv2d` (or back); returns how many."""
    count = 0
    for module in model.modules():
        if enabled and _winograd_eligible(module):
            module.__class__ = WinogradConv2d
            count += 1
        elif not enabled and type(module) is WinogradConv2d:
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
    """Both output-preserving speedups: the fast merge and the Winograd 3x3 convolutions."""
    with use_fast_merge(model, enabled), use_fast_convs(model, enabled):
        yield model


__all__ = ["WinogradConv2d", "fast_subspace_projection", "is_fast_merge", "merge_blocks", "set_fast_convs",
           "set_fast_merge", "subspace_projection", "use_fast", "use_fast_convs", "use_fast_merge"]
