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


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def percent(value: str) -> float:
    """A sampling ratio in percent, 0 < ratio <= 100 (25 means 25 %, not 0.25)."""
    number = float(value)
    if not 0 < number <= 100:
        raise argparse.ArgumentTypeError(f"a sampling ratio in percent, above 0 and at most 100, got {value}")
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
        group.add_argument("--overlap", type=_non_negative, default=32,
                           help="tile overlap in pixels, less than --tile (default 32)")
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument("--compile", action="store_true", help="torch.compile the model first")
    group.add_argument("--fast", action="store_true",
                       help="faster kernels for the same function (outputs move by ~3e-6; off: the "
                            "published computation)")
    group.add_argument("--workers", type=_non_negative, default=0,
                       help="processes for scoring image folders (default 0: in this process)")


def add_skip_bad_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-bad", action="store_true",
                        help="test without the files the up-front check finds unusable (no target, "
                             "unreadable, gray vs RGB, too small) and list them in scores.json; "
                             "default: list them and stop before restoring anything")


def pick_device(name: str | None) -> torch.device:
    """The --device to run on; ConfigError (one line) for a name torch does not know or cannot use here."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name torch knows; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        try:
            torch.empty(1, device=device)  # mps, xpu, ...: only trying tells whether this build has it
        except (RuntimeError, AssertionError):
            raise ConfigError(f"--device {name}: this PyTorch build or machine has no usable {device.type} "
                              f"device; use --device cpu or cuda") from None
    return device


def check_tile_for(model, options: RestoreOptions) -> None:
    """ConfigError before any work when --tile / --overlap do not fit `model` (its side multiple, its
    smallest side)."""
    if options.tile is None or model is None:
        return
    from dgunet.inference import check_tile, min_size, size_multiple

    try:
        check_tile(options.tile, options.overlap, size_multiple(model), min_size(model))
    except ValueError as err:
        raise ConfigError(f"--tile {options.tile} --overlap {options.overlap}: {err}") from None


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
