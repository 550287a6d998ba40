"""`python -m dgunet restore IN [IN ...] --out DIR --task TASK`: restore your own images.

`--out` is a folder (the outputs keep the input names), or, for one input file, the PNG file to write
(`--out restored.png`).

Two kinds of model, told apart by the options and the checkpoint:
  known operator  the degradation is given: `--task deblurring --kernel K [--sigma S]` (non-blind
                  deblurring, circular blur as in the test protocol), `--task sr [--scale S]`
                  (bicubic MATLAB imresize), `--task denoising --sigma S` (Gaussian noise). The
                  model gets the operator (physics.Blur / Downsample / Identity with the noise std).
  blind           the published tasks: `--task deraining`, `--task deblurring` without `--kernel`,
                  `--task denoising` without `--sigma` (real noise); they see the image alone.
`--sigma` is the noise std on [0, 1] images (0.01 = 1% = 2.55/255), as in dgunet.physics.

Any image size works: the network's input is padded at the bottom and right to the multiple it needs
and the result cropped back; a known operator acts on the true image size only (as in the known
test protocol), a blind model sees the reflect-padded image. A gray input is restored as RGB with
its value in every channel and written back gray (the mean of the three outputs). PNGs are written
atomically under the input names; a file that cannot be read is named at the end, the others are
still restored, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dgunet.errors import ConfigError, DataError, DGUNetError
from dgunet.tasks import IMAGE_TASKS, KNOWN_PROTOCOLS

TASKS = IMAGE_TASKS  # the image tasks of the task table (dgunet.tasks); cs restores measurements
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Degradation:
    """What the inputs went through, as the command line says; kernel None = not given."""

    task: str
    kernel: np.ndarray | None  # (k, k), sum 1
    sigma: float | None  # noise std on [0, 1]
    scale: int | None  # SR factor

    @property
    def known(self) -> bool:
        """Whether the model is given the operator (else: a blind, published model)."""
        return self.task == "sr" or (self.task == "deblurring" and self.kernel is not None) or (
            self.task == "denoising" and self.sigma is not None)


# ---------------------------------------------------------------- options

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the restored PNGs, or, for "
                        "one input file, the .png to write")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--kernel", metavar="FILE", help="deblurring: the blur kernel of the inputs "
                        "(.npy/.png/.mat); without it the blind (published) model is used")
    parser.add_argument("--sigma", type=float, metavar="S", help="noise std on [0, 1] images (0.01 = 1%%); "
                        "denoising: Gaussian noise with a known std (without it: real-noise, blind)")
    parser.add_argument("--scale", type=int, metavar="S", help="sr: the factor (default: the checkpoint's)")
    parser.add_argument("--weights", metavar="W", help="a checkpoint (.pth); default for the known-operator "
                        "tasks: the shipped model (pretrained/manifest.json); required for the blind ones")
    parser.add_argument("--arch", choices=("DGUNet", "DGUNet_plus"), help="default: read from the weights")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--tile", type=int, metavar="T", help="restore in T x T tiles (blind models and "
                        "Gaussian denoising; an operator that spans the image cannot be tiled)")
    parser.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles (default: 32, or a "
                        "quarter of a smaller tile)")


def check_options(args: argparse.Namespace) -> Degradation:
    """The degradation the options describe; one-line ConfigError for every impossible value."""
    from dgunet.data.kernels import load_kernel

    if args.kernel and args.task != "deblurring":
        raise ConfigError(f"--kernel is for --task deblurring, not {args.task}")
    if args.scale is not None and args.task != "sr":
        raise ConfigError(f"--scale is for --task sr, not {args.task}")
    if args.scale is not None and args.scale not in (2, 3, 4):
        raise ConfigError(f"--scale {args.scale}: super-resolution supports 2, 3, 4")
    if args.sigma is not None and not (math.isfinite(args.sigma) and 0 <= args.sigma <= 1):
        raise ConfigError(f"--sigma {args.sigma}: give the noise std on [0, 1] images, e.g. 0.01 for 1% "
                          f"(2.55/255)")
    if args.sigma is not None and args.task not in KNOWN_PROTOCOLS:
        raise ConfigError(f"--sigma does not apply to --task {args.task} (a blind model)")
    if args.overlap is not None and args.tile is None:
        raise ConfigError("--overlap applies to --tile; give both")
    if args.tile is not None and (args.tile < 16 or args.tile % 8):
        raise ConfigError(f"--tile {args.tile}: give a multiple of 8, at least 16")
    if args.tile is not None and args.overlap is None:
        args.overlap = min(32, args.tile // 4)
    if args.tile is not None and not 0 <= args.overlap < args.tile:
        raise ConfigError(f"--overlap {args.overlap}: give 0 <= overlap < tile ({args.tile})")
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        raise ConfigError("--precision fp16 needs --device cuda; use bf16 or fp32 on the CPU")
    kernel = load_kernel(args.kernel) if args.kernel else None
    degradation = Degradation(args.task, kernel, args.sigma, args.scale)
    tiling_ok = not degradation.known or args.task == "denoising"
    if args.tile is not None and not tiling_ok:
        raise ConfigError(f"--tile does not apply to --task {args.task} with a known operator: the operator "
                          f"acts on the whole image")
    return degradation


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); refuses two inputs with one name."""
    from dgunet.data.io import list_images
    from dgunet.imagefiles import IMAGE_EXTENSIONS

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"input folder {item} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise DataError(f"input {item} does not exist")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(f"inputs {stems[path.stem]} and {path} would both be written as {path.stem}.png; "
                            f"restore them into different --out folders")
        stems[path.stem] = path
    return files


# ---------------------------------------------------------------- the model

def weights_for(args: argparse.Namespace, degradation: Degradation) -> str:
    """--weights, else the shipped model of the task (known operators only)."""
    from dgunet.shipped import shipped_weights

    if args.weights:
        return args.weights
    if not degradation.known:
        raise ConfigError(f"--task {args.task} without a known degradation uses a published (blind) model: "
                          f"pass --weights W (the authors' checkpoint), or describe the degradation "
                          f"(deblurring: --kernel FILE; denoising: --sigma S)")
    return str(shipped_weights(args.task, degradation.scale))


def load(args: argparse.Namespace, degradation: Degradation, device: torch.device):
    """(model, training config or None) for the options; the model is on `device`, in eval mode."""
    from dgunet.testrun.loading import checkpoint_config, load_model

    args.weights = weights_for(args, degradation)
    cfg = checkpoint_config(args.weights)
    gradient = cfg.MODEL.GRADIENT if cfg is not None else "learned"
    if degradation.known and gradient == "learned":
        print(f"warning: {args.weights} is a blind model (MODEL.GRADIENT learned): the given "
              f"{'kernel' if degradation.kernel is not None else 'degradation'} is not used", file=sys.stderr)
    if not degradation.known and gradient != "learned":
        raise ConfigError(f"{args.weights} was trained with a known operator (MODEL.GRADIENT {gradient}); "
                          f"describe the inputs' degradation: " + {
                              "deblurring": "--kernel FILE [--sigma S]", "denoising": "--sigma S",
                          }.get(args.task, "see --help"))
    loaded = load_model(args.task, args.weights, arch=args.arch, gradient=gradient, device=device)
    return loaded.model, cfg


def warn_sigma_range(degradation: Degradation, cfg, weights: str) -> None:
    from dgunet.testrun.known import outside, trained_sigma_range

    trained = trained_sigma_range(cfg)
    if degradation.sigma is not None and trained is not None and outside(degradation.sigma, trained):
        print(f"warning: --sigma {degradation.sigma:g} is outside the range {weights} was trained for "
              f"[{trained[0]:g}, {trained[1]:g}] (DEGRADE.SIGMA_RANGE); expect weaker results", file=sys.stderr)


def skip_projection_for_noise(model: nn.Module, degradation: Degradation) -> None:
    """Noisy inputs: turn off the model's projection onto A x = y (MODEL.DATA_CONSISTENCY), which
    would fit the noise too; the model refuses noisy operators while it is on."""
    if degradation.sigma and getattr(model, "data_consistency", False):
        model.data_consistency = False
        print(f"note: --sigma {degradation.sigma:g} > 0: the output is not projected onto A x = y "
              f"(MODEL.DATA_CONSISTENCY), which would fit the noise", file=sys.stderr)


def operator(degradation: Degradation, scale: int | None) -> nn.Module:
    """The known operator of the inputs (its noise model carries sigma for the model to read)."""
    from dgunet import physics

    noise = physics.GaussianNoise(degradation.sigma or 0.0)
    if degradation.task == "sr":
        return physics.Downsample(scale, kernel="bicubic", noise_model=noise)
    if degradation.task == "deblurring":
        kernel = torch.from_numpy(degradation.kernel).float()[None, None]
        return physics.Blur(kernel, padding="circular", noise_model=noise)
    return physics.Identity(noise_model=noise)


class WithOperator(nn.Module):
    """model(y, physics=op) as a one-argument module, so the padding and tiling of
    dgunet.inference apply to a known-operator model (image-space operators only)."""

    def __init__(self, model: nn.Module, op: nn.Module):
        super().__init__()
        self.model, self.op = model, op
        self.size_multiple = getattr(model, "size_multiple", 8)
        self.min_size = getattr(model, "min_size", 16)
        self.in_c = getattr(model, "in_c", 3)

    def forward(self, y: Tensor) -> list[Tensor]:
        return self.model(y, physics=self.op)


# ---------------------------------------------------------------- restoring

def restore_known(model: nn.Module, op: nn.Module, y: Tensor, precision: str) -> Tensor:
    """y (1,3,h,w) -> the model's output given the operator, at any size: the image is padded to the
    network's multiple around the model only, the operator acting on the true size (the known test
    protocol's rule, dgunet.testrun.known.run_model)."""
    from dgunet.inference import autocast_context
    from dgunet.testrun.known import run_model

    param = next(model.parameters())
    with torch.inference_mode(), autocast_context(param.device.type, precision):
        return run_model(model, y.to(param.device, param.dtype), op.to(param.device))


def restore_one(model: nn.Module, op: nn.Module | None, y: Tensor, args: argparse.Namespace) -> Tensor:
    """(1,3,H,W) in [0,1] -> the restored (1,3,H',W') on the CPU, clamped. Tiles: blind models, and
    the identity operator of Gaussian denoising (the only known operator that acts pixel by pixel)."""
    from dgunet.inference import restore

    if op is not None and args.tile is None:
        out = restore_known(model, op, y, args.precision)
    else:
        net = WithOperator(model, op.to(next(model.parameters()).device)) if op is not None else model
        out = restore(net, y, tile=args.tile, overlap=args.overlap or 0, precision=args.precision)
    return out.float().cpu().clamp(0, 1)


def read_input(path: Path) -> tuple[Tensor, bool]:
    """(1,3,H,W) float in [0,1] and whether the file is gray."""
    from dgunet.data.io import decode_image, image_from_array

    array = decode_image(path)
    gray = array.ndim == 2 or array.shape[2] == 1
    return image_from_array(array, path, channels=3)[None], gray


def output_paths(out: str, inputs: list[str], files: list[Path]) -> list[Path]:
    """Where each restored file goes: `--out` is a folder (input names kept), or the .png for one file.

    An --out with an image suffix names a file, so it takes exactly one input file; the outputs are PNGs,
    so any other image suffix is refused rather than written as a PNG under a misleading name."""
    from dgunet.imagefiles import IMAGE_EXTENSIONS

    target = Path(out)
    suffix = target.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS or target.is_dir():
        return [target / f"{path.stem}.png" for path in files]
    if suffix != ".png":
        raise ConfigError(f"--out {out}: restored images are written as PNG; give a .png name or a folder")
    if len(files) != 1 or Path(inputs[0]).is_dir():
        raise ConfigError(f"--out {out} names one file, but the inputs hold {len(files)} image(s); "
                          f"give a folder for --out")
    return [target]


def write_output(target: Path, image: Tensor, gray: bool) -> Path:
    from dgunet.data.io import save_png_atomic

    image = image[0]
    return save_png_atomic(target, image.mean(0) if gray else image)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dgunet.testrun.known import model_scale
    from dgunet.testrun.options import pick_device

    degradation = check_options(args)
    device = pick_device(args.device)
    files = collect_inputs(args.inputs)
    targets = output_paths(args.out, args.inputs, files)
    model, cfg = load(args, degradation, device)
    scale = model_scale(cfg, degradation.scale, args.weights) if args.task == "sr" else None
    warn_sigma_range(degradation, cfg, args.weights)
    skip_projection_for_noise(model, degradation)
    op = operator(degradation, scale) if degradation.known else None
    failed: list[tuple[Path, str]] = []
    bar = tqdm(files, unit="image", disable=len(files) < 2, file=sys.stderr)
    for path, target in zip(bar, targets, strict=True):
        try:
            y, gray = read_input(path)
            write_output(target, restore_one(model, op, y, args), gray)
        except (DGUNetError, OSError) as err:
            failed.append((path, str(err)))
            bar.write(f"skipped {path}: {err}", file=sys.stderr)
    done = len(files) - len(failed)
    print(f"restored {done} of {len(files)} image(s) into {args.out}")
    if failed:
        print(f"error: {len(failed)} image(s) not restored: " + "; ".join(str(p) for p, _ in failed),
              file=sys.stderr)
        return 1
    return 0
