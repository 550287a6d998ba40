"""Restoring images of any size with a DGUNet model.

The networks need sides that are multiples of 8 (image tasks: three 2x downsamplings) or 32
(compressive sensing: 32x32 blocks). `restore` reflect-pads the bottom and right edges up to
that multiple and crops the result back, so any size works.

Options of `restore` (all off by default: the default path is the published computation):
- `tile`/`overlap`: run overlapping tiles and cross-fade them, so memory is bounded by the tile.
- `self_ensemble`: average over the 8 flips/rotations (the published SIDD protocol).
- `precision`: "fp32", "bf16" (CPU or GPU autocast) or "fp16" (GPU autocast).
- `channels_last`, `compile`, `fast` (see `dgunet.models.fast`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet.errors import ConfigError, DataError
from dgunet.models.fast import merge_projection, use_fast_convs, use_merge_projection
from dgunet.models.torch_private import capabilities

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Forward = Callable[[Tensor], Tensor]


def size_multiple(model: nn.Module) -> int:
    """The side multiple a model needs (8 for image tasks, 32 for CS); 8 if unknown."""
    return int(getattr(model, "size_multiple", 8))


def min_size(model: nn.Module) -> int:
    """The smallest side a model accepts (image tasks: 16, so instance norm sees 2+ pixels)."""
    return int(getattr(model, "min_size", 0))


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> tuple[Tensor, tuple[int, int]]:
    """Pad (B,C,H,W) at the bottom and right to multiples of `multiple` (and at least `min_size`).

    Returns the padded tensor and the original (H, W). Reflection needs a pad smaller than the
    side; for tiny inputs (a side shorter than the pad) we fall back to edge replication.
    """
    h, w = x.shape[-2:]
    pad_h = max((-h) % multiple, min_size - h)
    pad_w = max((-w) % multiple, min_size - w)
    if pad_h or pad_w:
        if mode == "reflect" and (pad_h >= h or pad_w >= w):
            mode = "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


def final_output(outputs: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """DGUNet returns the 7 stage images with the final one first; other models a tensor."""
    return outputs[0] if isinstance(outputs, list | tuple) else outputs


def forward_padded(model: nn.Module | Forward, x: Tensor, multiple: int | None = None,
                   smallest: int | None = None) -> Tensor:
    """The final stage of `model` on (B,C,H,W) of any size; output (B,C_out,H,W).

    multiple/smallest default to the model's `size_multiple` and `min_size`.
    """
    smallest = min_size(model) if smallest is None else smallest
    padded, (h, w) = pad_to_multiple(x, multiple or size_multiple(model), min_size=smallest)
    return final_output(model(padded))[..., :h, :w]


# ---------------------------------------------------------------- tiling

def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, size), neighbours overlapping by at
    least `overlap`. Offsets are multiples of `multiple` when `size` and `tile` are, so every
    tile sees the same downsampling grid as the whole image does."""
    if size <= tile:
        return [0]
    # Rounding starts to the grid can widen a gap by up to `multiple`: plan for that much less.
    step = max(tile - overlap - (multiple if multiple > 1 else 0), 1)
    count = math.ceil((size - tile) / step) + 1
    starts = [round(i * (size - tile) / (count - 1) / multiple) * multiple for i in range(count)]
    return sorted(set(min(s, size - tile) for s in starts))


def ramp_weights(start: int, length: int, prev_end: int | None, next_start: int | None) -> Tensor:
    """1-D blending weights (length,) of a tile at `start`: raised-cosine ramps across the
    overlaps with its neighbours, 1 elsewhere. A neighbour's ramp over the same overlap is the
    mirror image, so the two sum to 1 and no seam is visible."""
    w = torch.ones(length, dtype=torch.float64)
    if prev_end is not None and prev_end > start:
        n = prev_end - start
        w[:n] *= _rising(n)
    if next_start is not None and next_start < start + length:
        n = start + length - next_start
        w[length - n:] *= _rising(n).flip(0)
    return w


def _rising(n: int) -> Tensor:
    """(n,) raised cosine from ~0 to ~1 at pixel centres; r[j] + r[n-1-j] == 1."""
    j = torch.arange(n, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(math.pi * (j + 0.5) / n)


def axis_weights(starts: list[int], tile: int, size: int) -> list[Tensor]:
    """The 1-D weights of each tile along one axis of length `size`."""
    out = []
    for i, s in enumerate(starts):
        prev_end = starts[i - 1] + tile if i > 0 else None
        next_start = starts[i + 1] if i + 1 < len(starts) else None
        out.append(ramp_weights(s, min(tile, size - s), prev_end, next_start))
    return out


def check_tile(tile: int | tuple[int, int], overlap: int, multiple: int, smallest: int = 0) -> tuple[int, int]:
    """Validate tile and overlap; returns the (tile_h, tile_w)."""
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    for side in (th, tw):
        if side <= 0 or side % multiple:
            raise ConfigError(f"tile={tile} must be a positive multiple of {multiple}, the side "
                              f"multiple this model needs (e.g. {max(multiple, 256 // multiple * multiple)})")
        if side < smallest:
            raise ConfigError(f"tile={tile} is smaller than {smallest}, the smallest side this model accepts")
    if overlap < 0 or overlap >= min(th, tw):
        raise ConfigError(f"overlap={overlap} must be >= 0 and smaller than the tile ({min(th, tw)})")
    return th, tw


def forward_tiled(forward: Forward, x: Tensor, tile: tuple[int, int], overlap: int, multiple: int) -> Tensor:
    """Run `forward` ((B,C,h,w) -> (B,C_out,h,w), sides multiples of `multiple`) tile by tile
    on x (B,C,H,W) and cross-fade the tiles. Peak memory is one tile's, plus the output."""
    x, (h, w) = pad_to_multiple(x, multiple)
    big_h, big_w = x.shape[-2:]
    th, tw = min(tile[0], big_h), min(tile[1], big_w)
    rows, cols = tile_starts(big_h, th, overlap, multiple), tile_starts(big_w, tw, overlap, multiple)
    row_w, col_w = axis_weights(rows, th, big_h), axis_weights(cols, tw, big_w)
    out = total = None
    for r, wr in zip(rows, row_w, strict=True):
        for c, wc in zip(cols, col_w, strict=True):
            y = forward(x[..., r:r + th, c:c + tw]).float()
            if out is None:
                out = y.new_zeros(*y.shape[:2], big_h, big_w)
                total = y.new_zeros(big_h, big_w)
            weight = (wr[:, None] * wc[None, :]).to(y)  # (th, tw)
            out[..., r:r + th, c:c + tw] += y * weight
            total[r:r + th, c:c + tw] += weight
    return (out / total)[..., :h, :w]


# ---------------------------------------------------------------- self-ensemble

def ensemble_transform(x: Tensor, k: int) -> Tensor:
    """The k-th of the 8 flips/rotations (k in 0..7) of (..., H, W)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def undo_ensemble_transform(x: Tensor, k: int) -> Tensor:
    """Inverse of `ensemble_transform(., k)`."""
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def forward_ensemble(forward: Forward, x: Tensor) -> Tensor:
    """Mean over the 8 dihedral transforms of `forward(t(x))`, each mapped back."""
    acc = None
    for k in range(8):
        y = undo_ensemble_transform(forward(ensemble_transform(x, k).contiguous()), k).float()
        acc = y if acc is None else acc + y
    return acc / 8


# ---------------------------------------------------------------- options

def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16; a no-op for fp32. fp16 only on CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("precision='fp16' needs a CUDA device (CPU float16 convolutions are not "
                          "accelerated); use precision='bf16' on CPU")
    return torch.autocast(device_type, dtype=PRECISIONS[precision])


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return capabilities().mkldnn_bf16


_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def compiled(model: nn.Module) -> nn.Module:
    """`torch.compile(model)`, compiled once per model and cached."""
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model)
    return _COMPILED[model]


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"restore expects a (B,C,H,W) tensor, got {shape}; "
                        f"use img.unsqueeze(0) for a single (C,H,W) image")


def _pick_channels_last(channels_last: bool | None, precision: str, device_type: str) -> bool:
    if channels_last is not None:
        return channels_last
    # oneDNN's NCHW bfloat16 convolutions are far slower than its NHWC ones on CPU.
    return precision == "bf16" and device_type == "cpu"


@contextlib.contextmanager
def _speed_context(model: nn.Module, fast: bool, precision: str) -> Iterator[None]:
    """The merge projection `merge_projection` picks (without `fast`: the model's own, but the
    solve under autocast, which keeps the Gram matrix in float32), and with `fast` also the
    fast CPU convolutions; the model comes back as it was on exit."""
    projection = merge_projection(fast_merge=True if fast else None, autocast=precision != "fp32")
    convs = use_fast_convs(model) if fast else contextlib.nullcontext()
    with use_merge_projection(model, projection), convs:
        yield


def restore(model: nn.Module, images: Tensor, *, tile: int | tuple[int, int] | None = None,
            overlap: int = 32, self_ensemble: bool = False, precision: str = "fp32",
            channels_last: bool | None = None, compile: bool = False, fast: bool = False) -> Tensor:
    """Restore a batch: (B,C,H,W) float in [0,1] -> (B,C,H,W), the model's final stage.

    Runs on the model's device under torch.inference_mode; the output has the model's dtype
    (float32 unless the model was converted) and is not clamped (clamp before saving).
    tile: side (or (h, w)) of the tiles, a multiple of the model's size multiple; None = whole image.
    overlap: pixels shared by neighbouring tiles (cross-faded), 0 <= overlap < tile.
    self_ensemble: average the 8 flips/rotations (8x the time).
    precision: "fp32" (faithful), "bf16" or "fp16" (autocast; fp16 on CUDA only).
    channels_last: NHWC memory format; the model's 4-D weights are converted in place to the
        chosen format (values unchanged). None = on for bf16 on CPU, off otherwise.
    compile: torch.compile the model (compiled once per model, then cached).
    fast: the same function computed faster (fast merge; on CPU also Winograd 3x3 and GEMM 1x1 convs; see
        dgunet.models.fast). Outputs agree with the default path within 1e-4.
    """
    _check_images(images)
    in_c = getattr(model, "in_c", images.shape[1])
    if images.shape[1] != in_c:
        raise DataError(f"the model expects {in_c}-channel images, got {images.shape[1]} channels")
    param = next(model.parameters())
    device_type = param.device.type
    autocast = autocast_context(device_type, precision)
    multiple = size_multiple(model)
    smallest = min_size(model)
    tile_hw = check_tile(tile, overlap, multiple, smallest) if tile is not None else None
    if precision == "bf16" and device_type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("this CPU has no native bfloat16 kernels (no AVX512-BF16/AMX): bf16 will be "
                      "slower than fp32 here", RuntimeWarning, stacklevel=2)
    use_cl = _pick_channels_last(channels_last, precision, device_type)
    memory_format = torch.channels_last if use_cl else torch.contiguous_format
    # Outside inference mode: converted weights must stay usable for training afterwards.
    model.to(memory_format=memory_format)
    net = compiled(model) if compile else model

    def run(batch: Tensor) -> Tensor:
        return forward_padded(net, batch.contiguous(memory_format=memory_format), multiple, smallest)

    def forward(batch: Tensor) -> Tensor:
        return run(batch) if tile_hw is None else forward_tiled(run, batch, tile_hw, overlap, multiple)

    # The speed context first: the convs it puts in place are built outside inference mode.
    with _speed_context(model, fast, precision), torch.inference_mode(), autocast:
        x = images.to(device=param.device, dtype=param.dtype)
        out = forward_ensemble(forward, x) if self_ensemble else forward(x)
        return out.to(param.dtype).contiguous()
