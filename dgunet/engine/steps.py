"""One optimizer step and what it needs: the model, optimizer, lr schedule, scaler and loss.

`build_engine(cfg, env, device)` assembles them (`Engine`); `train_step` takes the step of one
global batch, given this rank's micro-batches. The loop around it is dgunet/engine/trainer.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from warmup_scheduler import GradualWarmupScheduler

from dgunet.config import canonical_arch, cosine_t_max
from dgunet.data.seeding import seed_everything
from dgunet.engine.distributed import DistEnv, sum_over_ranks
from dgunet.engine.hooks import hooks_for
from dgunet.engine.speed import AMP_DTYPES, SpeedOptions, make_adam, prepare_model, speed_options
from dgunet.errors import ConfigError
from dgunet.losses import stage_loss
from dgunet.models import build_model
from dgunet.models.image import REFINED


def build_model_from_cfg(cfg) -> nn.Module:
    """The published model of MODEL.TASK / MODEL.ARCH; non-zero MODEL widths override it."""
    m = cfg.MODEL
    widths = {"n_feat": m.N_FEAT, "scale_unetfeats": m.SCALE_UNETFEATS,
              "scale_orsnetfeats": m.SCALE_ORSNETFEATS}
    overrides = {k: v for k, v in widths.items() if v}  # 0: the task's published width
    overrides.update(hooks_for(cfg).model_overrides(cfg))
    model = build_model(m.TASK, canonical_arch(m.ARCH), **overrides)
    if cfg.LOSS.CORRECTION_WEIGHT:
        model.record_refined = True  # the loss scores the stages head's REFINED output
    return model


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


def compute_loss(outputs: list[Tensor], target: Tensor, cfg, refined: Tensor | None = None) -> Tensor:
    """The task's published objective over the (B, C, H, W) stage outputs, in float32 whatever
    the autocast dtype; plus LOSS.CORRECTION_WEIGHT x the same term on `refined` (the stages head's
    ungated correction, dgunet.models.image.REFINED) when that weight is set."""
    outputs = [o.float() for o in outputs]
    if cfg.LOSS.CLAMP:
        outputs = [o.clamp(0, 1) for o in outputs]
    kw = {"edge_weight": cfg.LOSS.EDGE_WEIGHT, "eps": cfg.LOSS.CHARBONNIER_EPS}
    weights = list(cfg.LOSS.STAGE_WEIGHTS) or None
    loss = stage_loss(outputs, target.float(), cfg.MODEL.TASK, stage_weights=weights, **kw)
    if cfg.LOSS.CORRECTION_WEIGHT:
        if refined is None:
            raise ConfigError("LOSS.CORRECTION_WEIGHT is set, but the model gave no refined output: it needs "
                              "MODEL.HEAD stages")
        refined = refined.float().clamp(0, 1) if cfg.LOSS.CLAMP else refined.float()
        loss = loss + cfg.LOSS.CORRECTION_WEIGHT * stage_loss([refined], target.float(), cfg.MODEL.TASK, **kw)
    return loss


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
    """The model (seeded: the same initial weights on every rank and every run) and its optimizer."""
    seed_everything(cfg.TRAIN.SEED)
    speed = speed_options(cfg, device)  # TRAIN.SPEED's preset or the TRAIN keys (dgunet.engine.speed)
    raw = prepare_model(build_model_from_cfg(cfg).to(device), speed)
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
    return Engine(cfg, env, device, raw, model, ddp, optimizer, scheduler, scaler, AMP_DTYPES[speed.amp], speed)


def take_refined(model: nn.Module) -> Tensor | None:
    """The REFINED output the last training forward recorded, removed from the model: a tensor with
    its graph left on the module would be kept a step longer and break copy.deepcopy (an EMA)."""
    refined = getattr(model, REFINED, None)
    if refined is not None:
        delattr(model, REFINED)
    return refined


@dataclass
class StepResult:
    status: str  # "ok" or "nonfinite" (nothing stepped)
    loss: float  # mean over ranks of the step's loss
    stop: bool = False  # some rank was signalled: the step is taken, then the loop snapshots and exits
    snapshot: bool = False  # some rank asked for a snapshot after this step


def accumulate_gradients(eng: Engine, pairs: list[tuple[Tensor, Tensor]],
                         stop_requested: bool | Callable[[], bool] = False,
                         snapshot_due: bool = False) -> StepResult:
    """Forward and backward of this rank's micro-batches `pairs` [(input, target[, operator]), ...].

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
            extra = (take_refined(eng.raw),) if eng.cfg.LOSS.CORRECTION_WEIGHT else ()
            loss = compute_loss(outputs, target, eng.cfg, *extra) / accum
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


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block, back in train mode after it (also on an error)."""
    model.eval()
    try:
        yield model
    finally:
        model.train()
