"""`python -m dgunet bench --train-step`: one training step along every speed path.

All paths start from the same weights and train on the same batch, in one process. Each is
warmed up, then the paths take turns step after step and the median is reported with its
speed ratio to `published` (fp32, NCHW, eager, for-loop Adam, the published loss), peak
memory, the model FLOP/s (forward + backward as torch.utils.flop_counter counts them) and
the MFU against the device's dense peak (`dgunet.bench.peaks`), and how far the first step's loss
lies from the published one (a check that the path computes the same function).

    python -m dgunet bench --train-step --size 128 --train-batch 2
    python -m dgunet bench --train-step --device cuda --size 256 --train-batch 8 --compile
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from dgunet.bench.inputs import bench_input, load_model
from dgunet.bench.memory import cuda_peak, gib, peak_rss_bytes, release_free_memory, reset_peak_rss, rss_bytes
from dgunet.bench.peaks import peak_flops, precision_of
from dgunet.bench.timer import sync, time_in_turns
from dgunet.engine.speed import AMP_DTYPES, SpeedOptions, fast_preset, make_adam, prepare_model
from dgunet.errors import ConfigError
from dgunet.inference import cpu_has_fast_bf16
from dgunet.losses import stage_loss


@dataclass(frozen=True)
class TrainPath:
    name: str
    about: str
    opts: SpeedOptions


def train_paths(device: str, with_compile: bool) -> list[TrainPath]:
    """The reference, each option alone, and the preset of `TRAIN.SPEED: fast` for this device."""
    cuda = device == "cuda"
    half = [("bf16", "bf16 autocast", SpeedOptions(amp="bf16"))] if cuda or cpu_has_fast_bf16() else []
    if cuda:
        half.append(("fp16", "fp16 autocast + gradient scaler", SpeedOptions(amp="fp16")))
    rows = [("published", "fp32, NCHW, eager, for-loop Adam", SpeedOptions()),
            *half,
            ("channels-last", "fp32, NHWC", SpeedOptions(channels_last=True)),
            ("foreach-adam", "fp32, Adam foreach kernel", SpeedOptions(adam="foreach")),
            ("fused-adam", "fp32, Adam fused kernel", SpeedOptions(adam="fused")),
            ("fast-merge", "fp32, solve-based merge", SpeedOptions(fast_merge=True))]
    if with_compile:
        rows.append(("compile", "fp32, torch.compile of the model", SpeedOptions(compile=True)))
    preset = fast_preset(device)
    rows.append(("fast", f"TRAIN.SPEED fast: {preset.describe()}", preset))
    if with_compile:
        both = SpeedOptions(**{**preset.__dict__, "compile": True})
        rows.append(("fast+compile", "the fast preset + torch.compile", both))
    return [TrainPath(*row) for row in rows]


# ---------------------------------------------------------------- one path

@dataclass
class Stepper:
    """A model copy, its optimizer and the batch, ready to take steps along one path."""

    path: TrainPath
    step: Callable[[], Tensor]  # one optimizer step; returns the loss (detached)
    model: nn.Module


def make_stepper(base: nn.Module, path: TrainPath, x: Tensor, clean: Tensor, task: str) -> Stepper:
    """base: the bare model (not modified); x, clean: (B,C,H,W) on the model's device."""
    opts = path.opts
    device = x.device.type
    model = prepare_model(copy.deepcopy(base).train(), opts)
    optimizer = make_adam(model.parameters(), opts, lr=2e-4)
    net = torch.compile(model) if opts.compile else model
    scaler = torch.amp.GradScaler(device, enabled=opts.amp == "fp16")
    dtype = AMP_DTYPES[opts.amp]
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    inp = x.contiguous(memory_format=fmt)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = net(inp)
        loss = stage_loss([o.float() for o in outputs], clean, task)  # the published loss, in fp32
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        return loss.detach()

    return Stepper(path, step, model)


def train_flops(base: nn.Module, x: Tensor, clean: Tensor, task: str) -> int:
    """FLOPs of one published training step's forward and backward (convolutions, matmuls)."""
    model = copy.deepcopy(base).train()
    counter = FlopCounterMode(display=False)
    with counter:
        stage_loss(list(model(x)), clean, task).backward()
    return int(counter.get_total_flops())


def graph_breaks(model: nn.Module, x: Tensor) -> int:
    """Graph breaks torch.compile takes in model(x). The one call of a private torch API here
    (dynamo's explain); tests/test_bench_train.py fails loudly when it changes."""
    import torch._dynamo

    explained = torch._dynamo.explain(model)(x)
    torch._dynamo.reset()
    return int(explained.graph_break_count)


# ---------------------------------------------------------------- memory

def peak_memory(stepper: Stepper, device: str) -> str:
    """Peak memory of one more step over what was resident before it (weights, optimizer state
    and every other path's copies): the CUDA allocator's growth, or on CPU the RSS growth."""
    if device == "cuda":
        return f"+{gib(cuda_peak(stepper.step))} allocated"
    release_free_memory()
    base = rss_bytes()
    if not reset_peak_rss():
        return "-"
    stepper.step()
    return f"+{gib(max(peak_rss_bytes() - base, 0))} RSS"


# ---------------------------------------------------------------- the table

@dataclass
class TrainRow:
    path: TrainPath
    seconds: list[float]
    first_loss: float
    memory: str = "-"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def format_flops(rate: float) -> str:
    return f"{rate / 1e12:.2f} T" if rate >= 1e12 else f"{rate / 1e9:.1f} G"


def train_table(rows: list[TrainRow], batch: int, flops: int, peaks: dict[str, float]) -> str:
    """Markdown: one row per path; ratios against the row named `published`."""
    ref = next(r for r in rows if r.path.name == "published")
    lines = ["| path | what | s/step | images/s | speed vs published | peak memory | model FLOP/s | MFU "
             "| first-step loss vs published |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = flops / r.median
        peak = peaks.get(precision_of(r.path.opts.amp))
        mfu = f"{100 * rate / peak:.1f}%" if peak else "-"
        rel = abs(r.first_loss - ref.first_loss) / max(abs(ref.first_loss), 1e-12)
        lines.append(f"| {r.path.name} | {r.path.about} | {r.median:.3f} | {batch / r.median:.2f} "
                     f"| {ref.median / r.median:.2f}x | {r.memory} | {format_flops(rate)} | {mfu} "
                     f"| {rel:.1e} |")
    return "\n".join(lines)


def run_train_bench(args: argparse.Namespace) -> str:
    """Everything `--train-step` prints after the machine line."""
    if args.train_batch < 1:
        raise ConfigError("--train-batch must be at least 1")
    paths = train_paths(args.device, args.compile)
    if args.train_paths:
        unknown = [n for n in args.train_paths if n not in {p.name for p in paths}]
        if unknown:
            raise ConfigError(f"--train-paths {' '.join(unknown)}: not a training path on {args.device} with "
                              f"these options; choose from {', '.join(p.name for p in paths)} (compile paths "
                              f"need --compile)")
        paths = [p for p in paths if p.name in args.train_paths or p.name == "published"]
    base = load_model(args).train()
    x, clean = bench_input(args, False, batch=args.train_batch)
    notes = []
    flops = train_flops(base, x, clean, args.task)
    peaks = peak_flops(args.device, threads=torch.get_num_threads())
    notes.append(f"training step: batch {args.train_batch} of {args.size[1]}x{args.size[0]}, "
                 f"{flops / 1e9:.1f} GFLOP per step (forward + backward, convs and matmuls)")
    if args.compile:
        notes.append(f"torch.compile graph breaks in the forward: {graph_breaks(copy.deepcopy(base), x)}")
    steppers = [make_stepper(base, p, x, clean, args.task) for p in paths]
    first = {s.path.name: float(s.step()) for s in steppers}  # same weights, same batch: same loss
    print(f"timing training paths {', '.join(first)}: {args.warmup} warm-up + {args.runs} steps each, in turns",
          flush=True)
    times, _ = time_in_turns({s.path.name: s.step for s in steppers}, args.warmup, args.runs, args.device)
    if args.device == "cpu":  # other jobs may have slowed the first GEMM measurement: keep the best
        again = peak_flops(args.device)
        peaks.update({k: max(v, again[k]) for k, v in peaks.items() if k != "source"})
    rows = [TrainRow(s.path, times[s.path.name], first[s.path.name]) for s in steppers]
    if not args.no_memory:
        for row, s in zip(rows, steppers, strict=True):
            row.memory = peak_memory(s, args.device)
    notes.append(f"peaks for MFU: {peaks.get('source', '-')}, "
                 + ", ".join(f"{k} {format_flops(v)}FLOP/s" for k, v in peaks.items() if k != "source"))
    return "\n".join(notes) + "\n\n" + train_table(rows, args.train_batch, flops, peaks)
