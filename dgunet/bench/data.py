"""`python -m dgunet bench --data`: images/s of the training data loader alone.

The real pipeline of a training recipe (the yml given with --config, e.g. a task folder's
training.yml; without it the package defaults for --task), `engine.data.train_set` and
`train_loader`: decode, crop, augment, collate, for 0..N worker processes. Without --data-dir it writes a
stand-in training set of the published image sizes (GoPro frames are 1280x720 PNGs; Rain13K
pairs about 512x384; SIDD patches 256x256; the CS set is cached in memory) as PNGs cut from
photos, so that decoding costs what it costs on the real files.

The rule (docs/training.md, "Feeding the GPU"): a loader keeps up when its images/s exceeds
the training images/s; with w workers it delivers about w x (one worker's rate) until the CPU
cores run out, so a GPU step rate of R images/s needs ceil(R / one worker's rate) workers,
plus one for the jitter of decoding.

    python -m dgunet bench --data --config Deblurring/training.yml --workers 8 \
        [--data-dir Deblurring/Datasets/train]
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
                cache: Path | None = None, recipe: Path | None = None):
    """`recipe` (a training yml; None: the package defaults) for `task`, with the given data folder,
    batch, workers, data repetition and decode cache."""
    data = {"TRAIN_DIR": str(data_dir.resolve()), "DECODE_CACHE": str(cache or "")}
    if task == "cs":
        data["CROPS_PER_IMAGE"] = repeat * 200
    else:
        data["LENGTH_MULTIPLIER"] = repeat
    overrides = {"MODEL": {"TASK": task}, "OPTIM": {"BATCH_SIZE": batch}, "TRAIN": {"WORKERS": workers},
                 "DATA": data}
    try:
        return load_config(recipe, overrides=overrides)
    except ConfigError as err:
        if recipe is not None:
            raise
        raise ConfigError(f"{err}: the package defaults are no {task} recipe; pass one with --config "
                          f"(e.g. the task folder's training.yml)") from None


def recipe_task(recipe: Path | None, task: str | None) -> str:
    """The task to time: the recipe's (which --task, when given, must name), else --task or deblurring."""
    if recipe is None:
        return task or "deblurring"
    trains = load_config(recipe).MODEL.TASK
    if task and task != trains:
        raise ConfigError(f"--task {task}, but {recipe} trains {trains}: drop --task or pass a {task} recipe "
                          f"with --config")
    return trains


def skipped_batches(workers: int, prefetch: int = 2) -> int:
    """Batches to take before timing: the first (worker start-up) and those the workers
    prepared meanwhile (DataLoader's prefetch_factor of 2 per worker), which arrive at once."""
    return 1 + prefetch * workers


def loader_rate(task: str, data_dir: Path, batch: int, workers: int, batches: int, cache: Path | None = None,
                recipe: Path | None = None) -> float:
    """Steady-state images/s over `batches` batches of the loader of `recipe` (None: package defaults)."""
    need = (skipped_batches(workers) + batches) * batch
    files = len(list_images(data_dir)) or len(list_images(data_dir / "target"))
    repeat = max(1, math.ceil(need / max(files, 1)))
    cfg = task_config(task, data_dir, batch, workers, repeat=repeat, cache=cache, recipe=recipe)
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


def measure_rates(task: str, data_dir: Path, args: argparse.Namespace, recipe: Path | None, tmp: Path
                  ) -> tuple[dict[int, float], dict[int, float]]:
    """images/s for each worker count, plainly and (with --decode-cache) from a filled decode cache."""
    counts = worker_counts(args.workers)
    rates = {w: loader_rate(task, data_dir, args.train_batch, w, args.data_batches, recipe=recipe)
             for w in counts}
    if not args.decode_cache or task == "cs":  # CS keeps its images in memory already
        return rates, {}
    cache = tmp / "decode_cache"
    fill = train_set(task_config(task, data_dir, args.train_batch, 0, cache=cache, recipe=recipe))
    for i in range(len(fill)):  # one pass decodes every file once (not timed)
        fill[i]
    cached = {w: loader_rate(task, data_dir, args.train_batch, w, args.data_batches, cache, recipe)
              for w in counts}
    return rates, cached


def rates_report(rates: dict[int, float], cached: dict[int, float], step_rates: list[float]) -> list[str]:
    """The table of rates by workers, then the worker rule for each GPU step rate."""
    lines = ["| workers | images/s | vs 0 workers |" + (" images/s, DATA.DECODE_CACHE |" if cached else ""),
             "|---|---|---|" + ("---|" if cached else "")]
    lines += [f"| {w} | {r:.1f} | {r / rates[0]:.2f}x |" + (f" {cached[w]:.1f} |" if cached else "")
              for w, r in rates.items()]
    for label, table in (("", rates), (" with the decode cache", cached)):
        if not table:
            continue
        one = table.get(1, table[0])
        lines += ["", f"one worker{label}: {one:.1f} images/s; "
                      f"rule: workers = ceil(GPU images/s / {one:.1f}) + 1"]
        for rate in step_rates:
            lines.append(f"  a GPU training at {rate:g} images/s needs {workers_needed(rate, one)} workers "
                         f"(and as many free CPU cores)")
    return lines


def run_data_bench(args: argparse.Namespace) -> str:
    """Everything `--data` prints after the machine line."""
    if args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    recipe = Path(args.config) if args.config else None
    task = recipe_task(recipe, args.task)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else write_stand_in(Path(tmp) / "train", task,
                                                                             args.stand_in_count)
        rates, cached = measure_rates(task, data_dir, args, recipe, Path(tmp))
    source = args.data_dir or (f"stand-in: {args.stand_in_count} {task} images of "
                               f"{'x'.join(map(str, STAND_IN_SIZES[task]))} px")
    recipe_text = recipe or f"package defaults for {task} (pass a recipe with --config)"
    head = [f"data: {source}; recipe: {recipe_text}; batch {args.train_batch}, {args.data_batches} batches "
            f"timed per row, {torch.get_num_threads()} torch threads in the main process", ""]
    return "\n".join(head + rates_report(rates, cached, args.step_rates))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="--data: the training recipe to time, e.g. Deblurring/training.yml "
                                         "(default: the package defaults for --task)")
    parser.add_argument("--workers", type=int, default=2, help="--data: up to this many loader workers")
    parser.add_argument("--data-dir", help="--data: training folder (default: a stand-in of published sizes)")
    parser.add_argument("--data-batches", type=int, default=8, help="--data: batches timed per row (default 8)")
    parser.add_argument("--stand-in-count", type=int, default=24, help="--data: stand-in images (default 24)")
    parser.add_argument("--decode-cache", action="store_true",
                        help="--data: also time the loader with DATA.DECODE_CACHE (filled first, untimed)")
    parser.add_argument("--step-rates", type=float, nargs="*", default=[20.0, 66.0],
                        help="--data: GPU training rates (images/s) to size the workers for")
