"""`make demo`: watch a small DGUNet learn to denoise, with no data set and no GPU.

1. Build a paired data set from photos that scikit-image ships: Gaussian noise of sigma 25 on
   8-bit RGB. Training crops come from some photos; other photos are held out.
2. Train a reduced-width DGUNet with the real `Denoising/train.py` and `Denoising/demo.yml`
   (passed in with --train-script and --config: `make demo` names the checkout's).
3. Restore the held-out photos with the real test path and score them with the real metrics
   (RGB PSNR and MATLAB-style SSIM, the GoPro/SIDD protocol).
4. Write pictures to the output folder and print a table.
5. Show the shipped non-blind deblurring model (pretrained/) on one held-out photo with a benchmark
   kernel: y, its start A_dagger(y), the output and the clean image (shipped_deblurring.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgunet.atomic import atomic_open, write_bytes_atomic, write_text_atomic, writing
from dgunet.errors import ConfigError

NOISE_SIGMA = 25.0
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
# Held out: never seen in training. (name, top, left) of a 128x128 view.
HELD_OUT = (("chelsea", 40, 120), ("camera", 60, 200), ("retina", 600, 500))
VIEW = 128


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--epochs", type=int, default=None, help="override demo.yml's epochs")
    parser.add_argument("--opts", nargs="*", default=[], help="more KEY VALUE overrides for train.py")
    parser.add_argument("--train-script", help="the training script to run (make demo: Denoising/train.py)")
    parser.add_argument("--config", help="its recipe (make demo: Denoising/demo.yml)")


def training_files(args) -> tuple[Path, Path]:
    """(train.py, its yml) from --train-script and --config; ConfigError naming the fix when missing."""
    script, recipe = getattr(args, "train_script", None), getattr(args, "config", None)
    for flag, given in (("--train-script", script), ("--config", recipe)):
        if not given or not Path(given).is_file():
            raise ConfigError(f"demo {flag} {given or '(not given)'}: the demo trains with the checkout's "
                              f"Denoising/train.py and Denoising/demo.yml; run `make demo`, or pass "
                              f"--train-script Denoising/train.py --config Denoising/demo.yml")
    return Path(script).resolve(), Path(recipe).resolve()


def photo(name: str) -> np.ndarray:
    """An 8-bit RGB photo from skimage.data (gray photos repeated over 3 channels)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def add_noise(clean: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """uint8 HxWx3 -> uint8 with additive Gaussian noise of `sigma` (on 0..255), clipped, rounded."""
    noisy = clean.astype(np.float64) + rng.normal(0.0, sigma, clean.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def tiles(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Non-overlapping size x size tiles covering the image (the rest is dropped)."""
    h, w = img.shape[:2]
    return [img[y:y + size, x:x + size] for y in range(0, h - size + 1, size)
            for x in range(0, w - size + 1, size)]


def build_dataset(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write train/, val/ and heldout/ (each input/ + target/ PNGs) under `root`; idempotent."""
    from dgunet.data.io import save_png_atomic

    rng = np.random.default_rng(seed)
    folders = {split: root / split for split in ("train", "val", "heldout")}
    stamp = root / ".complete"
    if stamp.exists():
        return folders

    def write(split: str, name: str, clean: np.ndarray) -> None:
        save_png_atomic(folders[split] / "target" / f"{name}.png", clean)
        save_png_atomic(folders[split] / "input" / f"{name}.png", add_noise(clean, rng))

    for name in TRAIN_PHOTOS:
        img = photo(name)
        pieces = tiles(img, 96)
        for k, piece in enumerate(pieces):
            # One tile per photo validates during training; the rest train.
            write("val" if k == len(pieces) // 2 else "train", f"{name}_{k:03d}", piece)
    for name, top, left in HELD_OUT:
        write("heldout", name, photo(name)[top:top + VIEW, left:left + VIEW])
    write_text_atomic(stamp, "ok\n")
    return folders


def run_training(data: dict[str, Path], run_dir: Path, epochs: int | None, extra: list[str],
                 files: tuple[Path, Path]) -> Path:
    """The real train.py with its recipe (files: Denoising/train.py, demo.yml), in a child process.
    Returns the run folder.

    A previous demo run is removed first: the engine (rightly) refuses to start a fresh run
    over an existing one, and the demo always starts from scratch.
    """
    if run_dir.exists():
        _refuse_a_live_run(run_dir)
        shutil.rmtree(run_dir)
    opts = ["DATA.TRAIN_DIR", str(data["train"]), "DATA.VAL_DIR", str(data["val"]),
            "OUTPUT.DIR", str(run_dir.parent), "OUTPUT.NAME", run_dir.name]
    if epochs is not None:
        opts += ["OPTIM.NUM_EPOCHS", str(epochs)]
    script, recipe = files
    command = [sys.executable, str(script), "--config", str(recipe), "--opts", *opts, *extra]
    print(f"training: python {script} --config {recipe}", flush=True)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        from dgunet.errors import DGUNetError

        raise DGUNetError(f"demo training failed (exit {done.returncode}); see the messages above")
    return run_dir


def _refuse_a_live_run(run_dir: Path) -> None:
    """ConfigError naming the PID when another demo is training in `run_dir` (we would delete its files)."""
    from dgunet.engine.lock import RunLock

    lock = RunLock(run_dir)
    lock.acquire()
    lock.release()


@dataclass
class Scores:
    psnr_in: float
    psnr_out: float
    ssim_in: float
    ssim_out: float


def restore_and_score(weights: Path, heldout: Path, out_dir: Path):
    """Restore heldout/input with the test path; score input and output against heldout/target."""
    from dgunet.evaluate import evaluate_folders
    from dgunet.testrun.context import Context
    from dgunet.testrun.loading import load_model
    from dgunet.testrun.paired import restore_folder

    loaded = load_model("denoising", str(weights), None, {}, None, "cpu")
    ctx = Context("denoising", loaded.model, loaded.arch, log=lambda _: None)
    restore_folder(ctx, heldout / "input", out_dir)
    before = evaluate_folders("gopro", heldout / "input", heldout / "target")
    after = evaluate_folders("gopro", out_dir, heldout / "target")
    return loaded.model, before, after


def side_by_side(noisy: Path, restored: Path, clean: Path, out: Path, gap: int = 4) -> None:
    """degraded | restored | clean in one PNG, separated by white gaps."""
    from dgunet.data.io import read_image, save_png_atomic

    imgs = [read_image(p) for p in (noisy, restored, clean)]
    h = imgs[0].shape[1]
    import torch

    white = torch.ones(3, h, gap)
    row = torch.cat([imgs[0], white, imgs[1], white, imgs[2]], dim=2)
    save_png_atomic(out, row)


def stage_strip(model, noisy_path: Path, out: Path) -> list[float]:
    """The 7 stage estimates of one image, left to right, with r_k printed under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dgunet.data.io import read_image
    from dgunet.inference import pad_to_multiple

    image = read_image(noisy_path).unsqueeze(0)
    padded, (h, w) = pad_to_multiple(image, model.size_multiple, min_size=model.min_size)
    with torch.inference_mode():
        stages = [s[0, :, :h, :w].clamp(0, 1) for s in reversed(model(padded))]  # stage 1 first
    steps = model.step_sizes()
    fig, axes = plt.subplots(1, 8, figsize=(16, 3.1))
    panels = [("input y", image[0])] + [(f"stage {k + 1}\nr = {r:.3f}", s)
                                        for k, (r, s) in enumerate(zip(steps, stages, strict=True))]
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_xlabel(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("DGUNet unfolded: each stage is one proximal gradient step "
                 "x <- prox(x - r * phi^T(phi(x) - y))", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_open(out) as f:
            fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return steps


def print_table(before, after) -> Scores:
    rows = {s.name: s for s in before.images}
    print(f"\n{'image':<12} {'PSNR in':>8} {'PSNR out':>9} {'SSIM in':>8} {'SSIM out':>9}")
    for s in after.images:
        b = rows[s.name]
        print(f"{s.name:<12} {b.psnr:8.2f} {s.psnr:9.2f} {b.ssim:8.4f} {s.ssim:9.4f}")
    scores = Scores(before.psnr, after.psnr, before.ssim, after.ssim)
    print(f"{'mean':<12} {scores.psnr_in:8.2f} {scores.psnr_out:9.2f} {scores.ssim_in:8.4f} "
          f"{scores.ssim_out:9.4f}")
    print(f"gain: {scores.psnr_out - scores.psnr_in:+.2f} dB PSNR, "
          f"{scores.ssim_out - scores.ssim_in:+.4f} SSIM")
    return scores


def copy_file(src: Path, dst: Path) -> None:
    if src.exists():
        write_bytes_atomic(dst, src.read_bytes())


def shipped_deblurring_picture(out: Path, case_name: str = "motion_03_noise1") -> dict | None:
    """The shipped non-blind model on one held-out photo: y, its start A_dagger(y), the output, the
    clean image, side by side with their PSNR (shipped_deblurring.png). None when nothing ships."""
    import torch

    from dgunet.benchmarks import cases, protocol
    from dgunet.data.io import save_png_atomic, to_uint8
    from dgunet.errors import DGUNetError
    from dgunet.metrics.psnr import psnr
    from dgunet.pretrained import load_pretrained
    from dgunet.testrun.known import degrade_case, photo_images, run_model

    try:
        model = load_pretrained("deblurring")
    except DGUNetError as err:
        print(f"shipped non-blind model: skipped ({err})")
        return None
    case = next(c for c in cases("nonblind") if c.name == case_name)
    stem, clean = photo_images()[1]
    clean, y, op, _params = degrade_case(case, clean, stem, protocol()["noise_seed"])
    with torch.no_grad():
        panels = {"y": y[0], "start": op.A_dagger(y)[0], "output": run_model(model, y, op)[0]}
    scores = {name: round(psnr(to_uint8(img.clamp(0, 1)), clean), 2) for name, img in panels.items()}
    white = torch.ones(3, clean.shape[0], 4)
    row = [part for img in [*panels.values(), torch.from_numpy(clean).permute(2, 0, 1) / 255.0]
           for part in (img.clamp(0, 1), white)][:-1]
    save_png_atomic(out / "shipped_deblurring.png", torch.cat(row, dim=2))
    print(f"shipped non-blind model on {stem}, {case_name}: y {scores['y']:.2f} dB, start A_dagger(y) "
          f"{scores['start']:.2f} dB, output {scores['output']:.2f} dB -> {out / 'shipped_deblurring.png'}")
    return scores


def run(args) -> int:
    start = time.perf_counter()
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be 1 or more, got {args.epochs}")
    out = Path(args.out).resolve()
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    files = training_files(args)
    data = build_dataset(out / "data")
    run_dir = run_training(data, out / "train" / "demo", args.epochs, args.opts, files)
    weights = run_dir / "model_best.pth"
    if not weights.exists():
        weights = run_dir / "model_latest.pth"
    restored_dir = out / "restored"
    model, before, after = restore_and_score(weights, data["heldout"], restored_dir)
    scores = print_table(before, after)

    for name, *_ in HELD_OUT:
        side_by_side(data["heldout"] / "input" / f"{name}.png", restored_dir / f"{name}.png",
                     data["heldout"] / "target" / f"{name}.png", out / f"side_by_side_{name}.png")
    steps = stage_strip(model, data["heldout"] / "input" / f"{HELD_OUT[0][0]}.png", out / "stages.png")
    copy_file(run_dir / "curves.png", out / "curves.png")
    copy_file(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    shipped_deblurring_picture(out)
    seconds = time.perf_counter() - start
    summary = {"psnr_in": round(scores.psnr_in, 4), "psnr_out": round(scores.psnr_out, 4),
               "ssim_in": round(scores.ssim_in, 4), "ssim_out": round(scores.ssim_out, 4),
               "seconds": round(seconds, 1)}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"learned step sizes r_1..r_7: {', '.join(f'{r:.3f}' for r in steps)}")
    print(f"pictures: {out}/side_by_side_*.png, stages.png, curves.png; summary.json "
          f"({seconds:.0f} s)")
    return 0
