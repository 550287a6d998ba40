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

2. Convolutions. 3x3 ones are 92% of the model's multiply-adds. On an AVX2 CPU, NNPACK's
Winograd kernels compute them 2-2.5x faster than oneDNN's direct ones for float32 NCHW
inputs, and 1x1 ones are faster as one matrix product. Which kernel wins depends on the CPU
(oneDNN's AVX-512 kernels are twice as wide; NNPACK's are AVX2), so by default each conv
shape is timed once per process, on its first call, and keeps the faster kernel (oneDNN on a
tie), like cuDNN's benchmark mode; `set_kernel_policy` can force either side. Winograd rounds
differently (about 1e-5 relative), so whole-model outputs stay within 1e-4 whichever kernels
win. `use_fast_convs` swaps the class of eligible `nn.Conv2d` modules (state dicts
unchanged); any call these kernels cannot serve (GPU, autocast, channels_last, gradients)
takes the usual path.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

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
        # LU solve, not Cholesky: no data-dependent branch (no compile graph break), and a
        # 16x16 factorisation costs nothing next to the products. solve_ex without
        # check_errors: `solve` reads the LU info back to the host to raise on a singular G,
        # a GPU sync on every merge. A singular G gives non-finite outputs instead, which the
        # trainer's non-finite-loss check skips (a step with nothing stepped).
        coeff = torch.linalg.solve_ex(gram, rhs, check_errors=False).result  # (B,K,n)
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
    """An `nn.Conv2d` whose CPU float32 inference may run through faster kernels.

    3x3 (stride 1, padding 1): NNPACK's Winograd convolution, one image at a time (its batched
    entry point uses slower kernels). 1x1: a plain matrix product. Each is used only where it
    beat oneDNN on this machine (see `set_kernel_policy`); any other call takes the usual path.
    """

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _cpu_fp32_inference(x, weight):
            return super()._conv_forward(x, weight, bias)
        kind = "gemm-1x1" if self.kernel_size == (1, 1) else "winograd-3x3"
        if kind == "winograd-3x3" and not torch._nnpack_available():
            return super()._conv_forward(x, weight, bias)
        fast = _KERNELS[kind]
        if _use_fast_kernel(kind, x, weight, bias, fast, super()._conv_forward):
            return fast(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


def _winograd(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """3x3 'same' convolution through NNPACK, one image at a time."""
    w = weight.contiguous()
    outs = [torch._nnpack_spatial_convolution(x[i:i + 1], w, bias, [1, 1], [1, 1]) for i in range(x.shape[0])]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """1x1 convolution as (B,out,in) @ (B,in,HW) (+ bias); x (B,in,H,W) -> (B,out,H,W)."""
    b, c, h, w = x.shape
    mat = weight.reshape(weight.shape[0], c).expand(b, -1, -1)
    flat = x.reshape(b, c, h * w)
    out = torch.bmm(mat, flat) if bias is None else torch.baddbmm(bias[None, :, None], mat, flat)
    return out.reshape(b, -1, h, w)


_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "winograd-3x3": _winograd, "gemm-1x1": _pointwise}


# ---------------------------------------------------------------- measured kernel choice

_POLICIES = ("auto", "fast", "default")
_policy = "auto"
# (kind, in_c, out_c, has_bias, threads, size class) -> True when the fast kernel won.
# Size class: bit length of the sample's pixel count, so that a test set of many slightly
# different sizes is timed a handful of times, not once per image.
_choices: dict[tuple, bool] = {}
# Timing sample: one image, cropped to at most 256x256. The winner depends on the map size
# (cache effects flip some shapes between 128 and 256 px), but not beyond 256.
_TUNE_SIDE = 256
_TUNE_RUNS = 2
_MARGIN = 0.95  # the fast kernel must be at least 5% faster, or oneDNN (the default) stays


def set_kernel_policy(policy: str) -> str:
    """How FastConv2d picks kernels; returns the previous policy.

    "auto" (default): time the fast kernel against oneDNN once per conv shape, map size class
    (pixel count to a power of two, capped at 256x256) and thread count, and keep the faster.
    The first forward at a new size pays for the timing (about two forwards' worth).
    "fast": always the fast kernel (NNPACK Winograd for 3x3, GEMM for 1x1).
    "default": always oneDNN (the fast merge alone).
    """
    global _policy
    if policy not in _POLICIES:
        raise ValueError(f"kernel policy {policy!r}; choose one of {', '.join(_POLICIES)}")
    previous, _policy = _policy, policy
    return previous


def kernel_choices() -> dict[str, tuple[int, int]]:
    """What "auto" chose so far: {kind: (shapes using the fast kernel, shapes measured)}."""
    summary: dict[str, tuple[int, int]] = {}
    for (kind, *_), fast in _choices.items():
        won, total = summary.get(kind, (0, 0))
        summary[kind] = (won + fast, total + 1)
    return summary


def _use_fast_kernel(kind: str, x: Tensor, weight: Tensor, bias: Tensor | None,
                     fast: Callable, default: Callable) -> bool:
    if _policy != "auto":
        return _policy == "fast"
    sample = x[:1, :, :_TUNE_SIDE, :_TUNE_SIDE]
    size_class = (sample.shape[-2] * sample.shape[-1]).bit_length()
    key = (kind, weight.shape[1], weight.shape[0], bias is not None, torch.get_num_threads(), size_class)
    if key not in _choices:
        sample = sample.contiguous()
        t_fast, t_default = _time_pair(lambda: fast(sample, weight, bias),
                                       lambda: default(sample, weight, bias))
        _choices[key] = t_fast < _MARGIN * t_default
    return _choices[key]


def _time_pair(a: Callable[[], Tensor], b: Callable[[], Tensor]) -> tuple[float, float]:
    """Best of a few interleaved runs of each (after one warm-up), in seconds."""
    best = [float("inf"), float("inf")]
    for run in range(_TUNE_RUNS + 1):
        for i, fn in enumerate((a, b)):
            start = time.perf_counter()
            fn()
            if run:  # run 0 warms up caches and oneDNN's primitive cache
                best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


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


__all__ = ["FastConv2d", "fast_subspace_projection", "is_fast_merge", "kernel_choices", "merge_blocks",
           "set_fast_convs", "set_fast_merge", "set_kernel_policy", "subspace_projection", "use_fast",
           "use_fast_convs", "use_fast_merge"]
