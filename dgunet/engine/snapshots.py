"""Mid-epoch snapshots: what continuing an epoch at the exact optimizer step needs.

`snapshot.pth` sits beside model_latest.pth and is written atomically by rank 0 at a step
boundary (every TRAIN.SNAPSHOT_MINUTES / TRAIN.SNAPSHOT_EVERY_STEPS, and when a signal stops the
run). It is a training checkpoint (same keys: `epoch` is still the last *completed* epoch) plus
`progress`: the epoch in progress, the optimizer steps taken in it, their losses, the validation
PSNRs of that epoch so far; `mix_rng`: every rank's MixUp generator state; and `fingerprint`: the
settings that give a step number its meaning (batch, widths, data). The sample order, the data
augmentations and the loader's generator are pure functions of (seed, epoch[, rank]), so the
position alone restores them; MixUp's generator and the global RNGs are saved as states.
A resume from an epoch boundary checks the part of the fingerprint that must hold between
epochs too (`check_boundary`: model, data folder, batch, degradation), read from the config
every engine checkpoint stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dgunet.checkpoint import read_checkpoint
from dgunet.config import canonical_arch, config_from_yaml_string, resolve_path
from dgunet.errors import CheckpointError

SNAPSHOT = "snapshot.pth"
FORMAT = "dgunet-snapshot-1"


@dataclass
class EpochProgress:
    """The partial epoch a snapshot freezes; a fresh epoch starts as EpochProgress(epoch)."""

    epoch: int  # the epoch in progress (1-based)
    step: int = 0  # optimizer steps of it already taken
    losses: list[float] = field(default_factory=list)  # their losses, in order
    val_psnrs: list[float] = field(default_factory=list)  # validations of this epoch so far
    val_seconds: float = 0.0
    seconds: float = 0.0  # wall time this epoch spent before the current process took over


def fingerprint(cfg, num_samples: int) -> dict[str, Any]:
    """Settings that must be unchanged for step K of epoch E to mean the same samples and model."""
    m, t, d = cfg.MODEL, cfg.TRAIN, cfg.DATA
    return {
        "MODEL.TASK": m.TASK, "MODEL.ARCH": canonical_arch(m.ARCH), "MODEL.N_FEAT": m.N_FEAT,
        "MODEL.SCALE_UNETFEATS": m.SCALE_UNETFEATS, "MODEL.SCALE_ORSNETFEATS": m.SCALE_ORSNETFEATS,
        "MODEL.CS_RATIO": m.CS_RATIO, "OPTIM.BATCH_SIZE": cfg.OPTIM.BATCH_SIZE, "TRAIN.SEED": t.SEED,
        "TRAIN.PATCH_SIZE": t.PATCH_SIZE, "TRAIN.PHASE": t.PHASE,
        "DATA.TRAIN_DIR": str(resolve_path(cfg, d.TRAIN_DIR)), "DATA.LENGTH_MULTIPLIER": d.LENGTH_MULTIPLIER,
        "DATA.CROPS_PER_IMAGE": d.CROPS_PER_IMAGE, "DATA.SATURATION_AUG": d.SATURATION_AUG,
        "DATA.MIXUP_FROM_EPOCH": d.MIXUP_FROM_EPOCH, "DATA.MIXUP_ALPHA": d.MIXUP_ALPHA,
        "MODEL.GRADIENT": m.GRADIENT, "MODEL.PHI": m.PHI, "MODEL.PHI_SEED": m.PHI_SEED,
        "MODEL.NOISE_AWARE": m.NOISE_AWARE,
        **({"MODEL.START": m.START} if m.START != "adagger" else {}),  # absent: older snapshots still match
        **({"MODEL.HEAD": m.HEAD} if m.HEAD != "x0" else {}),
        **({"MODEL.DATA_CONSISTENCY": True} if m.DATA_CONSISTENCY else {}),
        "LOSS.STAGE_WEIGHTS": [float(w) for w in cfg.LOSS.STAGE_WEIGHTS],
        **({"LOSS.CORRECTION_WEIGHT": float(cfg.LOSS.CORRECTION_WEIGHT)} if cfg.LOSS.CORRECTION_WEIGHT else {}),
        # The synthetic degradations draw from these: any change alters the rest of the epoch's samples.
        **{f"DEGRADE.{k}": list(v) if isinstance(v, list | tuple) else v for k, v in cfg.DEGRADE.items()},
        "training samples": num_samples,
    }


def make_snapshot(checkpoint: dict[str, Any], progress: EpochProgress, mix_states: list[torch.Tensor],
                  accum_steps: int, setup_fingerprint: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` from checkpointing.make_checkpoint (its epoch: the last completed one)."""
    return {**checkpoint, "format": FORMAT, "progress": asdict(progress),
            "mix_rng": [s.cpu() for s in mix_states], "world_size": len(mix_states),
            "accum_steps": accum_steps, "fingerprint": setup_fingerprint}


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Temporary files a SIGKILL left in the middle of an atomic write (the targets are intact)."""
    stale = sorted(Path(out_dir).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_snapshot(out_dir: Path, latest_epoch: int) -> dict[str, Any] | None:
    """The snapshot of the epoch after `latest_epoch` (model_latest.pth's), or None.

    An older snapshot (its epoch finished and was saved as model_latest.pth since) is ignored.
    """
    path = Path(out_dir) / SNAPSHOT
    if not path.is_file():
        return None
    snap = read_checkpoint(path)
    if not isinstance(snap, dict) or snap.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a snapshot of this engine (format {FORMAT}); move it away "
                              f"to resume from model_latest.pth")
    return snap if snap["progress"]["epoch"] > latest_epoch else None


def check_fingerprint(snap: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse a snapshot of another setup, naming every difference."""
    saved = snap.get("fingerprint", {})
    diffs = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in now.items() if saved.get(key) != value]
    if diffs:
        raise CheckpointError(
            f"--resume: {path} was written with another setup ({'; '.join(diffs)}), so its position "
            f"(epoch {snap['progress']['epoch']}, step {snap['progress']['step']}) would mean other samples "
            f"or another model. Restore those settings, or move {path.name} away to resume from "
            f"model_latest.pth (epoch {snap['epoch']})")


# What a resume from an epoch boundary (model_latest.pth) refuses to change: the model itself, the
# data it learns from and the batch the recipe's lr goes with. The rest of the fingerprint (seed,
# patch, augmentation) may change between epochs; _recipe_changes warns about MODEL / OPTIM keys.
BOUNDARY_KEYS = ("MODEL.TASK", "MODEL.ARCH", "MODEL.N_FEAT", "MODEL.SCALE_UNETFEATS", "MODEL.SCALE_ORSNETFEATS",
                 "MODEL.CS_RATIO", "MODEL.GRADIENT", "MODEL.PHI", "MODEL.PHI_SEED", "MODEL.NOISE_AWARE",
                 "MODEL.START", "MODEL.HEAD", "MODEL.DATA_CONSISTENCY",
                 "LOSS.STAGE_WEIGHTS", "LOSS.CORRECTION_WEIGHT", "OPTIM.BATCH_SIZE", "TRAIN.PHASE",
                 "DATA.TRAIN_DIR")


def boundary_fingerprint(full: dict[str, Any]) -> dict[str, Any]:
    """The part of a `fingerprint` that an epoch-boundary resume must find unchanged."""
    return {k: v for k, v in full.items() if k in BOUNDARY_KEYS or k.startswith("DEGRADE.")}


def check_boundary(ckpt: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume `ckpt` (an epoch checkpoint) under another model, data folder, batch or
    degradation, naming each changed key with its old and new value.

    The settings come from the config the checkpoint stores (every engine checkpoint has one).
    """
    text = ckpt.get("config")
    if not text:
        return  # not written by this engine: load_resume_state has refused it already
    saved = boundary_fingerprint(fingerprint(config_from_yaml_string(text), 0))
    diffs = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in boundary_fingerprint(now).items()
             if saved.get(key) != value]
    if diffs:
        raise CheckpointError(
            f"--resume: {path} (epoch {ckpt['epoch']}) was trained with another setup ({'; '.join(diffs)}); "
            f"continuing it would train another model, on other data or with another batch. Restore those "
            f"settings, or start a new run (OUTPUT.NAME) with TRAIN.INIT_FROM {path}")


def progress_of(snap: dict[str, Any]) -> EpochProgress:
    p = snap["progress"]
    return EpochProgress(int(p["epoch"]), int(p["step"]), [float(x) for x in p["losses"]],
                         [float(x) for x in p["val_psnrs"]], float(p["val_seconds"]), float(p["seconds"]))
