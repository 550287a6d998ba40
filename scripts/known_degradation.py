"""Evidence that the known-operator gradient step pays (docs/known_degradation.md).

On photos that scikit-image ships, with equal parameters and an equal training budget (the same
number of optimizer steps on the same samples), this script trains on a CPU with the real
`train.py` and the task configs:
  deblur-known    Deblurring/training_nonblind.yml, MODEL.GRADIENT known (r/L step, noise-aware)
  deblur-blind    the same, MODEL.GRADIENT learned (the published, blind step)
  cs-fixed        Compressive_Sensing/training.yml at 25%, PHI fixed (orthonormal Gaussian rows)
  cs-learned      the same with the published learned Phi
  cs-fixed-tv     cs-fixed with the stages started from FISTA-TV (MODEL.START tv); -tv96 on 96x96
                  crops (batch 4), -tv96w also with the stage weights [1, 0.02 x 6]
then tests them on held-out photos: deblurring on the fixed benchmark cases of `dgunet.benchmarks`
(12 kernels never drawn in training, noise 1% and 3%) next to the classical baselines of
dgunet.baselines, all with the true kernel (flat-spectrum Wiener, the operator's regularised
inverse A_dagger with its rule and with eps chosen per image on the ground truth (oracle), the
hyper-Laplacian HQS tuned on training photos); CS on the Y channel of the same photos against
each model's own start (Phi^T y or FISTA-TV) and FISTA-TV (tuned, and oracle); both per stage.
SR x2/x3/x4 are scored with the shipped models (pretrained/) per stage, Gaussian denoising's
classical rows are listed; the shipped models' learning curves are scripts/learning_curves.py's
(the same page). Writes the tables, per-stage curves and a stage strip.

    python scripts/known_degradation.py --out known_out            # ~2 h on 2 cores
    python scripts/known_degradation.py --out /tmp/k --quick       # a few steps: checks the plumbing
    python scripts/known_degradation.py --out /tmp/b --baselines-only   # the classical rows (~3 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dgunet.bench import cpu_description
from dgunet.benchmarks import TRAIN_PHOTOS

REPO = Path(__file__).resolve().parents[1]
WIDTHS = ["MODEL.N_FEAT", "16", "MODEL.SCALE_UNETFEATS", "8", "MODEL.SCALE_ORSNETFEATS", "8"]


def budget(name: str, quick: bool) -> dict[str, str]:
    """The same number of steps for the two models of a pair. Image tasks: EPOCHS * photos *
    LENGTH_MULTIPLIER / BATCH_SIZE = 5 * 13 * 32 / 4 = 520; CS: EPOCHS * photos * CROPS_PER_IMAGE /
    32 = 5 * 13 * 256 / 32 = 520 steps of 32 blocks."""
    if name.startswith("cs"):
        crops = 32 if name.startswith("cs-fixed-tv96") else 256  # 5 * 13 * 32 / batch 4 = 520 steps too
        return {"OPTIM.NUM_EPOCHS": "1" if quick else "5", "DATA.CROPS_PER_IMAGE": "8" if quick else str(crops)}
    if quick:
        return {"OPTIM.NUM_EPOCHS": "1", "DATA.LENGTH_MULTIPLIER": "1"}  # 13 / 4 = 3 steps
    return {"OPTIM.NUM_EPOCHS": "5", "DATA.LENGTH_MULTIPLIER": "32"}


IMAGE_OPTS = ["OPTIM.BATCH_SIZE", "4", "TRAIN.PATCH_SIZE", "64"]
CS_OPTS = ["OPTIM.BATCH_SIZE", "32", "TRAIN.PATCH_SIZE", "32", "MODEL.CS_RATIO", "25"]
RUNS = {  # name: (task folder, config, extra opts)
    "deblur-known": ("Deblurring", "training_nonblind.yml", [*IMAGE_OPTS, "MODEL.GRADIENT", "known"]),
    "deblur-blind": ("Deblurring", "training_nonblind.yml",
                     [*IMAGE_OPTS, "MODEL.GRADIENT", "learned", "MODEL.NOISE_AWARE", "false"]),
    "cs-fixed": ("Compressive_Sensing", "training.yml", [*CS_OPTS, "MODEL.PHI", "fixed"]),
    "cs-learned": ("Compressive_Sensing", "training.yml", [*CS_OPTS, "MODEL.PHI", "learned"]),
    # the fixed Phi with the stages started from FISTA-TV (dgunet.models.cs, start="tv")
    "cs-fixed-tv": ("Compressive_Sensing", "training.yml",
                    [*CS_OPTS, "MODEL.PHI", "fixed", "MODEL.START", "tv"]),
    # the same on 96x96 crops (3x3 blocks, batch 4: as many pixels per step), so that TV sees
    # neighbouring blocks in training as it does on whole test images
    "cs-fixed-tv96": ("Compressive_Sensing", "training.yml",
                      [*CS_OPTS, "MODEL.PHI", "fixed", "MODEL.START", "tv", "OPTIM.BATCH_SIZE", "4",
                       "TRAIN.PATCH_SIZE", "96"]),
    # ... and with the known recipes' stage weights (the loss is mostly the output's)
    "cs-fixed-tv96w": ("Compressive_Sensing", "training.yml",
                       [*CS_OPTS, "MODEL.PHI", "fixed", "MODEL.START", "tv", "OPTIM.BATCH_SIZE", "4",
                        "TRAIN.PATCH_SIZE", "96", "LOSS.STAGE_WEIGHTS",
                        "[1.0, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02]"]),
}


# ---------------------------------------------------------------- data and training

def write_training_photos(folder: Path) -> None:
    """The training photos as PNGs (gray ones repeated over RGB); none of them is a test photo."""
    import skimage.data

    from dgunet.data.io import save_png_atomic

    for name in TRAIN_PHOTOS:
        path = folder / f"{name}.png"
        if not path.exists():
            img = getattr(skimage.data, name)()
            img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
            save_png_atomic(path, np.ascontiguousarray(img))


def train_command(name: str, out: Path, quick: bool) -> list[str]:
    folder, config, extra = RUNS[name]
    opts = [*WIDTHS, "OPTIM.SCHEDULE", "constant", "OPTIM.LR_INITIAL", "3e-4", "TRAIN.WORKERS", "0",
            "TRAIN.SAVE_EVERY", "0", "TRAIN.PRINT_EVERY", "50", "DATA.TRAIN_DIR", str(out / "train_photos"),
            "DATA.VAL_DIR", "", "OUTPUT.DIR", str(out / "runs"), "OUTPUT.NAME", name,
            "OUTPUT.TENSORBOARD", "false", *extra]
    for key, value in budget(name, quick).items():
        opts += [key, value]
    return [sys.executable, str(REPO / folder / "train.py"), "--config", str(REPO / folder / config),
            "--fast", "--opts", *opts]


def train_all(out: Path, quick: bool) -> dict[str, float]:
    """Two trainings at a time, one thread each (the 2 cores of a CI machine); returns seconds per run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    names, seconds, running = list(RUNS), {}, []
    while names or running:
        while names and len(running) < 2:
            name = names.pop(0)
            if (out / "runs" / name / "model_latest.pth").exists() and not quick:
                seconds[name] = json.loads((out / "runs" / name / "seconds.json").read_text())["seconds"]
                continue  # trained by an earlier call: the script is rerun-safe
            log = open(out / f"{name}.log", "w")  # noqa: SIM115 (closed when the process ends)
            running.append((name, subprocess.Popen(train_command(name, out, quick), env=env, stdout=log,
                                                   stderr=subprocess.STDOUT), log, time.perf_counter()))
        for item in list(running):
            name, proc, log, start = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            if proc.returncode != 0:
                raise SystemExit(f"training {name} failed (exit {proc.returncode}); see {out}/{name}.log")
            seconds[name] = round(time.perf_counter() - start, 1)
            (out / "runs" / name / "seconds.json").write_text(json.dumps({"seconds": seconds[name]}))
        time.sleep(1)
    return seconds


def load(name: str, out: Path) -> torch.nn.Module:
    """The trained model; widths and options (noise-aware stages, Phi) read from the checkpoint."""
    from dgunet.testrun.loading import checkpoint_config, load_model

    path = out / "runs" / name / "model_latest.pth"
    return load_model(checkpoint_config(path).MODEL.TASK, path).model.eval()


# ---------------------------------------------------------------- evaluation

def to_uint8(x: torch.Tensor) -> np.ndarray:
    from dgunet.data.io import to_uint8 as convert

    return convert(x[0].clamp(0, 1))


def score(protocol: str, pred: torch.Tensor, clean: np.ndarray) -> float:
    """The PSNR of a protocol of dgunet.metrics ("nonblind": RGB, peak 255; "sr_x4": Y, border 4)."""
    from dgunet.metrics.protocols import get_protocol
    from dgunet.metrics.psnr import psnr

    if protocol == "nonblind":  # RGB PSNR alone: the protocol's 3-D SSIM would dominate the run time
        return psnr(to_uint8(pred), clean, 255.0)
    return get_protocol(protocol).score(to_uint8(pred), clean, ("restored", "clean"))[0]


# table label -> dgunet.baselines method (all with the true kernel; --method of the test protocols)
DEBLUR_BASELINES = {
    "Wiener, flat spectrum (true kernel)": "wiener-flat",
    "A_dagger(y), its rule (the known model's start)": "adagger",
    "A_dagger family, eps per image on the ground truth (oracle)": "adagger-oracle",
    "hyper-Laplacian HQS (Krishnan-Fergus, tuned on training photos)": "hyperlaplacian",
}
DENOISE_BASELINES = {
    "gradient-regularised smoother, eps per image on the ground truth (oracle)": "adagger-oracle",
    "hyper-Laplacian HQS (tuned on training photos)": "hyperlaplacian",
    "non-local means (scikit-image, h tuned on training photos)": "nlm",
}


def baseline_rows(methods: dict[str, str], y: torch.Tensor, op, params: dict) -> dict[str, torch.Tensor]:
    from dgunet.baselines import BASELINES

    return {label: BASELINES[name](y, op, params) for label, name in methods.items()}


@torch.no_grad()
def evaluate_denoising_baselines(limit: int | None = None) -> dict:
    """Mean RGB PSNR of the classical denoisers per noise level (sigma on 0..255) on the test photos."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images

    seed, table = protocol()["noise_seed"], {}
    photos = photo_images()[:limit]
    for case in cases("gaussian"):
        row: dict[str, list[float]] = {}
        for stem, photo in photos:
            clean, y, op, params = degrade_case(case, photo, stem, seed)
            for method, pred in {"input y": y, **baseline_rows(DENOISE_BASELINES, y, op, params)}.items():
                row.setdefault(method, []).append(score("nonblind", pred, clean))
        table[case.name] = {m: float(np.mean(v)) for m, v in row.items()}
    return table


@torch.no_grad()
def evaluate_deblurring_baselines(limit: int | None = None) -> dict:
    """Mean RGB PSNR of the classical deconvolutions per noise level: the rows of evaluate_deblurring
    without the models."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images

    seed, table = protocol()["noise_seed"], {}
    photos = photo_images()[:limit]
    for case in cases("nonblind")[:limit]:
        row = table.setdefault(f"{case.sigma * 100:g}%", {})
        for stem, photo in photos:
            clean, y, op, params = degrade_case(case, photo, stem, seed)
            for method, pred in {"input y": y, **baseline_rows(DEBLUR_BASELINES, y, op, params)}.items():
                row.setdefault(method, []).append(score("nonblind", pred, clean))
    return {level: {m: float(np.mean(v)) for m, v in row.items()} for level, row in table.items()}


@torch.no_grad()
def evaluate_bicubic() -> dict:
    """The Bicubic row on the test photos, x2 / x3 / x4 (Y, border s)."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images

    seed, out = protocol()["noise_seed"], {}
    for case in cases("sr"):
        scores = [score(f"sr_x{case.scale}", op.A_dagger(y), clean)
                  for clean, y, op, _ in (degrade_case(case, p, s, seed) for s, p in photo_images())]
        out[case.name] = float(np.mean(scores))
    return out


def baselines_only(out: Path) -> int:
    """Every classical row of the page, no training: deblurring, denoising, bicubic."""
    from dgunet.atomic import write_text_atomic

    start = time.perf_counter()
    result = {"deblurring": evaluate_deblurring_baselines(), "denoising": evaluate_denoising_baselines(),
              "bicubic": evaluate_bicubic()}
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["cpu"] = f"{cpu_description()}, {os.cpu_count()} cores"
    write_text_atomic(out / "baselines.json", json.dumps(result, indent=2) + "\n")
    for kind in ("deblurring", "denoising"):
        for level, row in result[kind].items():
            print(f"{kind} {level}: " + ", ".join(f"{m} {v:.2f}" for m, v in row.items()))
    print("bicubic: " + ", ".join(f"{k} {v:.2f}" for k, v in result["bicubic"].items()))
    print(f"{out / 'baselines.json'}; {result['seconds']:.0f} s on {result['cpu']}")
    return 0


@torch.no_grad()
def evaluate_deblurring(known: torch.nn.Module, blind: torch.nn.Module, limit: int | None = None) -> dict:
    """Mean RGB PSNR per method and noise level, and the per-stage PSNR / residual of the two models."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images

    seed = protocol()["noise_seed"]
    table: dict[float, dict[str, list[float]]] = {}
    stages = {"known": [], "blind": []}
    residual = {"known": [], "blind": []}
    photos = photo_images()[:limit]  # read and cropped once, degraded by every case
    for case in cases("nonblind")[:limit]:
        for stem, photo in photos:
            clean, y, op, params = degrade_case(case, photo, stem, seed)
            row = table.setdefault(case.sigma, {})
            outs = {"known": known(y, physics=op), "blind": blind(y)}
            preds = {"input y": y, **baseline_rows(DEBLUR_BASELINES, y, op, params),
                     "DGUNet blind (learned step)": outs["blind"][0],
                     "DGUNet known (A, A^T given)": outs["known"][0]}
            for method, pred in preds.items():
                row.setdefault(method, []).append(score("nonblind", pred, clean))
            for kind, out in outs.items():
                ordered = list(reversed(out[1:])) + [out[0]]  # stage 1 .. 7
                stages[kind].append([score("nonblind", s, clean) for s in ordered])
                residual[kind].append([float((op.A(s) - y).pow(2).mean().sqrt()) for s in ordered])
    means = {f"{s * 100:g}%": {m: float(np.mean(v)) for m, v in row.items()} for s, row in table.items()}
    return {"table": means, "stage_psnr": {k: np.mean(v, axis=0).tolist() for k, v in stages.items()},
            "stage_residual": {k: np.mean(v, axis=0).tolist() for k, v in residual.items()}}


@torch.no_grad()
def evaluate_sr(models: dict[int, torch.nn.Module], limit: int | None = None) -> dict:
    """Bicubic and the shipped SR models (Y, border s), with the model's PSNR per stage."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images, run_model

    seed = protocol()["noise_seed"]
    out = {}
    for scale, model in models.items():
        (case,) = cases("sr", scales=[scale])
        rows: dict[str, list[float]] = {}
        stages = []
        for stem, photo in photo_images()[:limit]:
            clean, y, op, _params = degrade_case(case, photo, stem, seed)
            outputs = run_model(model, y, op, stages=True)
            rows.setdefault("bicubic", []).append(score(f"sr_x{scale}", op.A_dagger(y), clean))
            rows.setdefault("DGUNet known", []).append(score(f"sr_x{scale}", outputs[0], clean))
            stages.append([score(f"sr_x{scale}", s, clean) for s in [*reversed(outputs[1:]), outputs[0]]])
        out[f"x{scale}"] = {**{m: float(np.mean(v)) for m, v in rows.items()},
                            "stage_psnr": np.mean(stages, axis=0).tolist()}
    return out


def shipped_sr_models() -> dict[int, torch.nn.Module]:
    """scale -> the shipped SR model of pretrained/ (none when nothing ships)."""
    from dgunet.pretrained import load_pretrained, read_manifest

    return {e.scale: load_pretrained(e.name) for e in read_manifest().values() if e.task == "sr"}


def cs_test_images(limit: int | None = None) -> list[torch.Tensor]:
    """The Y channel of the held-out photos as CS trains on it (BT.601 studio range, uint8, / 255),
    (1,1,H,W); H, W multiples of 32."""
    from dgunet.metrics.color import rgb_to_y_studio
    from dgunet.testrun.known import photo_images

    out = []
    for _stem, photo in photo_images()[:limit]:
        y = rgb_to_y_studio(photo).astype(np.float64) / 255.0
        h, w = (y.shape[0] // 32) * 32, (y.shape[1] // 32) * 32
        out.append(torch.from_numpy(np.ascontiguousarray(y[:h, :w])).float()[None, None])
    return out


@torch.no_grad()
def evaluate_cs(models: dict[str, torch.nn.Module], limit: int | None = None) -> dict:
    """PSNR (Y, [0,1] peak 1) of each model's start (Phi^T y, or FISTA-TV), its 7 stages and its output."""
    from dgunet.metrics.psnr import psnr_torch as psnr01
    from dgunet.models.cs import Measurements

    result = {}
    for name, model in models.items():
        starts, stages = [], []
        for img in cs_test_images(limit):
            meas = Measurements(model.Phi, img)
            starts.append(psnr01(model.start_estimate(img, meas), img))
            out = model(img)
            stages.append([psnr01(s, img) for s in [*reversed(out[1:]), out[0]]])
        per_stage = np.mean(stages, axis=0).tolist()
        result[name] = {"Phi^T y (start)": float(np.mean(starts)), "stage_psnr": per_stage,
                        "output": per_stage[-1]}
    return result


@torch.no_grad()
def cs_classical(limit: int | None = None) -> dict:
    """FISTA-TV on the fixed orthonormal matrix at 25%, on the CS test images: lam tuned on training
    photos, and lam chosen per image on the ground truth (golden-section on log lam, the best any TV
    weight can do: an upper bound, not a method)."""
    from tune_baselines import golden_max  # this folder is on sys.path when the script runs

    from dgunet.baselines import tuned, tv_compressed_sensing
    from dgunet.baselines.tv import tv_reconstruct
    from dgunet.metrics.psnr import psnr_torch as psnr01
    from dgunet.physics import CompressedSensing

    op = CompressedSensing(0.25)
    centre = math.log(tuned.TV_CS_LAM[25])
    tuned_psnr, oracle_psnr = [], []
    for img in cs_test_images(limit):
        y = op.A(img.double())
        tuned_psnr.append(psnr01(tv_compressed_sensing(y, op).float().clamp(0, 1), img))

        def score(log_lam, y=y, img=img):
            return psnr01(tv_reconstruct(y, op, math.exp(log_lam)).float().clamp(0, 1), img)

        # the tuned lam is one of the weights the oracle may choose
        oracle_psnr.append(max(golden_max(score, centre - 2, centre + 2, 2 if limit else 8)[1], tuned_psnr[-1]))
    return {"FISTA-TV (tuned on training photos)": float(np.mean(tuned_psnr)),
            "FISTA-TV, lam per image on the ground truth (oracle)": float(np.mean(oracle_psnr))}


# ---------------------------------------------------------------- figures

def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from dgunet.atomic import atomic_open

    try:
        with atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_stages(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    k = range(1, 8)
    for kind, style in (("known", "o-"), ("blind", "s--")):
        left.plot(k, results["stage_psnr"][kind], style, label=f"DGUNet {kind}")
        right.semilogy(k, results["stage_residual"][kind], style, label=f"DGUNet {kind}")
    left.set(xlabel="stage k", ylabel="PSNR of x_k (dB)", title="Estimate quality per stage")
    right.set(xlabel="stage k", ylabel="RMS of A x_k - y", title="Data-consistency residual per stage")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def stage_strip(model: torch.nn.Module, protocol_name: str, case_name: str, title: str, path: Path) -> None:
    """One benchmark case on the first test photo: y, A_dagger(y), the 7 stages, the clean image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun.known import degrade_case, photo_images

    case = next(c for c in cases(protocol_name) if c.name == case_name)
    stem, photo = photo_images()[0]
    clean, y, op, _ = degrade_case(case, photo, stem, protocol()["noise_seed"])
    out = model(y, physics=op)
    panels = [("y", y), ("A_dagger(y)", op.A_dagger(y))]
    panels += [(f"stage {i + 1}, r = {r:.2f}", s) for i, (r, s) in
               enumerate(zip(model.step_sizes(), [*reversed(out[1:]), out[0]], strict=True))]
    panels.append(("clean x", torch.from_numpy(clean).permute(2, 0, 1)[None] / 255.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(2 * len(panels), 2.4))
    for ax, (label, img) in zip(axes, panels, strict=True):
        ax.imshow(img[0].clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set_xlabel(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"DGUNet with a known operator ({title}): x <- prox(x - r A^T(A x - y)), stage by stage",
                 fontsize=10)
    save_figure(fig, path)


# ---------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="known_out", help="output folder (default known_out)")
    parser.add_argument("--quick", action="store_true",
                        help="3 training steps per model, 2 kernels x 2 photos: a plumbing check")
    parser.add_argument("--figures", default=None, help="also copy the figures to this folder (e.g. figs)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="only the classical rows on the full benchmark (no training): baselines.json")
    args = parser.parse_args(argv)
    from dgunet.benchmarks import cases

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    start = time.perf_counter()
    out = Path(args.out).resolve()
    if args.baselines_only:
        out.mkdir(parents=True, exist_ok=True)
        return baselines_only(out)
    (out / "train_photos").mkdir(parents=True, exist_ok=True)
    write_training_photos(out / "train_photos")
    seconds = train_all(out, args.quick)
    limit = 2 if args.quick else None  # --quick: 2 kernels x 2 photos, enough to run every line
    deblur = evaluate_deblurring(load("deblur-known", out), load("deblur-blind", out), limit)
    cs = evaluate_cs({"fixed Phi": load("cs-fixed", out), "learned Phi": load("cs-learned", out),
                      "fixed Phi, TV start": load("cs-fixed-tv", out),
                      "fixed Phi, TV start, 96x96 crops": load("cs-fixed-tv96", out),
                      "fixed Phi, TV start, 96x96 crops, stage weights": load("cs-fixed-tv96w", out)}, limit)
    shipped_sr = shipped_sr_models()
    sr = evaluate_sr(dict(sorted(shipped_sr.items())), limit)
    denoise = evaluate_denoising_baselines(limit)
    figures = [out / "known_stages.png", out / "known_deblur_strip.png"]
    plot_stages(deblur, figures[0])
    stage_strip(load("deblur-known", out), "nonblind", "motion_03_noise1", "Blur, motion kernel, 1% noise",
                figures[1])
    if 4 in shipped_sr:
        figures.append(out / "known_sr4_strip.png")
        stage_strip(shipped_sr[4], "sr", next(c.name for c in cases("sr", scales=[4])),
                    "the shipped SR x4 model, bicubic", figures[2])
    if args.figures:
        from dgunet.atomic import write_bytes_atomic

        for fig in figures:
            write_bytes_atomic(Path(args.figures) / fig.name, fig.read_bytes())
    cs_baselines = cs_classical(limit)
    summary = {"deblurring": deblur, "cs_25": cs, "cs_25_classical": cs_baselines, "sr": sr,
               "denoising_baselines": denoise, "train_seconds": seconds,
               "total_seconds": round(time.perf_counter() - start, 1),
               "cpu": f"{cpu_description()}, {os.cpu_count()} cores", "torch": torch.__version__,
               "budget": {name: budget(name, args.quick) for name in RUNS}}
    from dgunet.atomic import write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    for level, row in deblur["table"].items():
        print(f"non-blind deblurring, noise {level}: " + ", ".join(f"{m} {v:.2f}" for m, v in row.items()))
    for scale, row in sr.items():
        print(f"SR {scale} (shipped model): bicubic {row['bicubic']:.2f}, DGUNet {row['DGUNet known']:.2f}")
    for level, row in denoise.items():
        print(f"Gaussian denoising {level}: " + ", ".join(f"{m} {v:.2f}" for m, v in row.items()))
    print("CS 25%, fixed Phi: " + ", ".join(f"{m} {v:.2f}" for m, v in cs_baselines.items()))
    for name, row in cs.items():
        print(f"CS 25%, {name}: start {row['Phi^T y (start)']:.2f}, stages "
              + " / ".join(f"{v:.2f}" for v in row["stage_psnr"]))
    print(f"{out / 'summary.json'}; {summary['total_seconds']:.0f} s on {summary['cpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
