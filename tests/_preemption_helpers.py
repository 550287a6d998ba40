"""Runs that are stopped by SIGTERM at chosen steps and resumed, shared by the preemption tests
and their torchrun worker."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from _engine_helpers import task_config

from dgunet.checkpoint import read_checkpoint
from dgunet.engine import train
from dgunet.engine import trainer as trainer_module

# MixUp from epoch 1, two validations per epoch (one mid-epoch), a step line per step, and
# Adam's eps 1 (as in _engine_helpers.step_config: float noise must not flip a step's sign).
PREEMPT_OPTS = ["DATA.MIXUP_FROM_EPOCH", "1", "VAL.EVERY", "1", "VAL.PER_EPOCH", "2", "TRAIN.PRINT_EVERY", "1",
                "OPTIM.EPS", "1.0", "TRAIN.SNAPSHOT_MINUTES", "0"]


def preempt_config(task_dir: Path, name: str, extra: list[str] = (), resume: bool = False, batch: int = 2,
                   epochs: int = 3):
    return task_config("deraining", task_dir, [*PREEMPT_OPTS, "OUTPUT.NAME", name, *extra], epochs=epochs,
                       batch=batch, args=["--resume"] if resume else [])


@contextmanager
def sigterm_inside_steps(stop_at_steps: set[int]):
    """While active, this process gets SIGTERM inside the optimizer steps numbered `stop_at_steps`
    (counted over every launch in the block, 1-based: a stopped step is still taken)."""
    real_step, taken = trainer_module.train_step, [0]

    def signalling_step(*args, **kwargs):
        taken[0] += 1
        if taken[0] in stop_at_steps:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during this step: it finishes, then stops
        return real_step(*args, **kwargs)

    trainer_module.train_step = signalling_step
    try:
        yield taken
    finally:
        trainer_module.train_step = real_step


def run_with_sigterms(make_cfg, stop_at_steps: set[int]) -> list:
    """Train with SIGTERM inside `stop_at_steps`, and `--resume` after each stop until the run ends.

    make_cfg(resume: bool) -> config. Under DDP pass an empty set on ranks > 0: they must follow
    rank 0's stop through the per-step collective. Returns every launch's TrainResult.
    """
    results = []
    with sigterm_inside_steps(stop_at_steps):
        while True:
            results.append(train(make_cfg(bool(results))))
            if results[-1].interrupted_by is None or len(results) > 8:
                return results


def final_state(run_dir: Path) -> dict:
    """Weights and optimizer state of the last epoch, as model_latest.pth holds them."""
    ckpt = read_checkpoint(run_dir / "model_latest.pth")
    return {"weights": ckpt["state_dict"], "optimizer": ckpt["optimizer"], "epoch": ckpt["epoch"]}


def assert_bitwise_equal(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and plain values, compared exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
