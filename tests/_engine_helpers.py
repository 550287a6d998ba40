"""Tiny data sets cut from scikit-image photos, and how the engine tests launch training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TASK_DIRS = {"deblurring": "Deblurring", "deraining": "Deraining", "denoising": "Denoising",
             "cs": "Compressive_Sensing"}

# Reduced widths and a patch that still passes the U-Net's three downsamplings.
TINY_MODEL = ["MODEL.N_FEAT", "8", "MODEL.SCALE_UNETFEATS", "4", "MODEL.SCALE_ORSNETFEATS", "4"]


def photos() -> list[np.ndarray]:
    """Three RGB uint8 photos."""
    return [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]


def crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """n RGB crops (size x size x 3, uint8) from the photos, downscaled 4x so they hold texture."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos()[i % 3]
        small = cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4), interpolation=cv2.INTER_AREA)
        top = int(rng.integers(0, small.shape[0] - size + 1))
        left = int(rng.integers(0, small.shape[1] - size + 1))
        out.append(np.ascontiguousarray(small[top:top + size, left:left + size]))
    return out


def degrade(img: np.ndarray, task: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if task == "deblurring":
        return cv2.GaussianBlur(img, (5, 5), 1.5)
    if task == "deraining":
        streaks = (rng.random(img.shape[:2]) > 0.97).astype(np.float32)
        streaks = cv2.filter2D(streaks, -1, np.eye(5, dtype=np.float32) / 5)
        return np.clip(img + 255 * streaks[..., None], 0, 255).astype(np.uint8)
    noisy = img.astype(np.float32) + rng.normal(0, 15, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))


def make_paired(root: Path, task: str, n: int, size: int, seed: int = 0) -> Path:
    for i, clean in enumerate(crops(n, size, seed)):
        write_rgb(root / "target" / f"img{i:02d}.png", clean)
        write_rgb(root / "input" / f"img{i:02d}.png", degrade(clean, task, seed * 100 + i))
    return root


def make_task_data(task_dir: Path, task: str, n_train: int = 4, n_val: int = 2, size: int = 40) -> None:
    """<task_dir>/Datasets/... in the layout of the task's training.yml."""
    data = task_dir / "Datasets"
    if task == "cs":
        for i, img in enumerate(crops(n_train, size, seed=1)):
            write_rgb(data / "train" / f"img{i:02d}.png", img)
        for i, img in enumerate(crops(n_val, size, seed=2)):
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            path = data / "test" / "Set11" / f"img{i:02d}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), gray)
        return
    val = {"deblurring": "test/GoPro", "deraining": "test/Rain100L", "denoising": "val"}[task]
    make_paired(data / "train", task, n_train, size, seed=1)
    make_paired(data / val, task, n_val, size, seed=2)


def small_opts(task: str, task_dir: Path, epochs: int | None = 2, batch: int = 2) -> list[str]:
    """--opts making a run take seconds: tiny widths, small patches and batches, no workers.

    TASK_DIR points the yml's relative paths (Datasets/..., checkpoints/) into `task_dir`.
    """
    patch = "32" if task == "cs" else "16"
    opts = ["TASK_DIR", str(task_dir), *TINY_MODEL, "TRAIN.PATCH_SIZE", patch, "OPTIM.BATCH_SIZE", str(batch),
            "TRAIN.WORKERS", "0", "VAL.BATCH_SIZE", "2", "OUTPUT.TENSORBOARD", "false"]
    if task == "cs":
        opts += ["DATA.CROPS_PER_IMAGE", "1", "VAL.CS_TILE", "32", "MODEL.CS_RATIO", "10"]
    else:
        opts += ["VAL.CROP", "16"]
    if epochs is not None:
        opts += ["OPTIM.NUM_EPOCHS", str(epochs)]
        if task != "cs":  # a 1-epoch warm-up and T_max = epochs - 1 + 1 >= 1
            opts += ["OPTIM.WARMUP_EPOCHS", "1", "OPTIM.T_MAX_EXTRA", "1"]
    return opts


def env_one_thread(cuda: bool = False) -> dict[str, str]:
    """Child processes use one thread each: two cores, and several children at once.

    Without `cuda` they see no GPU (CUDA_VISIBLE_DEVICES empty), so that a CPU test trains on
    the CPU with gloo also on a GPU machine; the `cuda` tests pass cuda=True.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def train_py(task: str) -> Path:
    return REPO / TASK_DIRS[task] / "train.py"


def run_train(task: str, task_dir: Path, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The real train.py of `task`, with its yml but data and outputs under `task_dir`."""
    cmd = [PYTHON, str(train_py(task)), *args]
    return subprocess.run(cmd, cwd=task_dir, env=env_one_thread(), capture_output=True, text=True,
                          timeout=timeout)


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- in-process runs and fixed steps

def task_config(task: str, task_dir: Path, extra: list[str] = (), epochs: int | None = 2, batch: int = 2,
                args: list[str] = ()):
    """The config train.py would build for `task` with the small --opts (same parser, same yml)."""
    from dgunet.engine import config_from_args

    yml = REPO / TASK_DIRS[task] / "training.yml"
    return config_from_args(task, yml, [*args, "--opts", *small_opts(task, task_dir, epochs, batch), *extra])


def fixed_batch(n: int = 8, size: int = 16) -> tuple:
    """(inputs, targets): n deraining pairs as (n, 3, size, size) float tensors in [0, 1]."""
    import torch

    clean = crops(n, size, seed=5)
    rainy = [degrade(c, "deraining", i) for i, c in enumerate(clean)]

    def stack(images):
        return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)

    return stack(rainy), stack(clean)


def step_config(accum: int, batch: int = 8):
    """Deraining recipe (no MixUp), tiny widths, constant lr so that the first step moves weights.

    Adam's first step is lr * g / (|g| + eps): with the published eps 1e-8 that is lr * sign(g),
    blind to the gradient's scale (a missing 1/ACCUM_STEPS would pass) and flipped by float
    noise where g is ~0. With eps 1 the step is ~lr * g, so the weights compare like the gradients.
    """
    from dgunet.config import load_config

    opts = [*TINY_MODEL, "OPTIM.SCHEDULE", "constant", "OPTIM.EPS", "1.0", "OPTIM.BATCH_SIZE", str(batch),
            "TRAIN.ACCUM_STEPS", str(accum), "TRAIN.PATCH_SIZE", "16"]
    return load_config(REPO / "Deraining" / "training.yml", opts=opts)


def one_step(cfg, env, micro_batches: list[tuple]) -> dict:
    """Gradients after accumulation (and DDP's all-reduce), weights after one optimizer step."""
    import torch

    from dgunet.engine.steps import accumulate_gradients, apply_gradients, build_engine

    eng = build_engine(cfg, env, torch.device("cpu"))
    result = accumulate_gradients(eng, micro_batches)
    grads = {n: p.grad.detach().clone() for n, p in eng.raw.named_parameters() if p.grad is not None}
    apply_gradients(eng)
    weights = {k: v.detach().clone() for k, v in eng.raw.state_dict().items()}
    return {"loss": result.loss, "grads": grads, "weights": weights, "status": result.status}


def ddp_worker_command(nproc: int, port: int, out_dir: Path, task_dir: Path) -> list[str]:
    return [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port}", str(Path(__file__).with_name("_engine_ddp_worker.py")),
            str(out_dir), str(task_dir)]


# The DDP training run and its one-process twin. Adam's eps 1 for the same reason as in
# step_config: with eps 1e-8 float noise in a ~0 gradient flips that weight's step by 2 lr.
DDP_TRAIN_OPTS = ["VAL.EVERY", "1", "OPTIM.EPS", "1.0"]

_DDP_CACHE: dict[str, Path] = {}


def ddp_results(root: Path) -> Path:
    """Run tests/_engine_ddp_worker.py under torchrun (2 gloo processes) once per session.

    Both test_ddp.py and test_accumulation.py read its files; the launch costs ~10 s.
    """
    if "dir" not in _DDP_CACHE:
        out, task_dir = root / "ddp_out", root / "ddp_task"
        out.mkdir(parents=True, exist_ok=True)
        make_task_data(task_dir, "deraining", n_train=4, n_val=2)
        proc = subprocess.run(ddp_worker_command(2, free_port(), out, task_dir), env=env_one_thread(),
                              capture_output=True, text=True, timeout=300)
        (out / "log.txt").write_text(proc.stdout + "\n" + proc.stderr)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        _DDP_CACHE["dir"] = out
    return _DDP_CACHE["dir"]
