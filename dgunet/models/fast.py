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
entries around 1/HW, far too fine for bfloat16 or float16. Which projection a forward uses
(published, published in float32, or the solve) is decided by `merge_projection` alone;
training (`engine.speed.prepare_model`) and `inference.restore` both ask it.

2. Convolutions. 3x3 ones are 92% of the model's multiply-adds. On an AVX2 CPU, NNPACK's
Winograd kernels compute them 2-2.5x faster than oneDNN's direct ones for float32 NCHW
inputs, and 1x1 ones are faster as one matrix product. Which kernel wins depends on the CPU
(oneDNN's AVX-512 kernels are twice as wide; NNPACK's are AVX2), so by default each conv
shape is timed once per process, on its first call, and keeps the faster kernel (oneDNN on a
tie), like cuDNN's benchmark mode; `set_kernel_policy` can force either side. Winograd rounds
differently (about 1e-5 relative), so whole-model outputs stay within 1e-4 whichever kernels
win. `use_fast_convs` puts a `FastConv2d` sharing the parameters in place of each eligible
`nn.Conv2d` in its parent (state dicts unchanged); any call these kernels cannot serve (GPU,
autocast, channels_last, gradients, or a PyTorch without NNPACK's entry point, see
`dgunet.models.torch_private`) takes the usual path.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from dgunet.models.blocks import MergeBlock, subspace_projection
from dgunet.models.torch_private import capabilities, nnpack_conv3x3


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


Projection = Callable[[Tensor, Tensor], Tensor]  # (basis (B,K,H,W), feats (B,n,H,W)) -> (B,n,H,W)


def fp32_subspace_projection(basis: Tensor, feats: Tensor) -> Tensor:
    """The published explicit-inverse projection, computed in float32 also under autocast: the
    16x16 Gram matrix is ill-conditioned in half precision, and torch.linalg.inv has no float16
    kernel. basis: (B,K,H,W); feats: (B,n,H,W). Returns (B,n,H,W) in float32."""
    with torch.autocast(basis.device.type, enabled=False):
        return subspace_projection(basis.float(), feats.float())


def merge_projection(fast_merge: bool | None, autocast: bool) -> Projection | None:
    """The one rule for how a MergeBlock computes its projection; None: leave the model's as it is.

    fast_merge True: the solve (`fast_subspace_projection`), float32 inside in every case.
    fast_merge False (TRAIN.FAST_MERGE off): the published explicit inverse; under autocast in
        float32 (`fp32_subspace_projection`), the only way it can run there.
    fast_merge None (no preference: `restore` without `fast`): the model's own in float32; under
        autocast the solve, the same function and the cheaper of the two float32 ways.
    autocast: whether the forward runs under bf16/fp16 autocast.
    """
    if fast_merge or (fast_merge is None and autocast):
        return fast_subspace_projection
    return fp32_subspace_projection if autocast else None


def merge_blocks(model: nn.Module) -> list[MergeBlock]:
    """Every MergeBlock inside `model` (DGUNet: 1 shared; DGUNet+: 6; CS models: none)."""
    return [m for m in model.modules() if isinstance(m, MergeBlock)]


def set_merge_projection(model: nn.Module, projection: Projection) -> list[MergeBlock]:
    """Make every MergeBlock of `model` compute `projection`; returns the blocks.

    Sets the instance attribute `projection`, which shadows the class's published one (so
    weights, state dicts and other models are untouched); the published `subspace_projection`
    removes it again.
    """
    blocks = merge_blocks(model)
    for block in blocks:
        if projection is subspace_projection:
            block.__dict__.pop("projection", None)
        else:
            block.projection = projection
    return blocks


@contextlib.contextmanager
def use_merge_projection(model: nn.Module, projection: Projection | None) -> Iterator[nn.Module]:
    """Context manager: the model's merges compute `projection` inside the block (None: as they
    are); each block's previous setting comes back on exit."""
    blocks = merge_blocks(model)
    previous = [b.__dict__.get("projection") for b in blocks]
    if projection is not None:
        set_merge_projection(model, projection)
    try:
        yield model
    finally:
        for block, prev in zip(blocks, previous, strict=True):
            if prev is None:
                block.__dict__.pop("projection", None)
            else:
                block.projection = prev


def set_fast_merge(model: nn.Module, enabled: bool = True) -> list[MergeBlock]:
    """Switch every MergeBlock of `model` to the fast projection (or back to the published one)."""
    return set_merge_projection(model, fast_subspace_projection if enabled else subspace_projection)


def is_fast_merge(model: nn.Module) -> bool:
    """True when every MergeBlock of `model` uses the fast projection (and there is one)."""
    blocks = merge_blocks(model)
    return bool(blocks) and all(b.projection is fast_subspace_projection for b in blocks)


def use_fast_merge(model: nn.Module, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Context manager: the model's merges use the fast projection (or the published one) inside.

    >>> with use_fast_merge(model):
    ...     out = model(x)

    Each block's previous setting is restored on exit. Calling `set_fast_merge` instead
    switches permanently.
    """
    return use_merge_projection(model, fast_subspace_projection if enabled else subspace_projection)


class FastConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose CPU float32 inference may run through faster kernels.

    3x3 (stride 1, padding 1): NNPACK's Winograd convolution, one image at a time (its batched
    entry point uses slower kernels). 1x1: a plain matrix product. Each is used only where it
    beat oneDNN on this machine (see `set_kernel_policy`); any other call takes the usual path.
    Made from a plain conv by `from_conv` (sharing its parameters), never built by a model.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> FastConv2d:
        """A FastConv2d computing with `conv`'s own parameters (see `conv_twin`)."""
        return conv_twin(cls, conv)

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C_in,H,W) -> (B,C_out,H,W), through the fast kernel where it serves and won."""
        kernel = self._fast_kernel(x)
        return super().forward(x) if kernel is None else kernel(x, self.weight, self.bias)

    def _fast_kernel(self, x: Tensor) -> Callable[[Tensor, Tensor, Tensor | None], Tensor] | None:
        if not _cpu_fp32_inference(x, self.weight):
            return None
        kind = "gemm-1x1" if self.kernel_size == (1, 1) else "winograd-3x3"
        if kind == "winograd-3x3" and not capabilities().nnpack_winograd:
            return None
        fast = _KERNELS[kind]
        return fast if _use_fast_kernel(kind, x, self.weight, self.bias, fast, super().forward) else None


def conv_twin(cls: type[nn.Conv2d], conv: nn.Conv2d) -> nn.Conv2d:
    """A `cls` instance computing with `conv`'s own Parameter objects: same state-dict keys,
    weights shared with `conv` and its optimiser, `conv`'s train/eval mode. Built on the meta
    device, so nothing is allocated or drawn from the random generator. Forward hooks
    registered on `conv` do not carry over."""
    twin = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
               bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta")
    twin.weight = conv.weight
    if conv.bias is not None:
        twin.bias = conv.bias
    return twin.train(conv.training)


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """1x1 convolution as (B,out,in) @ (B,in,HW) (+ bias); x (B,in,H,W) -> (B,out,H,W)."""
    b, c, h, w = x.shape
    mat = weight.reshape(weight.shape[0], c).expand(b, -1, -1)
    flat = x.reshape(b, c, h * w)
    out = torch.bmm(mat, flat) if bias is None else torch.baddbmm(bias[None, :, None], mat, flat)
    return out.reshape(b, -1, h, w)


_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "winograd-3x3": nnpack_conv3x3, "gemm-1x1": _pointwise}


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
                     fast: Callable[[Tensor, Tensor, Tensor | None], Tensor],
                     default: Callable[[Tensor], Tensor]) -> bool:
    """Whether `fast(x, weight, bias)` should serve this call instead of `default(x)` (oneDNN)."""
    if _policy != "auto":
        return _policy == "fast"
    sample = x[:1, :, :_TUNE_SIDE, :_TUNE_SIDE]
    size_class = (sample.shape[-2] * sample.shape[-1]).bit_length()
    key = (kind, weight.shape[1], weight.shape[0], bias is not None, torch.get_num_threads(), size_class)
    if key not in _choices:
        sample = sample.contiguous()
        t_fast, t_default = _time_pair(lambda: fast(sample, weight, bias),
                                       lambda: default(sample))
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


# (parent, attribute name, child): where a conv sits in a model
Slot = tuple[nn.Module, str, nn.Module]


def _conv_slots(model: nn.Module) -> list[Slot]:
    """Every place a Conv2d is registered under a parent inside `model` (a conv shared by two
    parents appears twice)."""
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]


def set_fast_convs(model: nn.Module, enabled: bool = True) -> int:
    """Put a `FastConv2d` in place of every plain 3x3 and 1x1 `nn.Conv2d` of `model` (or a
    plain conv in place of every FastConv2d); returns how many convs were switched.

    Each conv is replaced in its parent module by a twin sharing its parameters, so state-dict
    keys and values are unchanged. `model` itself being a conv has no parent to be replaced in:
    its class is switched instead.
    """
    twins: dict[int, nn.Module] = {}  # id(conv) -> its twin, one per conv even where shared
    for parent, name, child in _conv_slots(model):
        if id(child) not in twins and _should_switch(child, enabled):
            twins[id(child)] = _cached_twin(FastConv2d if enabled else nn.Conv2d, child)
        if id(child) in twins:
            setattr(parent, name, twins[id(child)])
    switch_root = _should_switch(model, enabled)
    if switch_root:
        model.__class__ = FastConv2d if enabled else nn.Conv2d
    return len(twins) + switch_root


# conv -> its twin of the other class, kept while the conv lives: restore(fast=True) switches
# the same model on every call, and building DGUNet's 96 twins costs about a 64x64 forward.
_TWINS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _cached_twin(cls: type[nn.Conv2d], conv: nn.Conv2d) -> nn.Module:
    """`conv_twin(cls, conv)`, reused while it still shares conv's parameters and mode."""
    twin = _TWINS.get(conv)
    if (twin is None or type(twin) is not cls or twin.weight is not conv.weight
            or twin.bias is not conv.bias):
        twin = _TWINS[conv] = conv_twin(cls, conv)
    return twin.train(conv.training)


def _should_switch(module: nn.Module, enabled: bool) -> bool:
    return _fast_conv_eligible(module) if enabled else type(module) is FastConv2d


@contextlib.contextmanager
def use_fast_convs(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Context manager around `set_fast_convs`; the previous convs (the same objects) come back on exit."""
    slots, root_class = _conv_slots(model), type(model)
    set_fast_convs(model, enabled)
    try:
        yield model
    finally:
        for parent, name, child in slots:
            setattr(parent, name, child)
        if type(model) is not root_class:
            model.__class__ = root_class


@contextlib.contextmanager
def use_fast(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Both output-preserving speedups: the fast merge and the fast CPU convolutions."""
    with use_fast_merge(model, enabled), use_fast_convs(model, enabled):
        yield model


__all__ = ["FastConv2d", "Projection", "fast_subspace_projection", "fp32_subspace_projection", "is_fast_merge",
           "kernel_choices", "merge_blocks", "merge_projection", "set_fast_convs", "set_fast_merge",
           "set_kernel_policy", "set_merge_projection", "subspace_projection", "use_fast", "use_fast_convs",
           "use_fast_merge", "use_merge_projection"]
