"""Every private PyTorch API the package uses, in one place, behind one capability check.

A name with a leading underscore may vanish in any PyTorch release. Each one used here is
listed in `PRIVATE_APIS`, looked up only in this module, and used only where `capabilities()`
says this PyTorch and this CPU have it; without it the callers take their public path (same
results, slower). tests/test_torch_private.py fails naming the API when an upgrade removes
one, so a lost speedup is noticed rather than silent.

Why each one is private-only:
- `torch._nnpack_spatial_convolution`: NNPACK's Winograd 3x3 convolution of one image. The
  public `conv2d` prefers oneDNN and hands a call to NNPACK only for batches of 16 or more,
  so a single image cannot reach it. (Whether NNPACK runs here is public:
  `torch.backends.nnpack.is_available`.)
- `torch.ops.mkldnn._is_mkldnn_bf16_supported`: whether oneDNN has native bfloat16 kernels
  (AVX512-BF16 or AMX); `torch.backends.mkldnn` has no public query for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

NNPACK_CONV = "torch._nnpack_spatial_convolution"
MKLDNN_BF16 = "torch.ops.mkldnn._is_mkldnn_bf16_supported"
PRIVATE_APIS = (NNPACK_CONV, MKLDNN_BF16)


@dataclass(frozen=True)
class TorchCapabilities:
    """What the private fast paths can use in this process."""

    nnpack_winograd: bool  # NNPACK's 3x3 convolution exists and runs on this CPU
    mkldnn_bf16: bool  # oneDNN has native bfloat16 kernels on this CPU
    missing: tuple[str, ...]  # the PRIVATE_APIS this PyTorch no longer has


def private_api(name: str) -> Callable | None:
    """The private callable `name` (dotted, from `torch`), or None where this PyTorch lacks it."""
    obj = torch
    try:
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
    except (AttributeError, RuntimeError):  # torch.ops raises RuntimeError for unknown ops
        return None
    return obj if callable(obj) else None


def missing_private_apis() -> list[str]:
    """The names in PRIVATE_APIS that this PyTorch does not have (empty when all are there)."""
    return [name for name in PRIVATE_APIS if private_api(name) is None]


@functools.cache
def capabilities() -> TorchCapabilities:
    """The one capability check, run once per process (`capabilities.cache_clear()` redoes it)."""
    missing = tuple(missing_private_apis())
    return TorchCapabilities(
        nnpack_winograd=NNPACK_CONV not in missing and torch.backends.nnpack.is_available(),
        mkldnn_bf16=MKLDNN_BF16 not in missing and _mkldnn_bf16_supported(),
        missing=missing)


def _mkldnn_bf16_supported() -> bool:
    try:
        return bool(private_api(MKLDNN_BF16)())
    except RuntimeError:  # a build without oneDNN
        return False


def nnpack_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """3x3 'same' convolution of x (B,C_in,H,W) through NNPACK, one image at a time (its batched
    entry point uses slower kernels); returns (B,C_out,H,W). Only where
    `capabilities().nnpack_winograd`."""
    conv = private_api(NNPACK_CONV)
    w = weight.contiguous()
    outs = [conv(x[i:i + 1], w, bias, [1, 1], [1, 1]) for i in range(x.shape[0])]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


__all__ = ["MKLDNN_BF16", "NNPACK_CONV", "PRIVATE_APIS", "TorchCapabilities", "capabilities",
           "missing_private_apis", "nnpack_conv3x3", "private_api"]
