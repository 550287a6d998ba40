"""Training checkpoints in the published format, plus what an exact resume needs.

A checkpoint is a dict: `epoch` (last completed epoch), `state_dict` (no `module.` prefix),
`optimizer` (as published), and our additions `scheduler`, `scaler`, `best_psnr`, `best_epoch`,
`rng` (python, numpy, torch, cuda) and `config` (the resolved yml as a string). Everything is
tensors and plain containers, so `torch.load(weights_only=True)` reads it back. Files are
written atomically (temporary file, then rename): a crash never leaves a truncated checkpoint.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dgunet.checkpoint import read_checkpoint, save_atomic
from dgunet.errors import CheckpointError

LATEST = "model_latest.pth"
BEST = "model_best.pth"
EPOCH_FILE = "model_epoch_{}.pth"
CS_BEST = "net_best.pkl"  # compressive sensing: bare state dicts, as published
CS_LAST = "net_last.pkl"
_EPOCH_RE = re.compile(r"model_epoch_(\d+)\.pth$")


def rng_state() -> dict[str, Any]:
    """All global random states, as tensors and plain values (numpy's array becomes a tensor)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(epoch: int, model: nn.Module, optimizer, scheduler, scaler, best_psnr: float | None,
                    best_epoch: int, config_yaml: str) -> dict[str, Any]:
    """`model` must be the unwrapped module, so that keys carry no `module.` prefix."""
    return {
        "epoch": epoch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "best_psnr": best_psnr,
        "best_epoch": best_epoch,
        "rng": rng_state(),
        "config": config_yaml,
    }


def save_epoch_checkpoint(ckpt: dict[str, Any], out_dir: Path, keep_last_k: int) -> Path:
    """model_epoch_{e}.pth, then delete the oldest beyond `keep_last_k` (0 keeps all)."""
    path = save_atomic(ckpt, out_dir / EPOCH_FILE.format(ckpt["epoch"]))
    if keep_last_k:
        found = sorted((int(m.group(1)), p) for p in out_dir.iterdir() if (m := _EPOCH_RE.match(p.name)))
        for _epoch, old in found[:-keep_last_k]:
            old.unlink(missing_ok=True)
    return path


def load_resume_state(out_dir: Path) -> dict[str, Any]:
    """The latest checkpoint of a run, checked to hold everything a resume needs."""
    path = out_dir / LATEST
    if not path.is_file():
        raise CheckpointError(f"--resume: no {LATEST} in {out_dir}; nothing to resume (drop --resume to "
                              f"start a new run, or point OUTPUT.DIR / OUTPUT.NAME at the old one)")
    ckpt = read_checkpoint(path)
    missing = [k for k in ("epoch", "state_dict", "optimizer", "scheduler") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it was not written by this engine, so "
                              f"an exact resume is impossible (use TRAIN.INIT_FROM to start from its weights)")
    return ckpt


def recorded_best(out_dir: Path) -> tuple[float | None, int]:
    """(best_psnr, best_epoch) stored in model_best.pth, or (None, 0).

    A resumed run compares against this too: a best found in an epoch that was interrupted
    (and is re-run) is already on disk and must not be overwritten by a worse one.
    """
    path = out_dir / BEST
    if not path.is_file():
        return None, 0
    ckpt = read_checkpoint(path)
    return ckpt.get("best_psnr"), int(ckpt.get("best_epoch", 0))
