"""Tune the classical baselines' constants on training photos; writes dgunet/baselines/tuned.py.

Never on test images: the photos are dgunet.benchmarks.TRAIN_PHOTOS (scikit-image's, none of them a
test photo), centre crops as gray (luma) images, each blurred by random kernels of
dgunet.data.kernels (all kinds, 25x25, seeded) for deblurring, or not at all for denoising.

  hyperlaplacian  for each noise level, lam maximising the mean PSNR (golden-section on log lam),
                  then a least-squares line log lam = LOG_LAM + LAM_SLOPE log sigma_eff per kind
  nlm             one factor h / sigma for every noise level (a grid), the best mean PSNR
  tv-cs           for each CS ratio, the TV weight lam of FISTA-TV (dgunet.baselines.tv) on the
                  fixed orthonormal 32x32 block matrix, maximising the mean PSNR (golden-section)

    python scripts/tune_baselines.py              # prints the result (~5 min on 2 cores)
    python scripts/tune_baselines.py --write      # and writes dgunet/baselines/tuned.py
    python scripts/tune_baselines.py --only tv-cs --write   # one solver; the others' constants are kept
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dgunet.atomic import write_text_atomic
from dgunet.baselines import tuned
from dgunet.baselines.hqs import hyper_laplacian_deconvolve
from dgunet.baselines.linear import GOLDEN, QUANTISATION_VAR
from dgunet.benchmarks import TRAIN_PHOTOS
from dgunet.data.kernels import KERNEL_KINDS, random_kernel

TUNED_FILE = Path(__file__).resolve().parents[1] / "dgunet" / "baselines" / "tuned.py"
SEED = 20091207  # NeurIPS 2009
CROP = 128
KERNELS_PER_PHOTO = 2
BLUR_SIGMAS = (0.005, 0.01, 0.02, 0.03, 0.05)
NOISE_SIGMAS = (5 / 255, 15 / 255, 25 / 255, 50 / 255)
LOG_LAM_RANGE = (math.log(1e-6), math.log(1e-1))
GOLDEN_STEPS = 14
NLM_FACTORS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)
CS_PERCENTS = (10, 25, 50)
TV_LOG_LAM_RANGE = (math.log(1e-5), math.log(1e-1))
TV_GOLDEN_STEPS = 10
SOLVERS = ("hyperlaplacian", "nlm", "tv-cs")


def training_crops() -> torch.Tensor:
    """(N,1,CROP,CROP) float64 gray centre crops of the training photos, in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray

    crops = []
    for name in TRAIN_PHOTOS:
        img = getattr(skimage.data, name)()
        gray = rgb2gray(img[..., :3]) if img.ndim == 3 else img / 255.0
        top, left = (gray.shape[0] - CROP) // 2, (gray.shape[1] - CROP) // 2
        crops.append(gray[top:top + CROP, left:left + CROP])
    return torch.from_numpy(np.stack(crops)[:, None].astype(np.float64))


def degrade(clean: torch.Tensor, kernels: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Circular blur, Gaussian noise and 8-bit rounding, as the benchmark protocol degrades."""
    from dgunet.physics import Blur

    y = Blur(kernels, padding="circular").A(clean)
    rng = np.random.default_rng([SEED, seed, round(sigma * 1e6)])
    y = y + sigma * torch.from_numpy(rng.standard_normal(tuple(y.shape)))
    return torch.round(y.clamp(0, 1) * 255) / 255


def mean_psnr(x: torch.Tensor, clean: torch.Tensor) -> float:
    mse = (x.clamp(0, 1) - clean).pow(2).mean(dim=(-3, -2, -1))
    return float((-10 * torch.log10(mse)).mean())


def golden_max(f, lo: float, hi: float, steps: int) -> tuple[float, float]:
    """(argmax, max) of a unimodal f on [lo, hi] by golden-section search."""
    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa > fb:
            hi, b, fb = b, a, fa
            a = hi - GOLDEN * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + GOLDEN * (hi - lo)
            fb = f(b)
    return (a, fa) if fa > fb else (b, fb)


def cases(kind: str, crops: torch.Tensor):
    """(sigma, clean (N,1,H,W), kernels (N,1,k,k), y) per noise level of `kind`."""
    rng = np.random.default_rng(SEED)
    if kind == "blur":
        kernels = torch.from_numpy(np.stack([random_kernel(rng, list(KERNEL_KINDS), 25)
                                             for _ in range(len(crops) * KERNELS_PER_PHOTO)]))[:, None]
        clean, sigmas = crops.repeat(KERNELS_PER_PHOTO, 1, 1, 1), BLUR_SIGMAS
    else:
        kernels, clean, sigmas = torch.ones(len(crops), 1, 1, 1, dtype=torch.float64), crops, NOISE_SIGMAS
    for i, sigma in enumerate(sigmas):
        yield sigma, clean, kernels, degrade(clean, kernels, sigma, i)


def tune_hyper_laplacian(kind: str, crops: torch.Tensor) -> dict:
    rows = []
    for sigma, clean, kernels, y in cases(kind, crops):
        def score(log_lam, y=y, kernels=kernels, clean=clean):
            return mean_psnr(hyper_laplacian_deconvolve(y, kernels, math.exp(log_lam)), clean)

        log_lam, best = golden_max(score, *LOG_LAM_RANGE, GOLDEN_STEPS)
        from dgunet.physics import Blur, GaussianNoise

        rule = Blur(kernels, noise_model=GaussianNoise(torch.full((len(y),), sigma))).A_dagger(y)
        rule = y if kind == "noise" else rule  # A_dagger of the identity is y itself
        rows.append({"sigma": sigma, "lam": math.exp(log_lam), "psnr": best,
                     "adagger_psnr": mean_psnr(rule, clean), "input_psnr": mean_psnr(y, clean)})
        print(f"  {kind} sigma {sigma:.4f}: lam {rows[-1]['lam']:.3e}, PSNR {best:.2f} dB "
              f"(A_dagger {rows[-1]['adagger_psnr']:.2f}, input {rows[-1]['input_psnr']:.2f})", flush=True)
    log_sigma = np.log([math.sqrt(r["sigma"] ** 2 + QUANTISATION_VAR) for r in rows])
    slope, intercept = np.polyfit(log_sigma, np.log([r["lam"] for r in rows]), 1)
    return {"log_lam": float(intercept), "slope": float(slope), "levels": rows}


def tune_nlm(crops: torch.Tensor) -> dict:
    from skimage.restoration import denoise_nl_means

    levels = list(cases("noise", crops))
    table = {}
    for factor in NLM_FACTORS:
        per_level = []
        for sigma, clean, _kernels, y in levels:
            s = math.sqrt(sigma**2 + QUANTISATION_VAR)
            out = np.stack([denoise_nl_means(img[0], h=factor * s, sigma=s, patch_size=5, patch_distance=6,
                                             fast_mode=True) for img in y.numpy()])
            per_level.append(mean_psnr(torch.from_numpy(out)[:, None], clean))
        table[factor] = per_level
        print(f"  nlm h = {factor} sigma: " + ", ".join(f"{p:.2f}" for p in per_level), flush=True)
    best = max(table, key=lambda f: float(np.mean(table[f])))
    return {"factor": best, "psnr_per_factor": {str(f): v for f, v in table.items()},
            "sigmas": [s for s, *_ in levels]}


def tune_tv_cs(crops: torch.Tensor) -> dict:
    """lam per CS ratio (percent) for noiseless block CS with the fixed orthonormal matrix (seed 0)."""
    from dgunet.baselines.tv import tv_reconstruct
    from dgunet.physics import CompressedSensing

    lams, rows = {}, []
    for percent in CS_PERCENTS:
        op = CompressedSensing(percent / 100).double()
        y = op.A(crops)

        def score(log_lam, y=y, op=op):
            return mean_psnr(tv_reconstruct(y, op, math.exp(log_lam)), crops)

        log_lam, best = golden_max(score, *TV_LOG_LAM_RANGE, TV_GOLDEN_STEPS)
        lams[percent] = math.exp(log_lam)
        rows.append({"percent": percent, "lam": lams[percent], "psnr": best,
                     "start_psnr": mean_psnr(op.A_adjoint(y), crops)})
        print(f"  tv-cs {percent}%: lam {lams[percent]:.3e}, PSNR {best:.2f} dB (Phi^T y "
              f"{rows[-1]['start_psnr']:.2f})", flush=True)
    return {"lam": lams, "levels": rows}


def current_constants() -> dict:
    """The constants tuned.py holds now, in the shape the tune_* functions return."""
    return {"blur": {"log_lam": tuned.LOG_LAM["blur"], "slope": tuned.LAM_SLOPE["blur"]},
            "noise": {"log_lam": tuned.LOG_LAM["noise"], "slope": tuned.LAM_SLOPE["noise"]},
            "nlm": {"factor": tuned.NLM_H_FACTOR}, "tv-cs": {"lam": dict(tuned.TV_CS_LAM)}}


def tuned_text(result: dict) -> str:
    doc = tuned.__doc__.strip()
    blur, noise = result["blur"], result["noise"]
    tv = ", ".join(f"{p}: {lam:.4e}" for p, lam in sorted(result["tv-cs"]["lam"].items()))
    return (f'"""{doc}\n"""\n\n'
            f'LOG_LAM = {{"blur": {blur["log_lam"]:.4f}, "noise": {noise["log_lam"]:.4f}}}\n'
            f'LAM_SLOPE = {{"blur": {blur["slope"]:.4f}, "noise": {noise["slope"]:.4f}}}\n'
            f'NLM_H_FACTOR = {result["nlm"]["factor"]}\n'
            f'TV_CS_LAM = {{{tv}}}  # percent -> lam\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {TUNED_FILE}")
    parser.add_argument("--json", type=Path, help="also write every tuned level to this JSON file")
    parser.add_argument("--only", nargs="+", choices=SOLVERS, default=list(SOLVERS),
                        help="tune these solvers only (the others keep tuned.py's constants)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    crops = training_crops()
    result = current_constants()
    if "hyperlaplacian" in args.only:
        result["blur"] = tune_hyper_laplacian("blur", crops)
        result["noise"] = tune_hyper_laplacian("noise", crops)
    if "nlm" in args.only:
        result["nlm"] = tune_nlm(crops)
    if "tv-cs" in args.only:
        result["tv-cs"] = tune_tv_cs(crops)
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = tuned_text(result)
    print(text)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")
    if args.write:
        write_text_atomic(TUNED_FILE, text)
        print(f"wrote {TUNED_FILE}")
    print(f"{result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
