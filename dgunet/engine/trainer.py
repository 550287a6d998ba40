"""The training loop: one function, `train(cfg)`, read top to bottom.

Per epoch e (1-based): the lr the scheduler set is used for the whole epoch; the sampler and
the datasets draw their randomness from (seed, e), so an epoch is a pure function of the
state at its start. After the epoch: scheduler.step(), then model_latest.pth, which always
describes an epoch boundary (a fresh run writes epoch 0 before training). Inside an epoch,
snapshot.pth freezes the exact step (dgunet/engine/snapshots.py): every TRAIN.SNAPSHOT_MINUTES,
and when SIGTERM/SIGINT stops the run after finishing its current step. --resume continues
from the snapshot when it is ahead of model_latest.pth. A non-finite loss saves nothing, and
weights are checked finite before every save. The run folder is locked for the whole run
(dgunet/engine/lock.py): one training per folder.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from warmup_scheduler import GradualWarmupScheduler

from dgunet.checkpoint import first_non_finite, load_weights, save_atomic
from dgunet.config import canonical_arch, config_from_yaml_string, cosine_t_max, output_dir, resolve_path
from dgunet.data.seeding import seed_everything
from dgunet.data.synthetic import DegradeSpec
from dgunet.engine import checkpointing as ckpts
from dgunet.engine import snapshots
from dgunet.engine.data import default_phase1_weights, split_batch, train_loader, train_set, val_set, validate
from dgunet.engine.distributed import (
    DistEnv,
    any_rank,
    barrier,
    batch_plan,
    gather_to_all,
    pick_device,
    set_cudnn,
    setup,
    sum_over_ranks,
    teardown,
)
from dgunet.engine.lock import run_lock
from dgunet.engine.records import Records, read_metrics
from dgunet.engine.speed import AMP_DTYPES, SpeedOptions, make_adam, prepare_model, speed_options
from dgunet.errors import CheckpointError, ConfigError, DGUNetError
from dgunet.losses import mixup, stage_loss
from dgunet.models import build_model


class NonFiniteLossError(DGUNetError):
    """The training loss or the weights became NaN or infinite; nothing non-finite was saved."""


# ---------------------------------------------------------------- building blocks

def build_model_from_cfg(cfg) -> nn.Module:
    """The published model of MODEL.TASK / MODEL.ARCH; non-zero MODEL widths override it."""
    m = cfg.MODEL
    widths = {"n_feat": m.N_FEAT, "scale_unetfeats": m.SCALE_UNETFEATS,
              "scale_orsnetfeats": m.SCALE_ORSNETFEATS}
    overrides = {k: v for k, v in widths.items() if v}
    if m.TASK == "cs":
        overrides["cs_ratio"] = m.CS_RATIO
        if m.PHI != "learned":  # published models take no such argument: pass only what differs
            overrides.update(phi=m.PHI, phi_seed=m.PHI_SEED)
    elif m.GRADIENT != "learned":
        overrides["gradient"] = m.GRADIENT
        if m.NOISE_AWARE:
            overrides["noise_aware"] = True
    return build_model(m.TASK, canonical_arch(m.ARCH), **overrides)


def build_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """The per-epoch lr schedule; call `initial_step` once before the first epoch of a run."""
    o = cfg.OPTIM
    if o.SCHEDULE == "cosine":
        cosine = CosineAnnealingLR(optimizer, T_max=cosine_t_max(cfg), eta_min=o.LR_MIN)
        return GradualWarmupScheduler(optimizer, multiplier=o.WARMUP_MULTIPLIER,
                                      total_epoch=o.WARMUP_EPOCHS, after_scheduler=cosine)
    milestones = list(o.MILESTONES) if o.SCHEDULE == "multistep" else []  # no milestone: constant
    return MultiStepLR(optimizer, milestones=milestones, gamma=o.GAMMA)


def initial_step(cfg, scheduler) -> None:
    """The published warm-up scheduler is stepped once before epoch 1 (so epoch 1 uses lr/3);
    MultiStepLR and the constant schedule start at the base lr."""
    if cfg.OPTIM.SCHEDULE == "cosine":
        scheduler.step()


def compute_loss(outputs: list[Tensor], target: Tensor, cfg) -> Tensor:
    """The task's published objective, in float32 whatever the autocast dtype."""
    outputs = [o.float() for o in outputs]
    if cfg.LOSS.CLAMP:
        outputs = [o.clamp(0, 1) for o in outputs]
    return stage_loss(outputs, target.float(), cfg.MODEL.TASK, edge_weight=cfg.LOSS.EDGE_WEIGHT,
                      eps=cfg.LOSS.CHARBONNIER_EPS, stage_weights=list(cfg.LOSS.STAGE_WEIGHTS) or None)


@dataclass
class Engine:
    """Everything one optimizer step needs."""

    cfg: object
    env: DistEnv
    device: torch.device
    raw: nn.Module  # the bare model: checkpoints, validation
    model: nn.Module  # what training calls: raw, DDP(raw), or compiled
    ddp: DDP | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None = None
    speed: SpeedOptions = field(default_factory=SpeedOptions)

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def build_engine(cfg, env: DistEnv, device: torch.device) -> Engine:
    seed_everything(cfg.TRAIN.SEED)  # same initial weights on every rank and every run
    speed = speed_options(cfg, device)  # TRAIN.SPEED's preset or the TRAIN keys (dgunet.engine.speed)
    raw = prepare_model(build_model_from_cfg(cfg).to(device), speed)
    amp_dtype = AMP_DTYPES[speed.amp]
    o = cfg.OPTIM
    optimizer = make_adam(raw.parameters(), speed, lr=o.LR_INITIAL, betas=o.BETAS, eps=o.EPS,
                          weight_decay=o.WEIGHT_DECAY)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=speed.amp == "fp16")
    ddp = None
    model = raw
    if env.enabled:
        # Some published parameters never get a gradient (DGUNet's `basic.concat12`, the CS
        # stages' phi/phit), so DDP must look for unused parameters.
        ddp = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=True)
        model = ddp
    if speed.compile:
        model = torch.compile(model)
    return Engine(cfg, env, device, raw, model, ddp, optimizer, scheduler, scaler, amp_dtype, speed)


@dataclass
class StepResult:
    status: str  # "ok" or "nonfinite" (nothing stepped)
    loss: float  # mean over ranks of the step's loss
    stop: bool = False  # some rank was signalled: the step is taken, then the loop snapshots and exits
    snapshot: bool = False  # some rank asked for a snapshot after this step


def accumulate_gradients(eng: Engine, pairs: list[tuple[Tensor, Tensor]],
                         stop_requested: bool | Callable[[], bool] = False,
                         snapshot_due: bool = False) -> StepResult:
    """Forward and backward of this rank's micro-batches `pairs` [(input, target), ...].

    Each micro-batch loss is a mean over its samples, divided by the number of micro-batches,
    so the summed gradient is that of the mean over this rank's share of the batch; DDP then
    averages over ranks: the gradient of the mean over the global batch, as with one big batch.
    DDP synchronises only on the last micro-batch (`no_sync` on the others).
    `stop_requested` may be a callable, read just before the collective: a signal that arrives
    during this step's forward and backward then stops the run right after this step.
    """
    accum = len(pairs)
    step_loss = torch.zeros((), device=eng.device)
    for i, (inp, target, *op) in enumerate(pairs):  # op: the known operator, when the data has one
        skip_sync = eng.ddp is not None and i < accum - 1
        with eng.ddp.no_sync() if skip_sync else nullcontext():
            with eng.autocast():
                outputs = eng.model(inp) if not op or op[0] is None else eng.model(inp, physics=op[0])
            loss = compute_loss(outputs, target, eng.cfg) / accum
            eng.scaler.scale(loss).backward()
        step_loss += loss.detach()
    # One collective per step tells every rank whether any rank was signalled, wants a snapshot
    # (a time trigger reads each rank's own clock) or saw a bad loss: all take the same branch.
    finite = bool(torch.isfinite(step_loss))
    if callable(stop_requested):
        stop_requested = stop_requested()
    stop, bad, total, snap = sum_over_ranks([float(stop_requested), float(not finite),
                                             float(step_loss) if finite else 0.0, float(snapshot_due)],
                                            eng.env, eng.device)
    if bad:
        eng.optimizer.zero_grad(set_to_none=True)
        return StepResult("nonfinite", float(step_loss))
    return StepResult("ok", total / eng.env.world_size, stop=bool(stop), snapshot=bool(snap))


def apply_gradients(eng: Engine) -> None:
    eng.scaler.step(eng.optimizer)  # with fp16, skipped when the scaled gradients overflowed
    eng.scaler.update()
    eng.optimizer.zero_grad(set_to_none=True)


def train_step(eng: Engine, pairs: list[tuple[Tensor, Tensor]],
               stop_requested: bool | Callable[[], bool] = False, snapshot_due: bool = False) -> StepResult:
    """One optimizer step; nothing is stepped when a rank saw a bad loss."""
    result = accumulate_gradients(eng, pairs, stop_requested, snapshot_due)
    if result.status == "ok":
        apply_gradients(eng)
    return result


def validation_steps(cfg, epoch: int, steps: int) -> set[int]:
    """After which steps (1-based) of `epoch` to validate; empty in a non-validating epoch."""
    v = cfg.VAL
    due = (v.EVERY and epoch % v.EVERY == 0) or epoch in v.EPOCHS or (
        v.EVERY_EPOCH_FROM and epoch >= v.EVERY_EPOCH_FROM)
    if not due or steps == 0:
        return set()
    return {max(1, math.ceil(k * steps / v.PER_EPOCH)) for k in range(1, v.PER_EPOCH + 1)}


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from (seed, epoch, rank, stream): independent streams, no arithmetic collisions."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class StopSignal:
    """SIGINT/SIGTERM set a flag instead of killing: the loop finishes its optimizer step, writes a
    snapshot and exits (130 / 143).

    The first signal restores the previous handlers, so a second signal kills at once (Ctrl-C
    twice). It also starts a `grace_seconds` timer: when the step and the snapshot have not
    finished by then, the process logs what is kept on disk (`kept`, kept current by the loop)
    and exits with 128 + signal, before a scheduler's SIGKILL would.
    """

    def __init__(self, grace_seconds: float = 0.0, log=None) -> None:
        self.signum: int | None = None
        self.grace_seconds = grace_seconds
        self.kept = "nothing yet"
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._old: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.signum = signum
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self._log(f"signal {self.signum}: the current step and its snapshot did not finish within the grace "
                  f"period of {self.grace_seconds:g} s (TRAIN.STOP_GRACE_SECONDS); exiting now. Kept on "
                  f"disk: {self.kept}. Continue with --resume.")
        os._exit(128 + (self.signum or signal.SIGTERM))  # a thread cannot raise into the main one

    def __exit__(self, *_exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None


@dataclass
class TrainResult:
    out_dir: Path
    last_epoch: int  # last completed epoch
    best_psnr: float | None
    best_epoch: int
    interrupted_by: int | None = None  # signal number when stopped by a signal
    model: nn.Module | None = field(default=None, repr=False)  # the trained bare model

    @property
    def exit_code(self) -> int:
        """0, or 128 + signal number (130 SIGINT, 143 SIGTERM) like a shell reports a killed job."""
        return 128 + self.interrupted_by if self.interrupted_by else 0


# ---------------------------------------------------------------- the run

def train(cfg) -> TrainResult:
    """Train per `cfg` (a validated, frozen config). Runs under torchrun too."""
    owns_group = not torch.distributed.is_initialized()
    env = setup()
    try:
        return _train(cfg, env)
    finally:
        if owns_group:
            teardown(env)


def _describe_start(cfg, eng: Engine, plan, steps: int, samples: int, first: int, last: int, out: Path) -> str:
    dev = eng.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    params = sum(p.numel() for p in eng.raw.parameters())
    task = cfg.MODEL.TASK
    if task == "cs":
        task += f" ratio {cfg.MODEL.CS_RATIO:g}% phase {cfg.TRAIN.PHASE}"
    return "\n".join([
        f"training {canonical_arch(cfg.MODEL.ARCH)} for {task}: {params:,} parameters",
        f"device {dev} ({name}), world size {eng.env.world_size}",
        plan.describe(),
        f"{samples} training samples -> {steps} optimizer steps per epoch; epochs {first}..{last} "
        f"of {cfg.OPTIM.NUM_EPOCHS}; patch {cfg.TRAIN.PATCH_SIZE}",
        f"speed {cfg.TRAIN.SPEED}: {eng.speed.describe()}; output {out}",
    ])


def _recipe_changes(saved_yaml: str, cfg) -> list[str]:
    saved = config_from_yaml_string(saved_yaml)
    return [f"{node}.{key}: {saved[node][key]!r} -> {cfg[node][key]!r}"
            for node in ("MODEL", "OPTIM") for key in cfg[node] if saved[node][key] != cfg[node][key]]


def _snapshot_due(cfg, step: int, seconds_since_last: float) -> bool:
    """Whether this rank asks for a snapshot after optimizer step `step` (1-based) of the epoch."""
    t = cfg.TRAIN
    by_steps = t.SNAPSHOT_EVERY_STEPS and step % t.SNAPSHOT_EVERY_STEPS == 0
    by_time = t.SNAPSHOT_MINUTES and seconds_since_last >= 60 * t.SNAPSHOT_MINUTES
    return bool(by_steps or by_time)


def _require_finite_weights(eng: Engine, kept: str, target: Path) -> None:
    """NonFiniteLossError instead of writing NaN weights to `target`; `kept` stays the last finite state.

    A step whose loss was finite can still leave NaN or inf weights (an overflowing gradient);
    every rank checks its own (identical) weights, so all ranks stop together.
    """
    bad = first_non_finite(eng.raw.state_dict())
    if bad is not None:
        raise NonFiniteLossError(
            f"the weights became non-finite (first in {bad!r}), so {target} was not written. The last "
            f"finite state is {kept}. Lower OPTIM.LR_INITIAL, or use --amp bf16 / none instead of fp16, "
            f"then continue with --resume.")


def _restore_mix_rng(mix_rng: torch.Generator, snap: dict, env: DistEnv, plan, records: Records) -> None:
    """This rank's MixUp generator as the snapshot saved it. Another world size or accumulation
    cuts the rest of the epoch into other micro-batches, so no saved stream fits: a fresh one."""
    if snap["world_size"] == env.world_size and snap["accum_steps"] == plan.accum_steps:
        mix_rng.set_state(snap["mix_rng"][env.rank])
        return
    p = snap["progress"]
    mix_rng.manual_seed(stream_seed(snap["fingerprint"]["TRAIN.SEED"], p["epoch"], env.rank, 1, p["step"]))
    records.print(f"warning: the snapshot was taken with world size {snap['world_size']} x accumulation "
                  f"{snap['accum_steps']}, now {env.world_size} x {plan.accum_steps}: the samples of each "
                  f"step are the same, but the MixUp pairs of the rest of this epoch differ from an "
                  f"uninterrupted run")


def _train(cfg, env: DistEnv) -> TrainResult:
    plan = batch_plan(cfg.OPTIM.BATCH_SIZE, cfg.TRAIN.ACCUM_STEPS, env.world_size)
    device = pick_device(env)
    if device.type == "cuda":
        set_cudnn(cfg.TRAIN.CUDNN_BENCHMARK)  # false: also deterministic kernels
    out = output_dir(cfg)
    # Before anything is read or written there: a second training on the folder is refused.
    with run_lock(out, env.is_main, lambda failed: any_rank([failed], env, device)[0]):
        try:
            return _run(cfg, env, plan, device, out)
        finally:
            Records.close_progress_bars()


def _run(cfg, env: DistEnv, plan, device: torch.device, out: Path) -> TrainResult:
    """The run itself, with the output folder locked."""
    done = read_metrics(out)
    if not cfg.TRAIN.RESUME and done and (out / ckpts.LATEST).is_file():
        raise ConfigError(f"{out} already holds a run ({len(done)} epochs in metrics.jsonl); pass --resume "
                          f"to continue it, or set OUTPUT.NAME / OUTPUT.DIR for a new run")
    # Read the data first: a wrong path should fail now, not after the first epoch.
    train_data, val_data = train_set(cfg), val_set(cfg)
    records = Records(out, env.is_main, cfg.OUTPUT.TENSORBOARD)
    config_yaml = cfg.dump()
    eng = build_engine(cfg, env, device)

    best_psnr, best_epoch, start = None, 0, 1
    snap = None  # a mid-epoch snapshot ahead of model_latest.pth
    if cfg.TRAIN.RESUME:
        ckpt = ckpts.load_resume_state(out)
        if env.is_main:
            snapshots.remove_stale_temporaries(out)  # left by a SIGKILL during a write
        snap = snapshots.load_snapshot(out, ckpt["epoch"])
        now = snapshots.fingerprint(cfg, len(train_data))
        resumed_from = out / ckpts.LATEST
        if snap is not None:  # its check names every difference, the epoch boundary's the main ones
            snapshots.check_fingerprint(snap, now, out / snapshots.SNAPSHOT)
        snapshots.check_boundary(ckpt, now, resumed_from)
        if snap is not None:
            resumed_from = out / snapshots.SNAPSHOT
            ckpt = snap
        load_weights(eng.raw, ckpt["state_dict"], source=str(resumed_from))
        eng.optimizer.load_state_dict(ckpt["optimizer"])
        eng.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and eng.scaler.is_enabled():
            eng.scaler.load_state_dict(ckpt["scaler"])
        ckpts.set_rng_state(ckpt["rng"])
        start, best_psnr, best_epoch = ckpt["epoch"] + 1, ckpt.get("best_psnr"), ckpt.get("best_epoch", 0)
        on_disk, on_disk_epoch = ckpts.recorded_best(out)
        if on_disk is not None and (best_psnr is None or on_disk > best_psnr):
            best_psnr, best_epoch = on_disk, on_disk_epoch
        for change in _recipe_changes(ckpt.get("config", ""), cfg):
            records.print(f"warning: resuming with a changed recipe: {change}")
        records.keep_epochs_up_to(ckpt["epoch"])
        where = (f"{out / snapshots.SNAPSHOT}: epoch {start} at step {snap['progress']['step']}" if snap
                 else f"{out / ckpts.LATEST}: epoch {ckpt['epoch']} done")
        records.print(f"resumed from {where}, best PSNR {best_psnr}")
    else:
        records.keep_epochs_up_to(0)
        if env.is_main:  # a snapshot of an earlier run here must never be taken for this run's
            (out / snapshots.SNAPSHOT).unlink(missing_ok=True)
        init = cfg.TRAIN.INIT_FROM
        if not init and cfg.MODEL.TASK == "cs" and cfg.TRAIN.PHASE == 2:
            init = str(default_phase1_weights(cfg))
            if not Path(init).is_file():
                raise CheckpointError(f"phase 2 starts from phase 1's best weights, expected at {init}; train "
                                      f"phase 1 first (same --cs-ratio) or pass --init-from PATH")
        if init:
            load_weights(eng.raw, resolve_path(cfg, init))
            records.print(f"initialised from {resolve_path(cfg, init)}")
        initial_step(cfg, eng.scheduler)

    loader, sampler = train_loader(train_data, plan, env, cfg, device)
    degrade_spec = DegradeSpec.from_cfg(cfg)  # None: published data, no operator
    last = min(cfg.TRAIN.STOP_AT_EPOCH or cfg.OPTIM.NUM_EPOCHS, cfg.OPTIM.NUM_EPOCHS)
    records.print(_describe_start(cfg, eng, plan, sampler.steps, len(train_data), start, last, out))
    records.save_config(config_yaml)

    def checkpoint(epoch: int) -> dict:
        return ckpts.make_checkpoint(epoch, eng.raw, eng.optimizer, eng.scheduler, eng.scaler,
                                     best_psnr, best_epoch, config_yaml)

    if not cfg.TRAIN.RESUME and env.is_main:
        save_atomic(checkpoint(0), out / ckpts.LATEST)  # the resume point of an interrupted epoch 1

    result = TrainResult(out, start - 1, best_psnr, best_epoch, model=eng.raw)
    setup_fingerprint = snapshots.fingerprint(cfg, len(train_data))
    resumed = snapshots.progress_of(snap) if snap is not None else None
    last_snapshot = time.monotonic()
    with StopSignal(cfg.TRAIN.STOP_GRACE_SECONDS, records.print) as stop:
        stop.kept = (f"{out / snapshots.SNAPSHOT} (epoch {resumed.epoch}, step {resumed.step})" if resumed
                     else f"{out / ckpts.LATEST} (epoch {start - 1})")
        for epoch in range(start, last + 1):
            t_epoch = time.perf_counter()
            # A resumed epoch continues where its snapshot stopped; the others start empty.
            progress = snapshots.EpochProgress(epoch)
            if resumed is not None and resumed.epoch == epoch:
                progress = resumed
            sampler.set_epoch(epoch, progress.step)  # skips the steps taken: their images are not read
            train_data.set_epoch(epoch)
            loader.generator.manual_seed(stream_seed(cfg.TRAIN.SEED, epoch, env.rank, 0))
            mixing = cfg.MODEL.TASK != "cs" and 0 < cfg.DATA.MIXUP_FROM_EPOCH <= epoch
            mix_rng = torch.Generator().manual_seed(stream_seed(cfg.TRAIN.SEED, epoch, env.rank, 1))
            if progress.step:
                _restore_mix_rng(mix_rng, snap, env, plan, records)
            validate_after = validation_steps(cfg, epoch, sampler.steps) if val_data is not None else set()
            lr = eng.optimizer.param_groups[0]["lr"]
            pending, stopped_mid_epoch = [], False
            bar = records.progress(epoch, last, sampler.steps, done=progress.step)
            for batch in loader:
                inp, target, op = split_batch(batch, cfg.MODEL.TASK, eng.to_device, degrade_spec)
                if mixing:  # within the micro-batch: see docs/training.md on accumulation
                    inp, target = mixup(inp, target, generator=mix_rng, alpha=cfg.DATA.MIXUP_ALPHA)
                pending.append((inp, target) if op is None else (inp, target, op))
                if len(pending) < plan.accum_steps:
                    continue
                due = _snapshot_due(cfg, progress.step + 1, time.monotonic() - last_snapshot)
                step = train_step(eng, pending, lambda: stop.requested, due)
                pending = []
                if step.status == "nonfinite":
                    bar.close()
                    raise NonFiniteLossError(
                        f"the training loss became {step.loss} at epoch {epoch}, step {progress.step + 1}; "
                        f"stopped before the optimizer step, nothing of it was saved. The last finite state is "
                        f"{stop.kept}. Lower OPTIM.LR_INITIAL, or use --amp bf16 / none instead of fp16, "
                        f"then continue with --resume.")
                progress.step += 1
                progress.losses.append(step.loss)
                bar.set_postfix(loss=f"{step.loss:.4f}", lr=f"{lr:.3g}", refresh=False)
                bar.update(1)
                if cfg.TRAIN.PRINT_EVERY and progress.step % cfg.TRAIN.PRINT_EVERY == 0:
                    records.print(f"epoch {epoch} step {progress.step}/{sampler.steps} loss {step.loss:.5f}")
                if progress.step in validate_after:
                    t_val = time.perf_counter()
                    psnr = validate(eng.raw, val_data, env, device, cfg, eng.autocast)
                    progress.val_seconds += time.perf_counter() - t_val
                    progress.val_psnrs.append(psnr)
                    records.log_validation(psnr, epoch, progress.step, sampler.steps)
                    if best_psnr is None or psnr > best_psnr:
                        best_psnr, best_epoch = psnr, epoch
                        _require_finite_weights(eng, stop.kept, out / ckpts.BEST)
                        if env.is_main:
                            save_atomic(checkpoint(epoch), out / ckpts.BEST)
                            if cfg.MODEL.TASK == "cs":
                                save_atomic(eng.raw.state_dict(), out / ckpts.CS_BEST)
                    records.print(f"epoch {epoch} step {progress.step}: val PSNR {psnr:.4f} dB "
                                  f"(best {best_psnr:.4f} at epoch {best_epoch})")
                # After the last step the epoch's own checkpoint follows: no snapshot needed.
                if (step.snapshot or step.stop) and progress.step < sampler.steps:
                    elapsed = progress.seconds + time.perf_counter() - t_epoch
                    _require_finite_weights(eng, stop.kept, out / snapshots.SNAPSHOT)
                    states = gather_to_all(mix_rng.get_state().to(device), env)  # every rank's MixUp stream
                    if env.is_main:
                        frozen = replace(progress, seconds=elapsed)
                        save_atomic(snapshots.make_snapshot(checkpoint(epoch - 1), frozen, states,
                                                            plan.accum_steps, setup_fingerprint),
                                    out / snapshots.SNAPSHOT)
                    barrier(env)  # no rank runs ahead of (or exits before) the file every rank will resume from
                    last_snapshot = time.monotonic()
                    stop.kept = f"{out / snapshots.SNAPSHOT} (epoch {epoch}, step {progress.step})"
                    if step.stop:
                        stopped_mid_epoch = True
                        break
            bar.close()
            if stopped_mid_epoch:
                records.print(f"stopped by signal {stop.signum or signal.SIGTERM} during epoch {epoch} after "
                              f"step {progress.step}/{sampler.steps}: {stop.kept} holds that step; "
                              f"model_latest.pth holds epoch {epoch - 1}. Continue with --resume.")
                result.interrupted_by = stop.signum or signal.SIGTERM
                break

            eng.scheduler.step()  # after every epoch, as published: the next epoch's lr
            _require_finite_weights(eng, stop.kept, out / ckpts.LATEST)
            if env.is_main:
                ckpt = checkpoint(epoch)
                if cfg.TRAIN.SAVE_EVERY and epoch % cfg.TRAIN.SAVE_EVERY == 0:
                    ckpts.save_epoch_checkpoint(ckpt, out, cfg.TRAIN.KEEP_LAST_K)
                if cfg.MODEL.TASK == "cs":
                    save_atomic(ckpt["state_dict"], out / ckpts.CS_LAST)
                save_atomic(ckpt, out / ckpts.LATEST)  # last: it marks the epoch as done
            stop.kept = f"{out / ckpts.LATEST} (epoch {epoch})"
            last_snapshot = time.monotonic()  # model_latest.pth is a resume point too
            seconds = progress.seconds + time.perf_counter() - t_epoch
            train_seconds = max(seconds - progress.val_seconds, 1e-9)
            losses, val_psnrs = progress.losses, progress.val_psnrs
            row = {"epoch": epoch, "lr": lr, "train_loss": float(np.mean(losses)) if losses else None,
                   "val_psnr": val_psnrs[-1] if val_psnrs else None, "best_psnr": best_psnr,
                   "best_epoch": best_epoch, "steps": len(losses), "seconds": round(seconds, 3),
                   "images_per_s": round(len(losses) * plan.batch / train_seconds, 3)}
            if len(val_psnrs) > 1:
                row["val_psnrs"] = val_psnrs
            records.log_epoch(row)
            if val_psnrs:
                records.plot()
            result.last_epoch, result.best_psnr, result.best_epoch = epoch, best_psnr, best_epoch
            # A signal during the last step, validation or saving: this epoch is complete, stop now.
            if any_rank([stop.requested], env, device)[0]:
                result.interrupted_by = stop.signum or signal.SIGTERM
                records.print(f"stopped by signal after epoch {epoch}; continue with --resume.")
                break
    records.close()
    if result.interrupted_by is None and result.last_epoch >= cfg.OPTIM.NUM_EPOCHS:
        if env.is_main:  # model_latest.pth holds the last epoch: a snapshot of an earlier one is obsolete
            (out / snapshots.SNAPSHOT).unlink(missing_ok=True)
        records.print(f"done: {cfg.OPTIM.NUM_EPOCHS} epochs, best PSNR {best_psnr} at epoch {best_epoch}")
    return result

