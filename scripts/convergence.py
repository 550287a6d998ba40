"""Does the fast training preset converge like the published computation? A short CPU run.

Trains reduced-width DGUNet (deblurring recipe, n_feat 16) on a small blurred set cut from
scikit-image photos, with the published computation (TRAIN.SPEED published: fp32, NCHW,
for-loop Adam, published merge) for 3 seeds and with TRAIN.SPEED fast for the same 3 seeds,
validating every epoch. Writes the curves (JSON) and one plot; prints the final PSNRs, the
seed-to-seed spread of fp32 and where the fast runs fall.

    python scripts/convergence.py [--epochs 12] [--out docs/figs]   # about 10 minutes on 1 CPU thread
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dgunet.atomic import write_text_atomic  # noqa: E402
from dgunet.config import load_config  # noqa: E402
from dgunet.engine import train  # noqa: E402

SEEDS = (1, 2, 3)
SPEEDS = ("published", "fast")


def write_pairs(root: Path, count: int, size: int, seed: int) -> None:
    """`count` (blurred, sharp) PNG pairs of size x size cut from three photos (downscaled 2x)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [cv2.resize(p, (p.shape[1] // 2, p.shape[0] // 2), interpolation=cv2.INTER_AREA)
              for p in (data.astronaut(), data.coffee(), data.chelsea())]
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photos[i % 3]
        top, left = (int(rng.integers(0, s - size + 1)) for s in img.shape[:2])
        sharp = np.ascontiguousarray(img[top:top + size, left:left + size, ::-1])
        cv2.imwrite(str(root / "target" / f"{i:03d}.png"), sharp)
        cv2.imwrite(str(root / "input" / f"{i:03d}.png"), cv2.GaussianBlur(sharp, (7, 7), 1.6))


def run(task_dir: Path, speed: str, seed: int, epochs: int) -> list[float]:
    """Validation PSNR after each epoch of one run."""
    opts = ["TASK_DIR", str(task_dir), "MODEL.N_FEAT", "16", "MODEL.SCALE_UNETFEATS", "8",
            "MODEL.SCALE_ORSNETFEATS", "8", "TRAIN.PATCH_SIZE", "48", "OPTIM.BATCH_SIZE", "4",
            "TRAIN.WORKERS", "0", "TRAIN.SEED", str(seed), "TRAIN.SPEED", speed, "TRAIN.SAVE_EVERY", "0",
            "OPTIM.NUM_EPOCHS", str(epochs), "OPTIM.LR_INITIAL", "1e-3", "OPTIM.SCHEDULE", "constant",
            "VAL.EVERY", "1", "VAL.CROP", "64", "VAL.BATCH_SIZE", "4", "OUTPUT.TENSORBOARD", "false",
            "OUTPUT.NAME", f"{speed}_seed{seed}"]
    cfg = load_config(REPO / "Deblurring" / "training.yml", opts=opts)
    result = train(cfg)
    rows = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["val_psnr"] for r in rows]


def plot(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dgunet.atomic import atomic_open

    fig, ax = plt.subplots(figsize=(6.4, 4))
    colors = {f"seed{k}": c for k, c in zip(SEEDS, ("tab:blue", "tab:orange", "tab:green"), strict=True)}
    for name, values in curves.items():
        speed, seed = name.split("_")
        published = speed == "published"
        ax.plot(range(1, len(values) + 1), values, color=colors[seed], linestyle="-" if published else "--",
                marker="o" if published else "x", markersize=3, label=f"{speed}, {seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title("DGUNet n_feat 16, CPU: published (solid) vs fast (dashed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default=str(REPO / "docs" / "figs"), help="folder for the JSON and the plot")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON in --out")
    args = parser.parse_args(argv)
    if args.replot:
        data = json.loads((Path(args.out) / "training_convergence.json").read_text())
        plot(data["curves"], Path(args.out) / "training_convergence.png")
        return 0
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        task_dir = Path(tmp)
        write_pairs(task_dir / "Datasets" / "train", 32, 96, seed=0)
        write_pairs(task_dir / "Datasets" / "test" / "GoPro", 8, 64, seed=1)
        for seed in SEEDS:
            for speed in SPEEDS:
                name = f"{speed}_seed{seed}"
                curves[name] = run(task_dir, speed, seed, args.epochs)
                print(f"{speed} seed {seed}: final val PSNR {curves[name][-1]:.3f} dB", flush=True)
    finals = {s: [curves[f"{s}_seed{k}"][-1] for k in SEEDS] for s in SPEEDS}
    summary = {s: {"mean": statistics.mean(v), "min": min(v), "max": max(v), "stdev": statistics.stdev(v)}
               for s, v in finals.items()}
    write_text_atomic(out / "training_convergence.json",
                      json.dumps({"curves": curves, "final": finals, "summary": summary}, indent=1) + "\n")
    plot(curves, out / "training_convergence.png")
    for s in SPEEDS:
        m = summary[s]
        print(f"{s}: final PSNR mean {m['mean']:.3f} dB, range {m['min']:.3f}..{m['max']:.3f}, "
              f"stdev {m['stdev']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
