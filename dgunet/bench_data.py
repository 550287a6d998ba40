"""`python -m dgunet bench --data`: images/s of the training data loader alone.

The task's real pipeline (its training.yml, `engine.data.train_set` and `train_loader`):
decode, crop, augment, collate, for 0..N worker processes. Without --data-dir it writes a
stand-in training set of the published image sizes (GoPro frames are 1280x720 PNGs; Rain13K
pairs about 512x384; SIDD patches 256x256; the CS set is cached in memory) as PNGs cut from
photos, so that decoding costs what it costs on the real files.

The rule (docs/training.md, "Feeding the GPU"): a loader keeps up when its images/s exceeds
the training images/s; with w workers it delivers about w x (one worker's rate) until the CPU
cores run out, so a GPU step rate of R images/s needs ceil(R / one worker's rate) workers,
plus one for the jitter of decoding.

    python -m dgunet bench --data --task deblurring --workers 8 [--data-dir Deblurring/Datasets/train]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dgunet.config import load_config
from dgunet.data.io import list_images
from dgunet.engine.data import train_loader, train_set
from dgunet.engine.distributed import DistEnv, batch_plan
from dgunet.errors import ConfigError

TASK_DIRS = {"deblurring": "Deblurring", "deraining": "Deraining", "denoising": "Denoising",
             "cs": "Compressive_Sensing"}
# (width, height) of the published training images
STAND_IN_SIZES = {"deblurring": (1280, 720), "deraining": (512, 384), "denoising": (256, 256), "cs": (480, 320)}


def write_stand_in(root: Path, task: str, count: int, size: tuple[int, int] | None = None) -> Path:
    """`count` training images (pairs for the image tasks) of the task's published size under root."""
    from skimage import data

    w, h = size or STAND_IN_SIZES[task]
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    for i in range(count):
        clean = cv2.resize(photos[i % 3][..., ::-1], (w, h), interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng(i).normal(0, 4, clean.shape)  # camera-like texture, as PNGs have
        clean = np.clip(clean + noise, 0, 255).astype(np.uint8)
        if task == "cs":
            (root).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"img{i:03d}.png"), clean)
            continue
        for sub, img in (("target", clean), ("input", cv2.GaussianBlur(clean, (7, 7), 2))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / sub / f"img{i:03d}.png"), img)
    return root


def task_config(task: str, data_dir: Path, batch: int, workers: int, repeat: int = 1,
                cache: Path | None = None):
    """The task's training.yml with the given data folder, batch, workers, data repetition, decode cache."""
    yml = Path(__file__).resolve().parents[1] / TASK_DIRS[task] / "training.yml"
    data = {"TRAIN_DIR": str(data_dir.resolve()), "DECODE_CACHE": str(cache or "")}
    if task == "cs":
        data["CROPS_PER_IMAGE"] = repeat * 200
    else:
        data["LENGTH_MULTIPLIER"] = repeat
    overrides = {"MODEL": {"TASK": task}, "OPTIM": {"BATCH_SIZE": batch}, "TRAIN": {"WORKERS": workers},
                 "DATA": data}
    return load_config(yml if yml.is_file() else None, overrides=overrides)


def skipped_batches(workers: int, prefetch: int = 2) -> int:
    """Batches to take before timing: the first (worker start-up) and those the workers
    prepared meanwhile (DataLoader's prefetch_factor of 2 per worker), which arrive at once."""
    return 1 + prefetch * workers


def loader_rate(task: str, data_dir: Path, batch: int, workers: int, batches: int, cache: Path | None = None
                ) -> float:
    """Steady-state images/s of the training loader over `batches` batches."""
    need = (skipped_batches(workers) + batches) * batch
    files = len(list_images(data_dir)) or len(list_images(data_dir / "target"))
    repeat = max(1, math.ceil(need / max(files, 1)))
    cfg = task_config(task, data_dir, batch, workers, repeat=repeat, cache=cache)
    dataset = train_set(cfg)
    loader, sampler = train_loader(dataset, batch_plan(batch, 1, 1), DistEnv(), cfg, torch.device("cpu"))
    sampler.set_epoch(1)
    dataset.set_epoch(1)
    it = iter(loader)
    for _ in range(skipped_batches(workers)):
        next(it)
    start = time.perf_counter()
    seen = sum(len(next(it)[0]) for _ in range(batches))
    seconds = time.perf_counter() - start
    del it
    return seen / seconds


def workers_needed(step_rate: float, one_worker_rate: float, headroom: int = 1) -> int:
    """Workers that deliver `step_rate` images/s when one delivers `one_worker_rate` (see the rule)."""
    return math.ceil(step_rate / one_worker_rate) + headroom


def worker_counts(n: int) -> list[int]:
    """0, 1, 2, 4, ... up to n (and n itself)."""
    counts, w = [0], 1
    while w < n:
        counts.append(w)
        w *= 2
    return counts + ([n] if n >= 1 else [])


def run_data_bench(args: argparse.Namespace) -> str:
    if args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else write_stand_in(Path(tmp) / "train", args.task,
                                                                             args.stand_in_count)
        source = args.data_dir or (f"stand-in: {args.stand_in_count} {args.task} images of "
                                   f"{'x'.join(map(str, STAND_IN_SIZES[args.task]))} px")
        counts = worker_counts(args.workers)
        rates = {w: loader_rate(args.task, data_dir, args.train_batch, w, args.data_batches) for w in counts}
        cached = {}
        if args.decode_cache and args.task != "cs":  # CS keeps its images in memory already
            cache = Path(tmp) / "decode_cache"
            fill = train_set(task_config(args.task, data_dir, args.train_batch, 0, cache=cache))
            for i in range(len(fill)):  # one pass decodes every file once (not timed)
                fill[i]
            cached = {w: loader_rate(args.task, data_dir, args.train_batch, w, args.data_batches, cache)
                      for w in counts}
    lines = [f"data: {source}; batch {args.train_batch}, {args.data_batches} batches timed per row, "
             f"{torch.get_num_threads()} torch threads in the main process", "",
             "| workers | images/s | vs 0 workers |" + (" images/s, DATA.DECODE_CACHE |" if cached else ""),
             "|---|---|---|" + ("---|" if cached else "")]
    lines += [f"| {w} | {r:.1f} | {r / rates[0]:.2f}x |" + (f" {cached[w]:.1f} |" if cached else "")
              for w, r in rates.items()]
    for label, table in (("", rates), (" with the decode cache", cached)):
        if not table:
            continue
        one = table.get(1, table[0])
        lines += ["", f"one worker{label}: {one:.1f} images/s; "
                      f"rule: workers = ceil(GPU images/s / {one:.1f}) + 1"]
        for rate in args.step_rates:
            lines.append(f"  a GPU training at {rate:g} images/s needs {workers_needed(rate, one)} workers "
                         f"(and as many free CPU cores)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="--data: up to this many loader workers")
    parser.add_argument("--data-dir", help="--data: training folder (default: a stand-in of published sizes)")
    parser.add_argument("--data-batches", type=int, default=8, help="--data: batches timed per row (default 8)")
    parser.add_argument("--stand-in-count", type=int, default=24, help="--data: stand-in images (default 24)")
    parser.add_argument("--decode-cache", action="store_true",
                        help="--data: also time the loader with DATA.DECODE_CACHE (filled first, untimed)")
    parser.add_argument("--step-rates", type=float, nargs="*", default=[20.0, 66.0],
                        help="--data: GPU training rates (images/s) to size the workers for")
