"""Datasets, loaders and validation of the training engine.

Image tasks train on `PairedImageDataset` (input/ + target/ paired by name) and validate on
center crops of a paired test set. Compressive sensing trains on random Y crops and validates
on Set11 the way the published test does (128x128 tiles restored independently).
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dgunet.config import output_dir, resolve_path, with_updates
from dgunet.data.cs import CSCropDataset, load_y_image
from dgunet.data.io import list_images
from dgunet.data.paired import PairedImageDataset
from dgunet.data.seeding import seed_worker
from dgunet.data.synthetic import DegradeSpec, SyntheticDataset, build_operator
from dgunet.engine.distributed import BatchPlan, DistEnv, GlobalBatchSampler, sum_over_ranks
from dgunet.errors import DataError
from dgunet.inference import forward_padded
from dgunet.tasks import get_task


def train_set(cfg) -> Dataset:
    root = resolve_path(cfg, cfg.DATA.TRAIN_DIR)
    if get_task(cfg.MODEL.TASK).is_cs:
        return CSCropDataset(root, crop=cfg.TRAIN.PATCH_SIZE, crops_per_image=cfg.DATA.CROPS_PER_IMAGE,
                             seed=cfg.TRAIN.SEED, cache_dtype=cfg.DATA.CACHE_DTYPE)
    spec = DegradeSpec.from_cfg(cfg)
    if spec is not None:  # known operator: clean images degraded on the fly
        return SyntheticDataset(root, spec, cfg.TRAIN.PATCH_SIZE, mode="train", seed=cfg.TRAIN.SEED,
                                length_multiplier=cfg.DATA.LENGTH_MULTIPLIER)
    cache = resolve_path(cfg, cfg.DATA.DECODE_CACHE) if cfg.DATA.DECODE_CACHE else None
    return PairedImageDataset(root, cfg.TRAIN.PATCH_SIZE, mode="train",
                              saturation_aug=cfg.DATA.SATURATION_AUG,
                              length_multiplier=cfg.DATA.LENGTH_MULTIPLIER, seed=cfg.TRAIN.SEED,
                              decode_cache=cache)


def val_set(cfg) -> Dataset | list[np.ndarray] | None:
    """The validation data, or None when DATA.VAL_DIR is empty (no validation, no best model)."""
    if not cfg.DATA.VAL_DIR:
        return None
    root = resolve_path(cfg, cfg.DATA.VAL_DIR)
    if get_task(cfg.MODEL.TASK).is_cs:
        files = list_images(root)
        if not files:
            raise DataError(f"validation folder {root} holds no images (the Set11 .tif files)")
        return [load_y_image(f) for f in files]
    spec = DegradeSpec.from_cfg(cfg)
    if spec is not None:  # clean images, degraded once with a fixed seed; never padded
        return SyntheticDataset(root, spec, cfg.VAL.CROP or None, mode="val", seed=cfg.TRAIN.SEED)
    return PairedImageDataset(root, cfg.VAL.CROP or None, mode="val")


def _worker_init(worker_id: int) -> None:
    # Workers ignore SIGINT/SIGTERM: the main process stops at a step boundary and shuts them
    # down itself. A Ctrl-C reaches the whole process group and must not kill them first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed_worker(worker_id)


def train_loader(dataset: Dataset, plan: BatchPlan, env: DistEnv, cfg, device: torch.device):
    """(loader, sampler); call sampler.set_epoch and dataset.set_epoch before each epoch."""
    if len(dataset) < plan.batch:
        raise DataError(f"the training set has {len(dataset)} samples, fewer than one batch of "
                        f"{plan.batch} (OPTIM.BATCH_SIZE); add data or lower the batch")
    sampler = GlobalBatchSampler(len(dataset), plan, env.rank, cfg.TRAIN.SEED)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.TRAIN.WORKERS,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
                        generator=torch.Generator())
    return loader, sampler


def split_batch(batch, task: str, to_device=lambda x: x,
                spec: DegradeSpec | None = None) -> tuple[Tensor, Tensor, nn.Module | None]:
    """A loader batch -> (network input, target, operator) on the device via `to_device`.

    CS reconstructs its own input. The operator is None for the published tasks; for synthetic
    known-operator data (`spec`) it is built on the device from the batch's kernels and sigmas.
    """
    if get_task(task).is_cs:
        x = to_device(batch)
        return x, x, None
    if spec is None:
        target, inp, _names = batch
        return to_device(inp), to_device(target), None
    target, inp, _names, params = batch
    inp = to_device(inp)
    return inp, to_device(target), operator_for(spec, params, inp.device, non_blocking=True)


def operator_for(spec: DegradeSpec, params: dict[str, Tensor], device: torch.device,
                 non_blocking: bool = False) -> nn.Module:
    """The batch's known operator on `device` from its (B,K,K) kernels and (B,) sigmas.

    non_blocking: the loader's pinned batch is copied without waiting on the host (a blocking
    copy to a GPU waits for it every step); the copies stay ordered on the current stream.
    """
    kernels = params["kernel"].to(device, non_blocking=non_blocking)
    sigma = params["sigma"].to(device, non_blocking=non_blocking)
    return build_operator(spec, kernels, sigma)


# ---------------------------------------------------------------- validation

def psnr01(pred: Tensor, target: Tensor) -> float:
    """Validation PSNR of the published scripts: both clamped to [0, 1], 20 log10(1 / rmse).

    Same definition as dgunet.metrics.psnr.psnr_torch for one image; kept here because importing
    dgunet.metrics pulls SciPy into every training process for these three lines.
    """
    mse = float((pred.double().clamp(0, 1) - target.double().clamp(0, 1)).pow(2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def _my_share(n: int, env: DistEnv) -> list[int]:
    """Validation is sharded over ranks (strided), then the PSNR sums are all-reduced."""
    return list(range(env.rank, n, env.world_size))


@torch.no_grad()
def validate_images(model: nn.Module, dataset: Dataset, env: DistEnv, device: torch.device, cfg,
                    autocast) -> float:
    """Mean PSNR over the validation images (center crops), final stage output."""
    batch = cfg.VAL.BATCH_SIZE if cfg.VAL.CROP else 1  # whole images differ in size
    subset = torch.utils.data.Subset(dataset, _my_share(len(dataset), env))
    loader = DataLoader(subset, batch_size=batch, shuffle=False, num_workers=min(cfg.TRAIN.WORKERS, 2))
    total, count = 0.0, 0
    spec = DegradeSpec.from_cfg(cfg)
    for target, inp, _names, *params in loader:
        with autocast():
            if spec is None:
                restored = forward_padded(model, inp.to(device)).float()
            else:  # known operator: no padding (it would change the operator); crops fit the model
                restored = model(inp.to(device), physics=operator_for(spec, params[0], device))[0].float()
        for pred, tgt in zip(restored.cpu(), target, strict=True):
            total += psnr01(pred, tgt)
            count += 1
    total, count = sum_over_ranks([total, float(count)], env, device)
    return total / count


def cs_restore_tiles(model: nn.Module, y: Tensor, tile: int, device: torch.device, autocast) -> Tensor:
    """The published CS test: (H, W) Y in [0, 1] -> restored (H, W), clipped to [0, 1].

    Pads right and bottom with zeros by `tile - size % tile` (a whole extra tile when the side
    is already a multiple: kept for exact numbers), restores each tile on its own, reassembles.
    """
    h, w = y.shape
    padded = torch.nn.functional.pad(y, (0, tile - w % tile, 0, tile - h % tile))
    rows, cols = padded.shape[0] // tile, padded.shape[1] // tile
    tiles = padded.reshape(rows, tile, cols, tile).permute(0, 2, 1, 3).reshape(-1, 1, tile, tile)
    with autocast():
        out = torch.cat([model(t.to(device))[0].float().cpu() for t in tiles.split(16)])
    image = out.reshape(rows, cols, tile, tile).permute(0, 2, 1, 3).reshape(rows * tile, cols * tile)
    return image[:h, :w].clamp(0, 1)


@torch.no_grad()
def validate_cs(model: nn.Module, images: list[np.ndarray], env: DistEnv, device: torch.device, cfg,
                autocast) -> float:
    """Mean Set11 PSNR: 20 log10(255 / rmse) between restored*255 and the 0..255 Y, float64."""
    total = 0.0
    mine = _my_share(len(images), env)
    for i in mine:
        y = images[i]
        y01 = torch.from_numpy(y / 255.0).float()
        restored = cs_restore_tiles(model, y01, cfg.VAL.CS_TILE, device, autocast)
        mse = float(np.mean((restored.double().numpy() * 255.0 - y) ** 2))
        total += math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    total, count = sum_over_ranks([total, float(len(mine))], env, device)
    return total / count


def default_phase1_weights(cfg) -> Path:
    """Where CS phase 2 finds phase 1's best weights by default."""
    phase1 = with_updates(cfg, **{"TRAIN.PHASE": 1, "OUTPUT.NAME": ""})
    return output_dir(phase1) / "net_best.pkl"
