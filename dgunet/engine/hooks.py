"""What differs between tasks in a training run, as a small table of callables.

The loop (dgunet/engine/trainer.py) never asks which task it trains: it calls the hooks of
`hooks_for(cfg)`. Compressive sensing differs from the image tasks in five ways: the model
takes a sampling ratio (and maybe a fixed Phi), a batch is its own target, MixUp never
applies, phase 2 starts from phase 1's best weights, and the published bare state dicts
(net_best.pkl / net_last.pkl) are written beside the engine's checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from dgunet.config import model_arguments
from dgunet.engine import checkpointing as ckpts
from dgunet.engine.data import default_phase1_weights, split_batch, validate_cs, validate_images
from dgunet.errors import CheckpointError
from dgunet.tasks import get_task

# (batch from the loader, to_device, DegradeSpec or None) -> (input, target, operator or None)
SplitBatch = Callable[[object, Callable[[Tensor], Tensor], object], tuple[Tensor, Tensor, nn.Module | None]]


@dataclass(frozen=True)
class TaskHooks:
    """The task-specific parts of training; every field is read by the loop, none by the task."""

    name: str  # MODEL.TASK
    model_overrides: Callable[[object], dict]  # cfg -> build_model arguments beyond the widths
    split: SplitBatch  # a loader batch -> (input, target, operator) on the device
    # (model in eval mode, validation data, env, device, cfg, autocast) -> mean PSNR in dB
    validate: Callable[..., float]
    title: Callable[[object], str]  # cfg -> the task as the start banner names it
    default_init: Callable[[object], str]  # cfg -> weights a fresh run starts from when TRAIN.INIT_FROM is ""
    mixup: bool = True  # whether DATA.MIXUP_FROM_EPOCH applies
    best_copy: str | None = None  # a bare state dict written beside model_best.pth, as published
    latest_copy: str | None = None  # ... and beside model_latest.pth after every epoch


def _split_as(task: str) -> SplitBatch:
    """The batch layout of `task` (dgunet.engine.data.split_batch keeps the one implementation)."""
    def split(batch, to_device, spec):
        return split_batch(batch, task, to_device, spec)
    return split


def _image_overrides(cfg) -> dict:
    """The gradient step, noise conditioning, start and head of MODEL (none for a published recipe)."""
    return model_arguments(cfg)


def _cs_overrides(cfg) -> dict:
    """The sampling ratio; a fixed Phi and its start only when asked."""
    return {"cs_ratio": cfg.MODEL.CS_RATIO, **model_arguments(cfg)}


def _cs_title(cfg) -> str:
    return f"cs ratio {cfg.MODEL.CS_RATIO:g}% phase {cfg.TRAIN.PHASE}"


def _cs_default_init(cfg) -> str:
    """Phase 2 (deblocking) continues phase 1's best weights; phase 1 starts from scratch."""
    if cfg.TRAIN.PHASE != 2:
        return ""
    init = str(default_phase1_weights(cfg))
    if not Path(init).is_file():
        raise CheckpointError(f"phase 2 starts from phase 1's best weights, expected at {init}; train "
                              f"phase 1 first (same --cs-ratio) or pass --init-from PATH")
    return init


def image_hooks(task: str) -> TaskHooks:
    """Deblurring, deraining, denoising, SR: paired (or synthetic) images, PSNR on center crops."""
    return TaskHooks(name=task, model_overrides=_image_overrides, split=_split_as(task),
                     validate=validate_images, title=lambda cfg: task, default_init=lambda cfg: "")


CS_HOOKS = TaskHooks(name="cs", model_overrides=_cs_overrides, split=_split_as("cs"), validate=validate_cs,
                     title=_cs_title, default_init=_cs_default_init, mixup=False,
                     best_copy=ckpts.CS_BEST, latest_copy=ckpts.CS_LAST)


def hooks_for(cfg) -> TaskHooks:
    """The hooks of cfg.MODEL.TASK: the one place where the trainer's task differences are chosen."""
    task = get_task(cfg.MODEL.TASK)  # the task table's row says which family trains it
    return CS_HOOKS if task.is_cs else image_hooks(task.name)
