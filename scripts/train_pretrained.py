"""Train, score and ship the small known-operator DGUNets of pretrained/ on this machine's CPU.

    python scripts/train_pretrained.py --out pretrain_runs                 # every model, hours
    python scripts/train_pretrained.py --out pretrain_runs --models deblurring sr-x4
    python scripts/train_pretrained.py --out /tmp/p --plumbing             # 3 steps each: checks the wiring

Each model is a real `train.py` run with its task config (so the engine's snapshots make it
resumable: rerun the same command after an interruption and it goes on where it stopped) on
photos that scikit-image ships (none of them a test photo). When a run is done its
model_latest.pth (with --tune-head: its head tuned with the stages frozen, dgunet.head_tuning,
model_head_tuned.pth) is exported (weights + config, float32, <= 10 MB) to --ship (default
pretrained/) and scored on the benchmark cases with the built-in test photos; the manifest gets
the file's sha256 and size, the training time, the CPU, any head tuning and the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
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
    # The two noisy tasks start their stages from the best classical solver (dgunet.models.start).
    Recipe("deblurring", "Deblurring", "training_nonblind.yml", "deblurring",
           opts=["DEGRADE.KERNEL_SIZE", "25", "MODEL.START", "hyperlaplacian"]),
    Recipe("sr-x2", "Super_Resolution", "training.yml", "sr", 2, ["DEGRADE.SCALE", "2"]),
    Recipe("sr-x3", "Super_Resolution", "training.yml", "sr", 3,
           ["DEGRADE.SCALE", "3", "TRAIN.PATCH_SIZE", "72"]),  # a multiple of 8 and of 3
    Recipe("sr-x4", "Super_Resolution", "training.yml", "sr", 4, ["DEGRADE.SCALE", "4"]),
    Recipe("denoising", "Denoising", "training_gaussian.yml", "denoising", opts=["MODEL.START", "nlm"]),
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


def train_command(recipe: Recipe, out: Path, plumbing: bool, epochs: int, resume: bool,
                  fast: bool = True) -> list[str]:
    opts = [*WIDTHS, "OPTIM.BATCH_SIZE", "4", "OPTIM.LR_INITIAL", "3e-4", "TRAIN.PATCH_SIZE", "64",
            "TRAIN.WORKERS", "0", "TRAIN.PRINT_EVERY", "100",
            # 8 budgets of the learning curve (docs/known_degradation.md) are kept as model_epoch_*.pth
            "TRAIN.SAVE_EVERY", "0" if plumbing else str(max(1, epochs // 8)), "TRAIN.KEEP_LAST_K", "0",
            "TRAIN.SNAPSHOT_MINUTES", "5", "DATA.TRAIN_DIR", str(out / "train_photos"), "DATA.VAL_DIR", "",
            "OUTPUT.DIR", str(out / "runs"), "OUTPUT.NAME", recipe.name, "OUTPUT.TENSORBOARD", "false",
            *budget(plumbing, epochs), *recipe.opts]
    cmd = [sys.executable, str(REPO / recipe.folder / "train.py"), "--config",
           str(REPO / recipe.folder / recipe.config)]
    # --fast: bf16 autocast where the CPU has native bf16, NHWC, foreach Adam, the fast merge (2.5x a
    # step on a Zen 4 EPYC); train.py falls back to fp32 where bf16 is not native.
    return [*cmd, *(["--resume"] if resume else []), *(["--fast"] if fast else []), "--opts", *opts]


def run_state(recipe: Recipe, out: Path) -> dict:
    """{"seconds": wall time so far, "done": finished}; a rerun resumes what is not done."""
    path = out / "runs" / recipe.name / "seconds.json"
    return json.loads(path.read_text()) if path.exists() else {"seconds": 0.0, "done": False}


def start(recipe: Recipe, out: Path, plumbing: bool, epochs: int, threads: int | None) -> subprocess.Popen:
    run_dir = out / "runs" / recipe.name
    resume = (run_dir / "snapshot.pth").exists() or (run_dir / "model_latest.pth").exists()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(out / f"{recipe.name}.log", "a")  # noqa: SIM115 (closed by finish)
    command = train_command(recipe, out, plumbing, epochs, resume)
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log, proc.started = log, time.perf_counter()
    return proc


def finish(recipe: Recipe, out: Path, proc: subprocess.Popen) -> float:
    proc.log.close()
    state = run_state(recipe, out)
    seconds = state["seconds"] + time.perf_counter() - proc.started
    run_dir = out / "runs" / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"seconds": round(seconds, 1), "done": proc.returncode == 0}
    (run_dir / "seconds.json").write_text(json.dumps(state))
    if proc.returncode != 0:
        raise SystemExit(f"training {recipe.name} stopped (exit {proc.returncode}); see "
                         f"{out}/{recipe.name}.log; rerun the same command to resume")
    return seconds


def train_all(recipes: list[Recipe], out: Path, plumbing: bool, epochs: int, parallel: int,
              threads: int | None) -> dict[str, float]:
    """Train (or resume) every recipe, `parallel` at a time; returns wall seconds per model."""
    seconds = {r.name: run_state(r, out)["seconds"] for r in recipes if run_state(r, out)["done"]}
    waiting = [r for r in recipes if r.name not in seconds]
    running: list[tuple[Recipe, subprocess.Popen]] = []
    while waiting or running:
        while waiting and len(running) < parallel:
            recipe = waiting.pop(0)
            running.append((recipe, start(recipe, out, plumbing, epochs, threads)))
        for recipe, proc in list(running):
            if proc.poll() is not None:
                running.remove((recipe, proc))
                seconds[recipe.name] = finish(recipe, out, proc)
        time.sleep(1)
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


def ship(recipe: Recipe, out: Path, ship_dir: Path, seconds: float, args: argparse.Namespace) -> dict:
    from dgunet.bench import cpu_description
    from dgunet.pretrained import export, load_pretrained, read_manifest, write_manifest

    file = f"dgunet_{recipe.name.replace('-', '_')}.pth"
    latest = out / "runs" / recipe.name / "model_latest.pth"
    epoch = int(torch.load(latest, map_location="cpu", weights_only=True)["epoch"])
    tuning = None
    if args.tune_head:
        from dgunet.head_tuning import HeadTuning, tune_checkpoint

        settings = HeadTuning(batches=2, epochs=1) if args.plumbing else HeadTuning()
        tuned = out / "runs" / recipe.name / "model_head_tuned.pth"
        tuning = tune_checkpoint(latest, tuned, settings, train_dir=out / "train_photos")
        latest = tuned
    export(latest, ship_dir / file)
    rows = {name: entry.info for name, entry in read_manifest(ship_dir).items()}
    photos = len(list((out / "train_photos").iterdir()))
    steps = epoch * photos * (1 if args.plumbing else 32) // 4  # LENGTH_MULTIPLIER, batch 4
    rows[recipe.name] = {"file": file, "task": recipe.task, "scale": recipe.scale,
                         "training": {"seconds": round(seconds, 1), "cpu": cpu_description(),
                                      "threads": args.threads or torch.get_num_threads(),
                                      "trainings_at_once": args.parallel, "torch": torch.__version__,
                                      "epochs": epoch, "steps": steps,
                                      "photos": f"{photos} scikit-image photos (scripts/train_pretrained.py)",
                                      "train_py_opts": train_command(recipe, out, args.plumbing, args.epochs,
                                                                     False)[4:]}}
    if tuning is not None:
        rows[recipe.name]["head_tuning"] = tuning
    write_manifest(rows, ship_dir)  # the file is listed (sha256) before it is loaded and scored
    model = load_pretrained(recipe.name, folder=ship_dir)
    rows[recipe.name]["scores"] = score(model, recipe, limit=1 if args.plumbing else None)
    write_manifest(rows, ship_dir)
    return read_manifest(ship_dir)[recipe.name].info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (logs, runs, training photos)")
    parser.add_argument("--ship", type=Path, default=REPO / "pretrained", help="where the shipped files go")
    parser.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=24, help="epochs of 17 photos x 32 patches / batch 4 "
                        "(136 steps each)")
    parser.add_argument("--plumbing", action="store_true", help="3 steps per model, 1 case x 1 photo scored")
    parser.add_argument("--parallel", type=int, default=1, help="trainings at a time (default 1)")
    parser.add_argument("--threads", type=int, help="torch threads per training (default: torch's)")
    parser.add_argument("--tune-head", action="store_true", help="fit the head alone (stages frozen, "
                        "dgunet.head_tuning) before export; the shipped files are untuned (+-0.02 dB)")
    parser.add_argument("--opts", nargs="+", default=[], help="more config overrides (KEY VALUE ...) for every "
                        "model, after the recipe's")
    args = parser.parse_args(argv)
    (args.out / "train_photos").mkdir(parents=True, exist_ok=True)
    print(f"{write_training_photos(args.out / 'train_photos')} training photos in {args.out / 'train_photos'}")
    # --opts become part of each recipe, after its own overrides: the training and the manifest see them.
    recipes = [replace(RECIPES[name], opts=[*RECIPES[name].opts, *args.opts]) for name in args.models]
    seconds = train_all(recipes, args.out, args.plumbing, args.epochs, args.parallel, args.threads)
    for recipe in recipes:
        row = ship(recipe, args.out, args.ship, seconds[recipe.name], args)
        print(f"{recipe.name}: {seconds[recipe.name] / 60:.1f} min, {row['bytes'] / 2**20:.2f} MB, "
              f"scores {row['scores']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
