"""Known-operator test protocols: non-blind deblurring, super-resolution, Gaussian denoising.

Clean test images are degraded by the fixed benchmark cases of `dgunet.benchmarks` (or a user's
kernels), rounded to 8 bits, restored by a "method" (the model, given the operator, or a
baseline of `dgunet.baselines`) and scored against the clean images:
  nonblind  RGB PSNR + MATLAB-style 3-D SSIM ("nonblind"), and on Y ("nonblind_y", in cases.json)
  sr        unrounded studio Y with a border of `scale` pixels cropped ("sr_x2" ...)
  gaussian  RGB PSNR + MATLAB-style 3-D SSIM ("gaussian")
Sizes, as the field does it: SR test images are cut to a multiple of the scale from the top left
(`modcrop`); deblurring and denoising images are used whole. The operator always sees that true
size; where the network needs multiples of 8 the image is padded around the model only
(`PaddedOperator`: the model works on the padded image, A on its top-left crop).
Gray test images (Set12, BSD68, Levin's) stay gray: they are degraded and scored on their one
channel; an RGB model restores them replicated over 3 channels, and the mean of its 3 output
channels is the gray result (the gray image closest to the output: by convexity its error is at
most the mean error of the 3 channels, so no channel is picked at random).
Results: <result_dir>/<set>/<case>/<image>.png, scores.json (every image of every case, the
evaluate command's format) and cases.json (means per case).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet.baselines import BASELINES, DEPRECATED
from dgunet.benchmarks import Case, cases, protocol
from dgunet.data.io import decode_image, image_from_array, save_png_atomic, to_uint8
from dgunet.data.synthetic import DegradeSpec, build_operator, clean_images
from dgunet.errors import ConfigError, DataError
from dgunet.evaluate import EvaluationResult, ImageScore, write_json_atomic
from dgunet.metrics.protocols import get_protocol
from dgunet.models.start import start_estimate
from dgunet.physics.base import adjoint_shape, initial_estimate, operator_norm, project
from dgunet.tasks import KNOWN_PROTOCOLS, patch_multiple
from dgunet.testrun.results import DatasetResult

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # bundled with scikit-image: no download
PHOTO_SIZE = 192  # a multiple of 8 and of every SR scale
Method = Callable[[Tensor, nn.Module, dict], Tensor]


@dataclass
class KnownRun:
    """What a known-operator test needs besides the model: its cases and how to restore."""

    protocol: str  # nonblind | sr | gaussian
    cases: list[Case]
    method: Method
    method_name: str  # model | a key of dgunet.baselines.BASELINES
    noise_seed: int
    warnings: list[str] = field(default_factory=list)  # one line each, printed when the run starts


# ---------------------------------------------------------------- options

def add_known_arguments(parser: argparse.ArgumentParser, task: str | None) -> None:
    """The options of the known-operator protocols of `task`; task None (reproduce, where the
    task is itself an option) adds those of every task."""
    group = parser.add_argument_group("known-operator protocols (docs/known_tasks.md)")
    if task != "sr":
        mine = [p for t, p in KNOWN_PROTOCOLS.items() if t != "sr" and task in (None, t)]
        group.add_argument("--protocol", choices=("published", *mine), default="published",
                           help=f"published test sets, or {' / '.join(mine)}: clean images degraded by the "
                                f"fixed benchmark operators, the model given the operator")
    if task in (None, "deblurring"):
        group.add_argument("--kernels", metavar="DIR", help="your own blur kernels instead of the benchmark's "
                           "12: .npy, gray .png, .mat v5 or v7.3 (one 2-D array or a cell array), up to 31x31")
    if task in (None, "sr"):
        group.add_argument("--scale", type=int, choices=(2, 3, 4), help="SR factor (default: the one the "
                           "checkpoint was trained for; all three for --method bicubic)")
    group.add_argument("--method", choices=("model", *BASELINES), default="model",
                       help="restore with the model (default) or a classical baseline (no --weights needed; "
                            "docs/known_tasks.md): adagger (A_dagger with its rule), adagger-oracle (eps per "
                            "image on the ground truth), hyperlaplacian (HQS, tuned), nlm (denoising), "
                            "wiener-flat, bicubic (SR); wiener is a deprecated alias of wiener-flat")
    group.add_argument("--gradient", choices=("learned", "known", "known+learned"), default=None,
                       help="the model's gradient step (default: the checkpoint's MODEL.GRADIENT, else known)")


def known_protocol(task: str, args: argparse.Namespace) -> str | None:
    """The known-operator protocol this command line asks for, None for the published test sets."""
    if task == "sr":
        return "sr"
    chosen = getattr(args, "protocol", "published")
    return None if chosen in (None, "published") else chosen


def shipped_model(task: str, args: argparse.Namespace, log: Callable[[str], None]) -> str:
    """The shipped weights (pretrained/) for a known protocol run without --weights; sets
    args.weights so messages name the file. ConfigError (naming what ships) when none fits."""
    from dgunet.shipped import shipped_weights

    try:
        path = shipped_weights(task, getattr(args, "scale", None))
    except ConfigError as err:
        raise ConfigError(f"{err} (or --method hyperlaplacian / bicubic for a baseline)") from None
    log(f"no --weights: the shipped model {path}")
    args.weights = str(path)
    return args.weights


def trained_scale(task: str, args: argparse.Namespace, cfg) -> list[int] | None:
    """The SR scales to test: a model serves only the scale it was trained for."""
    if task != "sr":
        return None
    if args.method != "model":
        return [args.scale] if args.scale else None
    return [model_scale(cfg, args.scale, args.weights)]


def model_scale(cfg, scale: int | None, weights) -> int:
    """The SR factor to run a checkpoint at: its DEGRADE.SCALE, which a given `scale` must equal;
    `scale` alone for a checkpoint without a training config. ConfigError otherwise."""
    trained = cfg.DEGRADE.SCALE if cfg is not None and cfg.DEGRADE.KIND == "sr" else None
    if trained is not None and scale and scale != trained:
        raise ConfigError(f"weights {weights} were trained for x{trained} (DEGRADE.SCALE in the "
                          f"checkpoint's config), not x{scale}; pass --scale {trained} or weights "
                          f"trained for x{scale}")
    if trained is None and not scale:
        raise ConfigError(f"cannot tell the SR factor of {weights} (no training config inside); "
                          f"pass --scale")
    return scale or trained


def model_gradient(args: argparse.Namespace, cfg) -> str:
    if args.gradient:
        return args.gradient
    return cfg.MODEL.GRADIENT if cfg is not None else "known"


# ---------------------------------------------------------------- sizes the network needs

def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """x (B,C,H,W) -> (B,C,H',W'), H' and W' the next multiples of `multiple`, mirrored at the bottom
    and right (the top-left pixels keep their place, so `unpad` is a crop)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"  # reflect needs a pad below the side
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def unpad(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The top-left (H, W) of x (B,C,H',W'): undoes `pad_to_multiple`."""
    return x[..., :size[0], :size[1]]


class PaddedOperator(nn.Module):
    """A on the top-left (H, W) crop of a padded image: A'(x') = A(crop(x')), A'^T = zero-pad(A^T).

    The model restores an image padded to its size multiple while the data term involves the true
    image only: the padding is shaped by the model's prior steps alone. A_dagger is the operator's
    own start, padded by `pad_to_multiple`. The noise model is the operator's (sigma-aware models
    find it as usual).
    """

    def __init__(self, op, size: tuple[int, int], multiple: int):
        super().__init__()
        self.op, self.size, self.multiple = op, tuple(size), multiple
        self.noise_model = getattr(op, "noise_model", None)

    def A(self, x: Tensor) -> Tensor:
        return self.op.A(unpad(x, self.size))

    def A_adjoint(self, y: Tensor) -> Tensor:
        g = self.op.A_adjoint(y)
        h, w = g.shape[-2:]
        return F.pad(g, (0, -w % self.multiple, 0, -h % self.multiple))

    def A_dagger(self, y: Tensor) -> Tensor:
        return pad_to_multiple(initial_estimate(self.op, y), self.multiple)

    def classical_start(self, y: Tensor, start: str, sigma=None) -> Tensor:
        """A classical solver's estimate (dgunet.models.start) on the true size, padded like A_dagger."""
        return pad_to_multiple(start_estimate(self.op, y, start, sigma), self.multiple)

    def project(self, z: Tensor, y: Tensor) -> Tensor:
        """The crop is projected (physics.base.project); the padding is unconstrained, so it stays."""
        h, w = self.size
        inner = project(self.op, unpad(z, self.size), y)
        return torch.cat([torch.cat([inner, z[..., :h, w:]], dim=-1), z[..., h:, :]], dim=-2)

    def norm_AtA(self, x: Tensor) -> float | Tensor:
        """L of A' = A crop: the crop's singular values are all 1, so ||A'^T A'|| = ||A^T A|| at the
        true size (without this a padded operator would cost a power iteration per forward)."""
        return operator_norm(self.op, unpad(x, self.size))

    def image_shape(self, y_shape) -> torch.Size:
        inner = getattr(self.op, "image_shape", None)
        *lead, h, w = inner(y_shape) if callable(inner) else self.op.A_adjoint(torch.zeros(y_shape)).shape
        return torch.Size((*lead, h + -h % self.multiple, w + -w % self.multiple))


def _needs_padding(op, y: Tensor, multiple: int) -> tuple[int, int] | None:
    """The true image size when it is not a multiple of `multiple`, else None."""
    h, w = initial_estimate(op, y).shape[-2:]
    return (h, w) if h % multiple or w % multiple else None


def run_model(model: nn.Module, y: Tensor, op, stages: bool = False) -> Tensor | list[Tensor]:
    """The model's final output (B,C,H,W) for y and op at any image size (padding only around the
    network, see PaddedOperator); a blind model (gradient learned) of a same-size task gets y padded.
    stages=True: all 7 outputs as the model returns them (final first, then stages 6 ... 1)."""
    multiple = getattr(model, "size_multiple", 8)
    size = _needs_padding(op, y, multiple)
    if size is None:
        outputs = model(y, physics=op)
    elif getattr(model, "gradient", "known") == "learned" and adjoint_shape(op, y) == y.shape:
        outputs = [unpad(o, size) for o in model(pad_to_multiple(y, multiple), physics=None)]
    else:
        outputs = [unpad(o, size) for o in model(y, physics=PaddedOperator(op, size, multiple))]
    return list(outputs) if stages else outputs[0]


def model_method(model: nn.Module) -> Method:
    """The model as a method; a gray y (B,1,h,w) goes in replicated over 3 channels (module docstring)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def restore(y: Tensor, op: nn.Module, _params: dict) -> Tensor:
        y, op = y.to(device), op.to(device)
        gray = y.shape[1] == 1
        out = run_model(model, y.expand(-1, 3, -1, -1) if gray else y, op)
        return (out.mean(dim=1, keepdim=True) if gray else out).float().cpu()

    return restore


def make_known_run(task: str, args: argparse.Namespace, name: str, model: nn.Module | None, cfg) -> KnownRun:
    """The cases and the method of one test; `model` None for a baseline."""
    if getattr(args, "tile", None) or args.self_ensemble:
        raise ConfigError("--tile and --self-ensemble do not apply to known-operator protocols: the operator "
                          "acts on the whole image")
    chosen = cases(name, scales=trained_scale(task, args, cfg), kernel_dir=getattr(args, "kernels", None))
    method = model_method(model) if model is not None else _baseline(args.method)
    notes = sigma_range_warnings(chosen, cfg, getattr(args, "weights", None)) if model is not None else []
    if args.method in DEPRECATED:
        notes.append(f"--method {args.method} is deprecated: it is the flat-spectrum Wiener filter, now called "
                     f"--method {DEPRECATED[args.method]} (hyperlaplacian and adagger-oracle are the strong "
                     f"baselines)")
    return KnownRun(name, chosen, method, args.method, protocol()["noise_seed"], notes)


def trained_sigma_range(cfg) -> tuple[float, float] | None:
    """DEGRADE.SIGMA_RANGE of a checkpoint's config (noise std on [0, 1]), None without one."""
    if cfg is None or not cfg.DEGRADE.KIND:
        return None
    low, high = (float(v) for v in cfg.DEGRADE.SIGMA_RANGE)
    return low, high


def outside(sigma: float, sigma_range: tuple[float, float]) -> bool:
    return not sigma_range[0] - 1e-6 <= sigma <= sigma_range[1] + 1e-6


def sigma_range_warnings(chosen: list[Case], cfg, weights) -> list[str]:
    """One line when some cases' noise lies outside DEGRADE.SIGMA_RANGE of the checkpoint's config."""
    trained = trained_sigma_range(cfg)
    far = [c for c in chosen if trained is not None and outside(c.sigma, trained)]
    if not far:
        return []
    listed = ", ".join(f"{c.name} ({c.sigma:.4g})" for c in far[:4]) + (" ..." if len(far) > 4 else "")
    return [f"weights {weights} were trained for noise std {trained[0]:g} to {trained[1]:g} "
            f"(DEGRADE.SIGMA_RANGE in the checkpoint's config, on [0, 1] images); {len(far)} case(s) lie "
            f"outside: {listed}; their scores measure extrapolation: train with a DEGRADE.SIGMA_RANGE "
            f"that covers them"]


def _baseline(name: str) -> Method:
    baseline = BASELINES[name]

    @torch.no_grad()
    def restore(y: Tensor, op: nn.Module, params: dict) -> Tensor:
        return baseline(y, op, params).float()

    return restore


# ---------------------------------------------------------------- data

def photo_images() -> list[tuple[str, np.ndarray]]:
    """Centre crops (PHOTO_SIZE^2, uint8 RGB) of scikit-image's bundled photos: a test set on any machine."""
    from skimage import data as skdata

    out = []
    for name in PHOTOS:
        img = getattr(skdata, name)()
        top, left = (img.shape[0] - PHOTO_SIZE) // 2, (img.shape[1] - PHOTO_SIZE) // 2
        out.append((name, np.ascontiguousarray(img[top:top + PHOTO_SIZE, left:left + PHOTO_SIZE, :3])))
    return out


def read_clean(path: Path) -> np.ndarray:
    """A clean test image as uint8: (H, W) for a gray file (one channel, or three equal ones is
    still RGB: only the file's own channel count decides), (H, W, 3) RGB otherwise."""
    pixels = decode_image(path)
    gray = pixels.ndim == 2 or pixels.shape[2] == 1
    return to_uint8(image_from_array(pixels, path, channels=1 if gray else 3))


def clean_set(kind: str, folder: Path | None) -> list[tuple[str, np.ndarray]]:
    if kind == "photos":
        return photo_images()
    return [(p.stem, read_clean(p)) for p in clean_images(folder)]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H - H % scale, W - W % scale) of an (H, W[, C]) image: the SR field's modcrop."""
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[:h - h % scale, :w - w % scale])


def degrade_case(case: Case, clean: np.ndarray, stem: str,
                 seed: int) -> tuple[np.ndarray, Tensor, nn.Module, dict]:
    """(clean as scored, y (1,C,h,w) rounded to 8 bits, operator, params) for one image and case;
    C is 3, or 1 for a gray (H, W) image. SR cuts the image by `modcrop`; the others keep it whole.
    params: {"kernel": (1,K,K), "sigma": (1,), "scale", "clean": (1,C,H,W) in [0, 1]}."""
    multiple = patch_multiple(case.scale)
    h, w = clean.shape[:2]
    if h < multiple * 2 or w < multiple * 2:
        raise DataError(f"test image {stem} is {h}x{w}; the {case.name} case needs at least "
                        f"{2 * multiple}x{2 * multiple}")
    clean = modcrop(clean, case.scale)
    kernel = case.kernel if case.kernel is not None else np.ones((1, 1))
    spec = DegradeSpec(case.kind, kernel_size=kernel.shape[0], padding="circular", scale=case.scale,
                       sr_kernel="bicubic")
    params = {"kernel": torch.from_numpy(kernel).float()[None], "sigma": torch.tensor([case.sigma]),
              "scale": case.scale}
    op = build_operator(spec, params["kernel"], params["sigma"])
    x = torch.from_numpy(clean[..., None] if clean.ndim == 2 else clean).permute(2, 0, 1)[None].float() / 255
    params["clean"] = x
    with torch.no_grad():
        y = op.A(x)
    if case.sigma > 0:
        noise = case.noise_rng(stem, seed).standard_normal(tuple(y.shape), dtype=np.float32)
        y = y + case.sigma * torch.from_numpy(noise)
    y = torch.round(y.clamp(0, 1) * 255) / 255
    return clean, y, op, params


# ---------------------------------------------------------------- the runner

def scoring_protocols(case: Case) -> list[str]:
    if case.kind == "sr":
        return [f"sr_x{case.scale}"]
    return ["nonblind", "nonblind_y"] if case.kind == "blur" else ["gaussian"]


def run_known(ctx, spec, folder: Path | None, out_dir: Path) -> DatasetResult:
    """Restore and score every (case, image) of one clean test set."""
    run: KnownRun = ctx.known
    start = time.perf_counter()
    for note in run.warnings:
        print(f"warning: {note}", file=sys.stderr)
    images = clean_set(spec.kind, folder)
    scores, per_case = [], {}
    for case in run.cases:
        case_scores: dict[str, list[tuple[float, float]]] = {}
        for stem, clean in images:
            clean, y, op, params = degrade_case(case, clean, stem, run.noise_seed)
            restored = run.method(y, op, params)[0].clamp(0, 1)
            path = save_png_atomic(out_dir / case.name / f"{stem}.png", restored)
            pred = to_uint8(restored)
            for i, name in enumerate(scoring_protocols(case)):
                psnr, ssim = get_protocol(name).score(pred, clean, (str(path), f"clean {stem}"))
                case_scores.setdefault(name, []).append((psnr, ssim))
                if i == 0:
                    scores.append(ImageScore(f"{case.name}/{stem}", psnr, ssim))
        per_case[case.name] = {name: {"psnr": float(np.mean([s[0] for s in v])),
                                      "ssim": float(np.mean([s[1] for s in v]))}
                               for name, v in case_scores.items()}
        first = next(iter(per_case[case.name].values()))
        ctx.log(f"  {case.name}: PSNR {first['psnr']:.2f} dB, SSIM {first['ssim']:.4f} ({len(images)} images)")
    result = DatasetResult(ctx.task, spec.name, out_dir, len(scores), time.perf_counter() - start)
    labels = list(dict.fromkeys(scoring_protocols(c)[0] for c in run.cases))
    result.scores = EvaluationResult(labels[0] if len(labels) == 1 else run.protocol, scores)
    write_json_atomic(out_dir / "cases.json", {"protocol": run.protocol, "method": run.method_name,
                                               "cases": per_case})
    return result
