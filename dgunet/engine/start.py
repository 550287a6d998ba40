"""Start or resume a training run: the `Run` that the loop in dgunet/engine/trainer.py carries.

A fresh run deletes an older snapshot, loads the task's initial weights, takes the warm-up
schedule's first step and saves epoch 0 as model_latest.pth. --resume loads model_latest.pth,
or snapshot.pth when that is ahead of it, after checking that each belongs to this setup
(dgunet/engine/snapshots.py), and restores weights, optimizer, schedule, scaler and RNGs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dgunet.checkpoint import init_weights, load_weights, save_atomic
from dgunet.config import canonical_arch, config_from_yaml_string, resolve_path
from dgunet.data.synthetic import DegradeSpec
from dgunet.engine import checkpointing as ckpts
from dgunet.engine import snapshots
from dgunet.engine.data import train_loader, train_set, val_set
from dgunet.engine.distributed import BatchPlan, DistEnv
from dgunet.engine.hooks import TaskHooks, hooks_for
from dgunet.engine.records import Records, read_metrics
from dgunet.engine.signals import StopSignal
from dgunet.engine.steps import Engine, build_engine, initial_step
from dgunet.errors import ConfigError


@dataclass
class Run:
    """What lives for the whole run: the engine, the data, the records and the best score so far."""

    cfg: object
    env: DistEnv
    plan: BatchPlan
    out: Path
    hooks: TaskHooks
    records: Records
    train_data: object
    val_data: object  # None: no validation, no best model
    config_yaml: str  # stored in every checkpoint
    eng: Engine
    first: int = 1  # the first epoch this process trains
    last: int = 0  # the last one (TRAIN.STOP_AT_EPOCH or OPTIM.NUM_EPOCHS)
    best_psnr: float | None = None
    best_epoch: int = 0
    snap: dict | None = None  # a mid-epoch snapshot ahead of model_latest.pth, being resumed
    loader: object = None
    sampler: object = None
    spec: DegradeSpec | None = None  # None: published data, no operator
    setup_fingerprint: dict = field(default_factory=dict)
    last_snapshot: float = 0.0  # time.monotonic() of the last resume point written
    stop: StopSignal = field(default_factory=StopSignal)

    def checkpoint(self, epoch: int) -> dict:
        """An engine checkpoint of the current weights, labelled as the end of `epoch`."""
        e = self.eng
        return ckpts.make_checkpoint(epoch, e.raw, e.optimizer, e.scheduler, e.scaler, self.best_psnr,
                                     self.best_epoch, self.config_yaml)


def start_or_resume(cfg, env: DistEnv, plan: BatchPlan, device: torch.device, out: Path) -> Run:
    """Data, model and optimizer: fresh (epoch 0 saved) or restored from the run in `out`."""
    done = read_metrics(out)
    if not cfg.TRAIN.RESUME and done and (out / ckpts.LATEST).is_file():
        raise ConfigError(f"{out} already holds a run ({len(done)} epochs in metrics.jsonl); pass --resume "
                          f"to continue it, or set OUTPUT.NAME / OUTPUT.DIR for a new run")
    # Read the data first: a wrong path should fail now, not after the first epoch.
    train_data, val_data = train_set(cfg), val_set(cfg)
    records = Records(out, env.is_main, cfg.OUTPUT.TENSORBOARD)
    config_yaml = cfg.dump()
    eng = build_engine(cfg, env, device)  # seeds the global RNGs: every draw below follows from TRAIN.SEED
    run = Run(cfg, env, plan, out, hooks_for(cfg), records, train_data, val_data, config_yaml, eng)
    if cfg.TRAIN.RESUME:
        _resume(run)
    else:
        _start_fresh(run)
    run.loader, run.sampler = train_loader(train_data, plan, env, cfg, device)
    run.spec = DegradeSpec.from_cfg(cfg)
    run.last = min(cfg.TRAIN.STOP_AT_EPOCH or cfg.OPTIM.NUM_EPOCHS, cfg.OPTIM.NUM_EPOCHS)
    records.print(_describe_start(run))
    records.save_config(config_yaml)
    if not cfg.TRAIN.RESUME and env.is_main:
        save_atomic(run.checkpoint(0), out / ckpts.LATEST)  # the resume point of an interrupted epoch 1
    run.setup_fingerprint = snapshots.fingerprint(cfg, len(train_data))
    run.last_snapshot = time.monotonic()
    return run


def _start_fresh(run: Run) -> None:
    """A new run: no earlier snapshot, the task's initial weights, the schedule's first step."""
    cfg = run.cfg
    run.records.keep_epochs_up_to(0)
    if run.env.is_main:  # a snapshot of an earlier run here must never be taken for this run's
        (run.out / snapshots.SNAPSHOT).unlink(missing_ok=True)
    init = cfg.TRAIN.INIT_FROM or run.hooks.default_init(cfg)
    if init:
        kept = init_weights(run.eng.raw, resolve_path(cfg, init))
        fresh = f" ({', '.join(kept)}: not in the file, left at their initialisation)" if kept else ""
        run.records.print(f"initialised from {resolve_path(cfg, init)}{fresh}")
    initial_step(cfg, run.eng.scheduler)


def _resume(run: Run) -> None:
    """Continue from model_latest.pth, or from snapshot.pth when that is ahead of it."""
    ckpt, source = _resume_point(run)
    eng = run.eng
    load_weights(eng.raw, ckpt["state_dict"], source=str(source))
    eng.optimizer.load_state_dict(ckpt["optimizer"])
    eng.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and eng.scaler.is_enabled():
        eng.scaler.load_state_dict(ckpt["scaler"])
    ckpts.set_rng_state(ckpt["rng"])
    run.first = ckpt["epoch"] + 1  # the epoch after the last completed one (a snapshot's is in progress)
    run.best_psnr, run.best_epoch = ckpt.get("best_psnr"), ckpt.get("best_epoch", 0)
    # A best found in an epoch that was interrupted (and is re-run) is already on disk.
    on_disk, on_disk_epoch = ckpts.recorded_best(run.out)
    if on_disk is not None and (run.best_psnr is None or on_disk > run.best_psnr):
        run.best_psnr, run.best_epoch = on_disk, on_disk_epoch
    for change in _recipe_changes(ckpt.get("config", ""), run.cfg):
        run.records.print(f"warning: resuming with a changed recipe: {change}")
    run.records.keep_epochs_up_to(ckpt["epoch"])
    where = (f"{run.out / snapshots.SNAPSHOT}: epoch {run.first} at step {run.snap['progress']['step']}"
             if run.snap else f"{run.out / ckpts.LATEST}: epoch {ckpt['epoch']} done")
    run.records.print(f"resumed from {where}, best PSNR {run.best_psnr}")


def _resume_point(run: Run) -> tuple[dict, Path]:
    """(checkpoint, its path): the snapshot when one is ahead of model_latest.pth, each checked
    to belong to this setup; sets run.snap."""
    out = run.out
    ckpt = ckpts.load_resume_state(out)
    if run.env.is_main:
        snapshots.remove_stale_temporaries(out)  # left by a SIGKILL during a write
    run.snap = snapshots.load_snapshot(out, ckpt["epoch"])
    now = snapshots.fingerprint(run.cfg, len(run.train_data))
    if run.snap is not None:  # its check names every difference, the epoch boundary's the main ones
        snapshots.check_fingerprint(run.snap, now, out / snapshots.SNAPSHOT)
    snapshots.check_boundary(ckpt, now, out / ckpts.LATEST)
    if run.snap is not None:
        return run.snap, out / snapshots.SNAPSHOT
    return ckpt, out / ckpts.LATEST


def first_resume_point(run: Run) -> str:
    """What is on disk to continue from before this process takes its first step."""
    if run.snap is not None:
        p = run.snap["progress"]
        return f"{run.out / snapshots.SNAPSHOT} (epoch {p['epoch']}, step {p['step']})"
    return f"{run.out / ckpts.LATEST} (epoch {run.first - 1})"


def _recipe_changes(saved_yaml: str, cfg) -> list[str]:
    saved = config_from_yaml_string(saved_yaml)
    return [f"{node}.{key}: {saved[node][key]!r} -> {cfg[node][key]!r}"
            for node in ("MODEL", "OPTIM") for key in cfg[node] if saved[node][key] != cfg[node][key]]


def _describe_start(run: Run) -> str:
    eng, cfg = run.eng, run.cfg
    dev = eng.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    params = sum(p.numel() for p in eng.raw.parameters())
    return "\n".join([
        f"training {canonical_arch(cfg.MODEL.ARCH)} for {run.hooks.title(cfg)}: {params:,} parameters",
        f"device {dev} ({name}), world size {eng.env.world_size}",
        run.plan.describe(),
        f"{len(run.train_data)} training samples -> {run.sampler.steps} optimizer steps per epoch; epochs "
        f"{run.first}..{run.last} of {cfg.OPTIM.NUM_EPOCHS}; patch {cfg.TRAIN.PATCH_SIZE}",
        f"speed {cfg.TRAIN.SPEED}: {eng.speed.describe()}; output {run.out}",
    ])
