"""Head tuning: after training, fine-tune only the output head with stages 1-6 frozen.

Why it exists: late in a known-operator run the output only ties the best stage (SR x2-x4,
deblurring at 3%: within 0.01-0.03 dB). Stages 1-6 feed the head, so a loss that trains both
trades one against the other; with the stages frozen the head is a small model (9,296 parameters
at widths 16/8/8) fitted on fixed inputs that can move the output and never a stage. It costs
about a minute on one core. What it measured (docs/known_tasks.md#head-tuning): +0.00 to
+0.05 dB at 7 of 8 budgets of an SR x4 run, -0.003 dB at the last; on the five shipped files
-0.02 to +0.03 dB, up at one noise level and down at another. It does not make the output the
best stage where they tie, so no recipe uses it by default: it is a cheap refit of the head
(for example on your own training images), opt-in.

The head is what runs after the stages: the module that fuses stage 7's features
(`concat67` in DGUNet, `merge67` in DGUNet+), `tail` and, for MODEL.HEAD stages, `readout`.
Its inputs are cached once per batch (a forward pre-hook on the fusing module), so each tuning
step costs a few convolutions. (shallow_feat7 is not tuned: in DGUNet it shares its PReLU with
stage 1.)

    cached = collect(model, batches)          # batches: (input, target, operator)
    losses = tune_head(model, cached, cfg, HeadTuning())

    python -m dgunet tune-head runs/sr-x4/model_latest.pth --out sr_x4_tuned.pth [--train-dir DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dgunet.errors import ConfigError, DataError
from dgunet.models.gradient import Observation

# The fusing module of each variant: the first module after the stages.
FUSE = {"DGUNet": "concat67", "DGUNetPlus": "merge67"}


@dataclass(frozen=True)
class HeadTuning:
    """batches of the training crops are drawn once (seeded by `seed`, from training epoch
    `epoch`, one no run reaches, so new crops of the same photos) and passed `epochs` times."""

    batches: int = 64
    epochs: int = 15
    lr: float = 3e-4
    correction_weight: float = 1.0  # only for MODEL.HEAD stages (the x0 head has no correction term)
    seed: int = 0
    epoch: int = 1000


@dataclass
class HeadInputs:
    """One cached batch: the fusing module's inputs, the observation (for x0), stages 1-6's
    estimates (each (B,C,H,W), stage 1 first) and the target (B,C,H,W)."""

    fuse_args: tuple[Tensor, ...]
    obs: Observation
    estimates: list[Tensor]
    target: Tensor


def head_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The head's modules by name: the fusing module first, tail and (head stages) readout."""
    name = type(model).__name__
    if name not in FUSE:
        raise ConfigError(f"head tuning knows DGUNet and DGUNetPlus, not {name}")
    names = [FUSE[name], "tail", *(["readout"] if model.head == "stages" else [])]
    return {n: getattr(model, n) for n in names}


def fusing_module(model: nn.Module) -> nn.Module:
    """The first module after the stages, whose inputs `collect` caches."""
    return next(iter(head_modules(model).values()))


def applicable(settings: HeadTuning, model: nn.Module) -> HeadTuning:
    """The settings as they run on `model`: the x0 head has no correction term, so its weight is 0."""
    return settings if model.head == "stages" else replace(settings, correction_weight=0.0)


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor, object]]) -> list[HeadInputs]:
    """Run the frozen model once per (input, target, operator) batch and keep the head's inputs."""
    fuse = fusing_module(model)
    seen: list[tuple[Tensor, ...]] = []
    hook = fuse.register_forward_pre_hook(lambda _m, args: seen.append(tuple(a.detach() for a in args)))
    was_training = model.training
    model.eval()
    cached = []
    try:
        for inp, target, op in batches:
            obs = model.observe(inp, op)  # forward = unfold(observe): x0 is computed once
            outputs = model.unfold(obs)
            cached.append(HeadInputs(seen.pop(), obs, list(reversed(outputs[1:])), target))
    finally:
        hook.remove()
        model.train(was_training)
    return cached


def head_forward(model: nn.Module, item: HeadInputs) -> Tensor:
    """The model's output (B,C,H,W) recomputed from a cached batch: what forward's head does."""
    return model.final_output(item.obs, item.estimates, fusing_module(model)(*item.fuse_args))


def tune_head(model: nn.Module, cached: list[HeadInputs], cfg, settings: HeadTuning) -> list[float]:
    """Fit the head's parameters (Adam) to the cached batches with the task's loss on the output
    (plus settings.correction_weight x the loss on the correction, head stages); every other
    parameter stays bit for bit. Returns the mean loss of each pass."""
    from dgunet.engine.steps import compute_loss, take_refined

    if not cached:
        raise ConfigError("head tuning needs at least one batch")
    loss_cfg = cfg.clone()
    loss_cfg.defrost()
    loss_cfg.LOSS.STAGE_WEIGHTS = []  # one output: its own term
    loss_cfg.LOSS.CORRECTION_WEIGHT = applicable(settings, model).correction_weight
    params = [p for m in head_modules(model).values() for p in m.parameters()]
    frozen = {p: p.requires_grad for p in model.parameters()}
    was_training, was_recording = model.training, model.record_refined
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    model.train()  # the head records REFINED only in training; the stages do not run
    model.record_refined = bool(loss_cfg.LOSS.CORRECTION_WEIGHT)
    means = []
    try:
        for _ in range(settings.epochs):
            total = 0.0
            for item in cached:
                out = head_forward(model, item)
                refined = take_refined(model)
                loss = compute_loss([out], item.target, loss_cfg, refined)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
            means.append(total / len(cached))
    finally:
        model.train(was_training)
        model.record_refined = was_recording
        for p, flag in frozen.items():
            p.requires_grad_(flag)
    return means


def training_batches(cfg, settings: HeadTuning) -> Iterator[tuple[Tensor, Tensor, object]]:
    """settings.batches batches of OPTIM.BATCH_SIZE training crops of the config's data (a known
    task's synthetic degradations): (input, target, operator)."""
    from dgunet.data.synthetic import DegradeSpec
    from dgunet.engine.data import split_batch, train_set

    dataset = train_set(cfg)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(settings.epoch)
    rng = np.random.default_rng(settings.seed)
    size = min(cfg.OPTIM.BATCH_SIZE, len(dataset))
    spec = DegradeSpec.from_cfg(cfg)
    for _ in range(settings.batches):
        chosen = rng.choice(len(dataset), size, replace=False)
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in chosen])
        yield split_batch(batch, cfg.MODEL.TASK, spec=spec)


def tune_model(model: nn.Module, cfg, settings: HeadTuning = HeadTuning(), train_dir: str | Path | None = None,
               source: str = "the config") -> dict:
    """Tune `model`'s head in place on crops of cfg's training data (DATA.TRAIN_DIR, or `train_dir`);
    returns the record a tuned file keeps."""
    from dgunet.config import with_updates

    if train_dir is not None:
        cfg = with_updates(cfg, **{"DATA.TRAIN_DIR": str(train_dir)})
    if not cfg.DEGRADE.KIND:
        raise ConfigError(f"{source} trains on paired data (DEGRADE.KIND empty); head tuning is for the "
                          f"known-operator tasks")
    settings = applicable(settings, model)  # the record says what ran
    start = time.perf_counter()
    losses = tune_head(model, collect(model, training_batches(cfg, settings)), cfg, settings)
    return record(settings, losses, time.perf_counter() - start)


def record(settings: HeadTuning, losses: list[float], seconds: float) -> dict:
    """What a tuned checkpoint or manifest row says about its head tuning."""
    return {**asdict(settings), "loss_first_pass": round(losses[0], 6), "loss_last_pass": round(losses[-1], 6),
            "seconds": round(seconds, 1)}


def tune_checkpoint(path: str | Path, out: str | Path, settings: HeadTuning = HeadTuning(),
                    train_dir: str | Path | None = None) -> dict:
    """A known-operator training checkpoint (or shipped file) -> its weights with the head tuned on
    crops of its own training data (DATA.TRAIN_DIR, or `train_dir`), written atomically to `out`
    as {"epoch", "state_dict", "config", "head_tuning"} (the record is returned)."""
    from dgunet.checkpoint import read_checkpoint, save_atomic
    from dgunet.config import config_from_yaml_string
    from dgunet.testrun.loading import load_model

    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), str):
        raise ConfigError(f"{path} holds no training config; head tuning reads its data and loss from it "
                          f"(a checkpoint written by train.py, or a shipped file)")
    cfg = config_from_yaml_string(checkpoint["config"])
    model = load_model(cfg.MODEL.TASK, path).model
    info = tune_model(model, cfg, settings, train_dir, source=str(path))
    # A result, not a training state: no optimizer or scheduler to resume (they predate the tuning).
    tuned = {k: checkpoint[k] for k in ("epoch", "config") if k in checkpoint}
    tuned["head_tuning"] = info
    dtypes = {k: v.dtype for k, v in checkpoint["state_dict"].items()}
    tuned["state_dict"] = {k: v.detach().to(dtypes.get(k, v.dtype)) for k, v in model.state_dict().items()}
    save_atomic(tuned, out)
    return tuned["head_tuning"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = HeadTuning()
    parser.add_argument("checkpoint", type=Path, help="a known-operator train.py checkpoint, or a shipped file")
    parser.add_argument("--out", type=Path, required=True, help="the tuned file to write (atomically)")
    parser.add_argument("--train-dir", type=Path, help="clean training images (default: the checkpoint's "
                        "DATA.TRAIN_DIR)")
    parser.add_argument("--batches", type=int, default=d.batches, help=f"cached batches (default {d.batches})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over them (default {d.epochs})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam's learning rate (default {d.lr:g})")


def run(args: argparse.Namespace) -> int:
    if args.batches < 1 or args.epochs < 1:
        raise ConfigError("--batches and --epochs must be at least 1")
    settings = HeadTuning(batches=args.batches, epochs=args.epochs, lr=args.lr)
    try:
        info = tune_checkpoint(args.checkpoint, args.out, settings, args.train_dir)
    except DataError as err:
        if args.train_dir is not None:
            raise
        # a shipped file records the folder it was trained on, on another machine
        raise DataError(f"{args.checkpoint} names its training folder: {err}; pass --train-dir DIR with "
                        f"clean training images") from None
    print(f"{args.out}: head tuned in {info['seconds']:.0f} s (loss {info['loss_first_pass']:.5f} -> "
          f"{info['loss_last_pass']:.5f})")
    return 0
