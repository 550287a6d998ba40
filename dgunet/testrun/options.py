"""Command-line options shared by the task test scripts and `python -m dgunet reproduce`."""

from __future__ import annotations

import argparse

import torch

from dgunet.errors import ConfigError
from dgunet.models import ARCHS, normalize_arch
from dgunet.testrun.restoring import RestoreOptions

PRECISIONS = ("fp32", "bf16", "fp16")
# Published test scripts: x8 self-ensemble for denoising (SIDD and DND), none elsewhere.
ENSEMBLE_BY_DEFAULT = {"denoising"}


def _arch(value: str) -> str:
    try:
        return normalize_arch(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--arch", type=_arch, default=None, metavar="|".join(ARCHS),
                       help="architecture (default: read from the checkpoint)")
    for flag in ("--n-feat", "--scale-unetfeats", "--scale-orsnetfeats"):
        group.add_argument(flag, type=_positive, default=None,
                           help="width override (default: the published width, or the checkpoint's "
                                "when it matches no published model)")


def add_run_arguments(parser: argparse.ArgumentParser, tiles: bool = True) -> None:
    """Device, precision, self-ensemble (and tiling unless the protocol fixes the tiles)."""
    group = parser.add_argument_group("inference")
    group.add_argument("--device", default=None,
                       help="torch device, e.g. cuda, cuda:1, cpu (default: cuda when available)")
    group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="inference precision; the paper's numbers are fp32 (default)")
    group.add_argument("--self-ensemble", action=argparse.BooleanOptionalAction, default=None,
                       help="average the 8 flips/rotations (default: on for denoising as published, "
                            "off otherwise)")
    if tiles:
        group.add_argument("--tile", type=_positive, default=None,
                           help="restore in overlapping tiles of this size to save memory")
        group.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument("--compile", action="store_true", help="torch.compile the model first")
    group.add_argument("--fast", action="store_true",
                       help="faster kernels for the same function (outputs move by ~3e-6; off: the "
                            "published computation)")
    group.add_argument("--workers", type=int, default=0,
                       help="processes for scoring image folders (default 0: in this process)")


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def restore_options(args: argparse.Namespace, task: str) -> RestoreOptions:
    ensemble = args.self_ensemble if args.self_ensemble is not None else task in ENSEMBLE_BY_DEFAULT
    tile = getattr(args, "tile", None)
    if tile is not None and not 0 <= args.overlap < tile:
        raise ConfigError(f"--overlap {args.overlap} must be at least 0 and less than --tile {tile}")
    return RestoreOptions(tile=tile, overlap=getattr(args, "overlap", 32), self_ensemble=ensemble,
                          precision=args.precision, channels_last=args.channels_last,
                          compile=args.compile, fast=getattr(args, "fast", False))


def given_widths(args: argparse.Namespace) -> dict[str, int]:
    names = ("n_feat", "scale_unetfeats", "scale_orsnetfeats")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
