"""The training loop, `train(cfg)`: start or resume, then epochs of steps, read top to bottom.

Per epoch e (1-based): the lr the scheduler set is used for the whole epoch; the sampler and
the datasets draw their randomness from (seed, e), so an epoch is a pure function of the
state at its start. After the epoch: scheduler.step(), then model_latest.pth, which always
describes an epoch boundary (a fresh run writes epoch 0 before training). Inside an epoch,
snapshot.pth freezes the exact step (dgunet/engine/snapshots.py): every TRAIN.SNAPSHOT_MINUTES,
and when SIGTERM/SIGINT stops the run after finishing its current step (engine/signals.py).
--resume continues from the snapshot when it is ahead of model_latest.pth. A non-finite loss
saves nothing, and weights are checked finite before every save. The run folder is locked for
the whole run (dgunet/engine/lock.py): one training per folder.

What one step computes is dgunet/engine/steps.py; what differs between tasks, engine/hooks.py.
The order of random draws, optimizer steps, validations and file writes below is part of the
contract (an interrupted and resumed run equals an uninterrupted one bit for bit): keep it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dgunet.checkpoint import first_non_finite, save_atomic
from dgunet.config import output_dir
from dgunet.engine import checkpointing as ckpts
from dgunet.engine import snapshots
from dgunet.engine.distributed import (
    DistEnv,
    any_rank,
    barrier,
    batch_plan,
    gather_to_all,
    pick_device,
    set_cudnn,
    setup,
    teardown,
)
from dgunet.engine.lock import run_lock
from dgunet.engine.records import Records
from dgunet.engine.signals import StopSignal
from dgunet.engine.snapshots import EpochProgress
from dgunet.engine.start import Run, first_resume_point, start_or_resume
from dgunet.engine.steps import StepResult, evaluating, train_step
from dgunet.errors import DGUNetError
from dgunet.losses import mixup


class NonFiniteLossError(DGUNetError):
    """The training loss or the weights became NaN or infinite; nothing non-finite was saved."""


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


@dataclass
class Epoch:
    """One epoch in progress."""

    number: int
    progress: EpochProgress  # steps, losses and validations so far (a resumed epoch starts with some)
    mix_rng: torch.Generator  # this rank's MixUp stream
    mixing: bool
    validate_after: set[int]  # after which steps (1-based) to validate
    lr: float
    started: float  # time.perf_counter() when this process began the epoch
    bar: tqdm


# ---------------------------------------------------------------- the run, top to bottom

def train(cfg) -> TrainResult:
    """Train per `cfg` (a validated, frozen config). Runs under torchrun too."""
    owns_group = not torch.distributed.is_initialized()
    env = setup()
    try:
        return _train(cfg, env)
    finally:
        if owns_group:
            teardown(env)


def _train(cfg, env: DistEnv) -> TrainResult:
    plan = batch_plan(cfg.OPTIM.BATCH_SIZE, cfg.TRAIN.ACCUM_STEPS, env.world_size)
    device = pick_device(env)
    if device.type == "cuda":
        set_cudnn(cfg.TRAIN.CUDNN_BENCHMARK)  # false: also deterministic kernels
    out = output_dir(cfg)
    # Before anything is read or written there: a second training on the folder is refused.
    with run_lock(out, env.is_main, lambda failed: any_rank([failed], env, device)[0]):
        try:
            return _run(start_or_resume(cfg, env, plan, device, out))
        finally:
            Records.close_progress_bars()


def _run(run: Run) -> TrainResult:
    """The epochs, with the output folder locked; a signal stops after a step or an epoch."""
    result = TrainResult(run.out, run.first - 1, run.best_psnr, run.best_epoch, model=run.eng.raw)
    with StopSignal(run.cfg.TRAIN.STOP_GRACE_SECONDS, run.records.print) as run.stop:
        run.stop.kept = first_resume_point(run)
        for number in range(run.first, run.last + 1):
            epoch = begin_epoch(run, number)
            if not train_epoch(run, epoch):  # a signal: the snapshot holds the last step
                run.records.print(f"stopped by signal {run.stop.exit_signal} during epoch {number} after "
                                  f"step {epoch.progress.step}/{run.sampler.steps}: {run.stop.kept} holds that "
                                  f"step; model_latest.pth holds epoch {number - 1}. Continue with --resume.")
                result.interrupted_by = run.stop.exit_signal
                break
            end_epoch(run, epoch)
            result.last_epoch, result.best_psnr, result.best_epoch = number, run.best_psnr, run.best_epoch
            # A signal during the last step, validation or saving: this epoch is complete, stop now.
            if any_rank([run.stop.requested], run.env, run.eng.device)[0]:
                result.interrupted_by = run.stop.exit_signal
                run.records.print(f"stopped by signal after epoch {number}; continue with --resume.")
                break
    finish(run, result)
    return result


def begin_epoch(run: Run, number: int) -> Epoch:
    """Position the sampler, datasets and random streams at the epoch's start (or its snapshot)."""
    started = time.perf_counter()
    cfg, rank = run.cfg, run.env.rank
    # A resumed epoch continues where its snapshot stopped; the others start empty.
    resumed = snapshots.progress_of(run.snap) if run.snap is not None else None
    progress = resumed if resumed is not None and resumed.epoch == number else EpochProgress(number)
    run.sampler.set_epoch(number, progress.step)  # skips the steps taken: their images are not read
    run.train_data.set_epoch(number)
    run.loader.generator.manual_seed(stream_seed(cfg.TRAIN.SEED, number, rank, 0))
    mixing = run.hooks.mixup and 0 < cfg.DATA.MIXUP_FROM_EPOCH <= number
    mix_rng = torch.Generator().manual_seed(stream_seed(cfg.TRAIN.SEED, number, rank, 1))
    if progress.step:
        _restore_mix_rng(mix_rng, run)
    validate_after = validation_steps(cfg, number, run.sampler.steps) if run.val_data is not None else set()
    lr = run.eng.optimizer.param_groups[0]["lr"]  # the scheduler set it for the whole epoch
    bar = run.records.progress(number, run.last, run.sampler.steps, done=progress.step)
    return Epoch(number, progress, mix_rng, mixing, validate_after, lr, started, bar)


def train_epoch(run: Run, epoch: Epoch) -> bool:
    """The epoch's optimizer steps; False when a signal stopped it before its last step."""
    pending = []  # this rank's micro-batches of the coming step
    try:
        for batch in run.loader:
            pending.append(_micro_batch(run, epoch, batch))
            if len(pending) < run.plan.accum_steps:
                continue
            step = _take_step(run, epoch, pending)
            pending = []
            if epoch.progress.step in epoch.validate_after:
                validate_and_keep_best(run, epoch)
            # After the last step the epoch's own checkpoint follows: no snapshot needed.
            if (step.snapshot or step.stop) and epoch.progress.step < run.sampler.steps:
                save_snapshot(run, epoch)
                if step.stop:
                    return False
        return True
    finally:
        epoch.bar.close()


def end_epoch(run: Run, epoch: Epoch) -> None:
    """Next epoch's lr, model_latest.pth (written last: it marks the epoch done), metrics.jsonl."""
    eng, out = run.eng, run.out
    eng.scheduler.step()  # after every epoch, as published: the next epoch's lr
    _require_finite_weights(run, out / ckpts.LATEST)
    if run.env.is_main:
        ckpt = run.checkpoint(epoch.number)
        if run.cfg.TRAIN.SAVE_EVERY and epoch.number % run.cfg.TRAIN.SAVE_EVERY == 0:
            ckpts.save_epoch_checkpoint(ckpt, out, run.cfg.TRAIN.KEEP_LAST_K)
        if run.hooks.latest_copy:
            save_atomic(ckpt["state_dict"], out / run.hooks.latest_copy)
        save_atomic(ckpt, out / ckpts.LATEST)  # last: it marks the epoch as done
    run.stop.kept = f"{out / ckpts.LATEST} (epoch {epoch.number})"
    run.last_snapshot = time.monotonic()  # model_latest.pth is a resume point too
    run.records.log_epoch(_epoch_row(run, epoch))
    if epoch.progress.val_psnrs:
        run.records.plot()


def finish(run: Run, result: TrainResult) -> None:
    """Close the records; after the last epoch, an older snapshot is obsolete."""
    run.records.close()
    if result.interrupted_by is None and result.last_epoch >= run.cfg.OPTIM.NUM_EPOCHS:
        if run.env.is_main:  # model_latest.pth holds the last epoch: a snapshot of an earlier one is obsolete
            (run.out / snapshots.SNAPSHOT).unlink(missing_ok=True)
        run.records.print(f"done: {run.cfg.OPTIM.NUM_EPOCHS} epochs, best PSNR {run.best_psnr} at epoch "
                          f"{run.best_epoch}")


# ---------------------------------------------------------------- inside an epoch

def _micro_batch(run: Run, epoch: Epoch, batch) -> tuple:
    """A loader batch -> (input, target[, operator]) on the device, MixUp applied when due."""
    inp, target, op = run.hooks.split(batch, run.eng.to_device, run.spec)
    if epoch.mixing:  # within the micro-batch: see docs/training.md on accumulation
        inp, target = mixup(inp, target, generator=epoch.mix_rng, alpha=run.cfg.DATA.MIXUP_ALPHA)
    return (inp, target) if op is None else (inp, target, op)


def _take_step(run: Run, epoch: Epoch, pending: list[tuple]) -> StepResult:
    """One optimizer step over `pending`, then its loss on the bar and in the log."""
    progress, cfg = epoch.progress, run.cfg
    due = _snapshot_due(cfg, progress.step + 1, time.monotonic() - run.last_snapshot)
    # The stop flag is read inside the step, just before its collective: a signal that arrives
    # during the forward and backward still stops the run right after this step.
    step = train_step(run.eng, pending, lambda: run.stop.requested, due)
    if step.status == "nonfinite":
        raise NonFiniteLossError(
            f"the training loss became {step.loss} at epoch {epoch.number}, step {progress.step + 1}; "
            f"stopped before the optimizer step, nothing of it was saved. The last finite state is "
            f"{run.stop.kept}. Lower OPTIM.LR_INITIAL, or use --amp bf16 / none instead of fp16, "
            f"then continue with --resume.")
    progress.step += 1
    progress.losses.append(step.loss)
    epoch.bar.set_postfix(loss=f"{step.loss:.4f}", lr=f"{epoch.lr:.3g}", refresh=False)
    epoch.bar.update(1)
    if cfg.TRAIN.PRINT_EVERY and progress.step % cfg.TRAIN.PRINT_EVERY == 0:
        run.records.print(f"epoch {epoch.number} step {progress.step}/{run.sampler.steps} loss {step.loss:.5f}")
    return step


def validate_and_keep_best(run: Run, epoch: Epoch) -> None:
    """Validate the bare model; a new best is saved as model_best.pth (and the task's copy)."""
    eng, progress, out = run.eng, epoch.progress, run.out
    t_val = time.perf_counter()
    with evaluating(eng.raw):
        psnr = run.hooks.validate(eng.raw, run.val_data, run.env, eng.device, run.cfg, eng.autocast)
    progress.val_seconds += time.perf_counter() - t_val  # not counted in the epoch's images/s
    progress.val_psnrs.append(psnr)
    run.records.log_validation(psnr, epoch.number, progress.step, run.sampler.steps)
    if run.best_psnr is None or psnr > run.best_psnr:
        run.best_psnr, run.best_epoch = psnr, epoch.number
        _require_finite_weights(run, out / ckpts.BEST)
        if run.env.is_main:
            save_atomic(run.checkpoint(epoch.number), out / ckpts.BEST)
            if run.hooks.best_copy:
                save_atomic(eng.raw.state_dict(), out / run.hooks.best_copy)
    run.records.print(f"epoch {epoch.number} step {progress.step}: val PSNR {psnr:.4f} dB "
                      f"(best {run.best_psnr:.4f} at epoch {run.best_epoch})")


def save_snapshot(run: Run, epoch: Epoch) -> None:
    """snapshot.pth: the weights after this step, the epoch's progress and every rank's MixUp stream."""
    elapsed = epoch.progress.seconds + time.perf_counter() - epoch.started
    _require_finite_weights(run, run.out / snapshots.SNAPSHOT)
    states = gather_to_all(epoch.mix_rng.get_state().to(run.eng.device), run.env)  # a collective: all ranks
    if run.env.is_main:
        frozen = replace(epoch.progress, seconds=elapsed)
        # Labelled with the last *completed* epoch: a resume re-enters this one at its step.
        save_atomic(snapshots.make_snapshot(run.checkpoint(epoch.number - 1), frozen, states,
                                            run.plan.accum_steps, run.setup_fingerprint),
                    run.out / snapshots.SNAPSHOT)
    barrier(run.env)  # no rank runs ahead of (or exits before) the file every rank will resume from
    run.last_snapshot = time.monotonic()
    run.stop.kept = f"{run.out / snapshots.SNAPSHOT} (epoch {epoch.number}, step {epoch.progress.step})"


def _epoch_row(run: Run, epoch: Epoch) -> dict:
    """The epoch's line of metrics.jsonl; its wall time includes the part before a resume."""
    progress = epoch.progress
    seconds = progress.seconds + time.perf_counter() - epoch.started
    train_seconds = max(seconds - progress.val_seconds, 1e-9)
    losses, val_psnrs = progress.losses, progress.val_psnrs
    row = {"epoch": epoch.number, "lr": epoch.lr, "train_loss": float(np.mean(losses)) if losses else None,
           "val_psnr": val_psnrs[-1] if val_psnrs else None, "best_psnr": run.best_psnr,
           "best_epoch": run.best_epoch, "steps": len(losses), "seconds": round(seconds, 3),
           "images_per_s": round(len(losses) * run.plan.batch / train_seconds, 3)}
    if len(val_psnrs) > 1:
        row["val_psnrs"] = val_psnrs
    return row


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


def _snapshot_due(cfg, step: int, seconds_since_last: float) -> bool:
    """Whether this rank asks for a snapshot after optimizer step `step` (1-based) of the epoch."""
    t = cfg.TRAIN
    by_steps = t.SNAPSHOT_EVERY_STEPS and step % t.SNAPSHOT_EVERY_STEPS == 0
    by_time = t.SNAPSHOT_MINUTES and seconds_since_last >= 60 * t.SNAPSHOT_MINUTES
    return bool(by_steps or by_time)


def _require_finite_weights(run: Run, target: Path) -> None:
    """NonFiniteLossError instead of writing NaN weights to `target`; stop.kept stays the last finite state.

    A step whose loss was finite can still leave NaN or inf weights (an overflowing gradient);
    every rank checks its own (identical) weights, so all ranks stop together.
    """
    bad = first_non_finite(run.eng.raw.state_dict())
    if bad is not None:
        raise NonFiniteLossError(
            f"the weights became non-finite (first in {bad!r}), so {target} was not written. The last "
            f"finite state is {run.stop.kept}. Lower OPTIM.LR_INITIAL, or use --amp bf16 / none instead of "
            f"fp16, then continue with --resume.")


def _restore_mix_rng(mix_rng: torch.Generator, run: Run) -> None:
    """This rank's MixUp generator as the snapshot saved it. Another world size or accumulation
    cuts the rest of the epoch into other micro-batches, so no saved stream fits: a fresh one."""
    snap, env, plan = run.snap, run.env, run.plan
    if snap["world_size"] == env.world_size and snap["accum_steps"] == plan.accum_steps:
        mix_rng.set_state(snap["mix_rng"][env.rank])
        return
    p = snap["progress"]
    mix_rng.manual_seed(stream_seed(snap["fingerprint"]["TRAIN.SEED"], p["epoch"], env.rank, 1, p["step"]))
    run.records.print(f"warning: the snapshot was taken with world size {snap['world_size']} x accumulation "
                      f"{snap['accum_steps']}, now {env.world_size} x {plan.accum_steps}: the samples of each "
                      f"step are the same, but the MixUp pairs of the rest of this epoch differ from an "
                      f"uninterrupted run")


