"""`python -m dgunet info`: parameters and FLOPs of a published variant.

    python -m dgunet info --task deblurring --arch DGUNet --size 256 [--cs-ratio 25]

The model is built on PyTorch's meta device (shapes only, no memory, no arithmetic), so this
takes seconds even for the largest variant. FLOPs come from torch.utils.flop_counter, which
counts convolutions and matrix products (2 FLOPs per multiply-add) and nothing else: the
inverse of the 16x16 Gram matrix in the image models' merge blocks, element-wise work (activations,
attention gates, the gradient-step additions), pooling and resampling are left out. Those are
a tiny fraction here (the 16x16 inverse is a few thousand FLOPs per image), and the counts
match the published measurement (PROTOCOLS.md) within a fraction of a percent.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dgunet.errors import ConfigError
from dgunet.models import CS_RATIOS, build_model, get_variant, normalize_arch
from dgunet.tasks import TASK_NAMES, get_task

PAPER_FILE = Path(__file__).with_name("paper_results.json")


@dataclass(frozen=True)
class ModelInfo:
    label: str
    parameters: int
    flops: int  # one forward at size x size
    size: int

    @property
    def macs(self) -> int:
        return self.flops // 2


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters: `parameters()` yields a shared tensor once (DGUNet's shared stage)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of model(x) as torch.utils.flop_counter counts them (convolutions and matmuls)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def measure(task: str, arch: str, size: int, cs_ratio: float = 25) -> ModelInfo:
    """Parameters and FLOPs of the published `task`/`arch` model on one size x size image."""
    extra = {"cs_ratio": cs_ratio} if get_task(task).is_cs else {}
    with torch.device("meta"):
        model = build_model(task, arch, **extra)
        x = torch.empty(1, model.in_c, size, size)
    multiple = getattr(model, "size_multiple", 8)
    if size % multiple:
        raise ConfigError(f"--size {size}: the {task} model needs a multiple of {multiple}")
    return ModelInfo(get_variant(task, arch).label, count_parameters(model), count_flops(model, x), size)


def published_tflop(task: str, arch: str) -> float | None:
    """The measured TFLOP of PROTOCOLS.md for 256x256, when there is one."""
    table = json.loads(PAPER_FILE.read_text(encoding="utf-8"))["compute_tflop_256"]
    return table.get(f"{task}/{arch}")


def report(info: ModelInfo, reference: float | None) -> str:
    lines = [info.label,
             f"  parameters:        {info.parameters:,}",
             f"  multiply-adds:     {info.macs / 1e9:,.2f} G  ({info.size}x{info.size}, one image)",
             f"  FLOPs (2 x MACs):  {info.flops / 1e12:.3f} T",
             "  counted: convolutions and matrix products only (not the 16x16 Gram inverse, "
             "element-wise ops, pooling, resampling)"]
    if reference is not None and info.size == 256:
        diff = 100 * (info.flops / 1e12 - reference) / reference
        lines.append(f"  published measurement: {reference:.2f} T ({diff:+.1f}%)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--arch", default="DGUNet", help="DGUNet or DGUNet_plus (default DGUNet)")
    parser.add_argument("--size", type=int, default=256, help="image side for the FLOP count (default 256)")
    parser.add_argument("--cs-ratio", type=float, default=25,
                        help=f"cs only: sampling ratio in percent, one of {CS_RATIOS} (default 25)")


def run(args: argparse.Namespace) -> int:
    try:
        arch = normalize_arch(args.arch)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.size <= 0:
        raise ConfigError(f"--size must be positive, got {args.size}")
    info = measure(args.task, arch, args.size, args.cs_ratio)
    print(report(info, published_tflop(args.task, arch)))
    return 0
