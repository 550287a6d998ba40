"""Train, score and ship the small known-operator DGUNets of pretrained/ on this machine's CPU.

    python scripts/train_pretrained.py --out pretrain_runs                 # every model, hours
    python scripts/train_pretrained.py --out pretrain_runs --models deblurring sr-x4
    python scripts/train_pretrained.py --out /tmp/p --plumbing             # 3 steps each: checks the wiring

Each model is a real `train.py` run with its task config (so the engine's snapshots make it
resumable: rerun the same command after an interruption and it goes on where it stopped) on
photos that scikit-image ships (none of them a test photo). When a run is done its
model_latest.pth is exported (weights + config, float32, <= 10 MB) to --ship (default
pretrained/) and scored on the benchmark cases with the built-in test photos; the manifest gets
the file's sha256 and size, the training time, the CPU and the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# scikit-image's bundled photos, minus the test photos (astronaut, chelsea, coffee, rocket).
TRAIN_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "page", "text",
                "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "cell",
                "microaneurysms")
STEREO = ("motorcycle_left", "motorcycle_right")  # skimage.data.stereo_motorcycle(): two RGB photos
WIDTHS = ["MODEL.N_FEAT", "16", "MODEL.SCALE_UNETFEATS", "8", "MODEL.SCALE_ORSNETFEATS", "8"]


@dataclass
class Recipe:
    """One shipped model: its task folder, config and the overrides of the CPU recipe."""

    name: str
    folder: str
    config: str
    task: str
    scale: int | None = None
    opts: list[str] = field(default_factory=list)


RECIPES = {r.name: r for r in (
    Recipe("deblurring", "Deblurring", "training_nonblind.yml", "deblurring",
           opts=["DEGRADE.KERNEL_SIZE", "25"]),
    Recipe("sr-x2", "Super_Resolution", "training.yml", "sr", 2, ["DEGRADE.SCALE", "2"]),
    Recipe("sr-x3", "Super_Resolution", "training.yml", "sr", 3,
           ["DEGRADE.SCALE", "3", "TRAIN.PATCH_SIZE", "72"]),  # a multiple of 8 and of 3
    Recipe("sr-x4", "Super_Resolution", "training.yml", "sr", 4, ["DEGRADE.SCALE", "4"]),
    Recipe("denoising", "Denoising", "training_gaussian.yml", "denoising"),
)}


def budget(plumbing: bool, epochs: int) -> list[str]:
    """Steps = EPOCHS * photos * LENGTH_MULTIPLIER / BATCH_SIZE."""
    if plumbing:
        return ["OPTIM.NUM_EPOCHS", "1", "DATA.LENGTH_MULTIPLIER", "1", "OPTIM.WARMUP_EPOCHS", "0",
                "OPTIM.SCHEDULE", "constant"]
    return ["OPTIM.NUM_EPOCHS", str(epochs), "DATA.LENGTH_MULTIPLIER", "32", "OPTIM.WARMUP_EPOCHS", "1",
            "OPTIM.T_MAX_EXTRA", "0", "OPTIM.LR_MIN", "1e-5"]


def write_training_photos(folder: Path) -> int:
    """The training photos as RGB PNGs (gray ones repeated over RGB); returns how many."""
    import skimage.data

    from dgunet.data.io import save_png_atomic

    photos = {name: getattr(skimage.data, name)() for name in TRAIN_PHOTOS}
    left, right, _disparity = skimage.data.stereo_motorcycle()
    photos.update(zip(STEREO, (left, right), strict=True))
    for name, img in photos.items():
        path = folder / f"{name}.png"
        if not path.exists():
            img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
            save_png_atomic(path, np.ascontiguousarray(img))
    return len(photos)


def train_command(recipe: Recipe, out: Path, plumbing: bool, epochs: int, resume: bool) -> list[str]:
    opts = [*WIDTHS, "OPTIM.BATCH_SIZE", "4", "OPTIM.LR_INITIAL", "3e-4", "TRAIN.PATCH_SIZE", "64",
            "TRAIN.WORKERS", "0", "TRAIN.PRINT_EVERY", "100",
            # 8 budgets of the learning curve (docs/known_degradation.md) are kept as model_epoch_*.pth
            "TRAIN.SAVE_EVERY", "0" if plumbing else str(max(1, epochs // 8)), "TRAIN.KEEP_LAST_K", "0",
            "TRAIN.SNAPSHOT_MINUTES", "5", "DATA.TRAIN_DIR", str(out / "train_photos"), "DATA.VAL_DIR", "",
            "OUTPUT.DIR", str(out / "runs"), "OUTPUT.NAME", recipe.name, "OUTPUT.TENSORBOARD", "false",
            *budget(plumbing, epochs), *recipe.opts]
    cmd = [sys.executable, str(REPO / recipe.folder / "train.py"), "--config",
           str(REPO / recipe.folder / recipe.config)]
    return [*cmd, *(["--resume"] if resume else []), "--opts", *opts]


def train(recipe: Recipe, out: Path, plumbing: bool, epochs: int) -> float:
    """Run (or resume) one training; returns its wall seconds, summed over interrupted runs."""
    run_dir = out / "runs" / recipe.name
    seconds_file = run_dir / "seconds.json"
    done = json.loads(seconds_file.read_text()) if seconds_file.exists() else {"seconds": 0.0, "done": False}
    if done["done"]:
        return done["seconds"]
    resume = (run_dir / "snapshot.pth").exists() or (run_dir / "model_latest.pth").exists()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    with open(out / f"{recipe.name}.log", "a") as log:
        proc = subprocess.run(train_command(recipe, out, plumbing, epochs, resume), env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False)
    seconds = done["seconds"] + time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds_file.write_text(json.dumps({"seconds": round(seconds, 1), "done": proc.returncode == 0}))
    if proc.returncode != 0:
        raise SystemExit(f"training {recipe.name} stopped (exit {proc.returncode}); see "
                         f"{out}/{recipe.name}.log; rerun the same command to resume")
    return seconds


@torch.no_grad()
def score(model: torch.nn.Module, recipe: Recipe, limit: int | None = None,
          case_names: list[str] | None = None) -> dict[str, float]:
    """Mean PSNR per benchmark case on the built-in test photos (the known test protocol's numbers);
    `limit` keeps the first cases and photos, `case_names` only those cases."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.data.io import to_uint8
    from dgunet.metrics.protocols import get_protocol
    from dgunet.testrun import known

    name = known.KNOWN_PROTOCOLS[recipe.task]
    chosen = cases(name, scales=[recipe.scale] if recipe.scale else None)[:limit]
    chosen = [c for c in chosen if case_names is None or c.name in case_names]
    restore, images, seed = known.model_method(model), known.photo_images()[:limit], protocol()["noise_seed"]
    out = {}
    for case in chosen:
        values = []
        for stem, clean in images:
            clean, y, op, params = known.degrade_case(case, clean, stem, seed)
            pred = to_uint8(restore(y, op, params)[0].clamp(0, 1))
            metric = get_protocol(known.scoring_protocols(case)[0])
            values.append(metric.score(pred, clean, ("restored", "clean"))[0])
        out[case.name] = round(float(np.mean(values)), 3)
    return out


def ship(recipe: Recipe, out: Path, ship_dir: Path, seconds: float, plumbing: bool) -> dict:
    from dgunet.bench import cpu_description
    from dgunet.pretrained import export, load_pretrained, read_manifest, write_manifest

    file = f"dgunet_{recipe.name.replace('-', '_')}.pth"
    export(out / "runs" / recipe.name / "model_latest.pth", ship_dir / file)
    rows = {name: entry.info for name, entry in read_manifest(ship_dir).items()}
    rows[recipe.name] = {"file": file, "task": recipe.task, "scale": recipe.scale,
                         "training": {"seconds": round(seconds, 1), "cpu": cpu_description(),
                                      "threads": torch.get_num_threads(), "torch": torch.__version__}}
    write_manifest(rows, ship_dir)  # the file is listed (sha256) before it is loaded and scored
    model = load_pretrained(recipe.name, folder=ship_dir)
    rows[recipe.name]["scores"] = score(model, recipe, limit=1 if plumbing else None)
    write_manifest(rows, ship_dir)
    return read_manifest(ship_dir)[recipe.name].info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (logs, runs, training photos)")
    parser.add_argument("--ship", type=Path, default=REPO / "pretrained", help="where the shipped files go")
    parser.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=40, help="epochs of 17 photos x 32 patches / batch 4")
    parser.add_argument("--plumbing", action="store_true", help="3 steps per model, 1 case x 1 photo scored")
    args = parser.parse_args(argv)
    (args.out / "train_photos").mkdir(parents=True, exist_ok=True)
    print(f"{write_training_photos(args.out / 'train_photos')} training photos in {args.out / 'train_photos'}")
    for name in args.models:
        recipe = RECIPES[name]
        seconds = train(recipe, args.out, args.plumbing, args.epochs)
        row = ship(recipe, args.out, args.ship, seconds, args.plumbing)
        print(f"{name}: {seconds / 60:.1f} min, {row['bytes'] / 2**20:.2f} MB, scores {row['scores']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
