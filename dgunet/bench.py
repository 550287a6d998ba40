"""`python -m dgunet bench`: time the published-faithful forward against the fast paths.

All paths run in one process on the same weights and input: each is warmed up, then the paths
take turns run after run (so load from other processes spreads over all of them) and the
median is reported with its speed ratio to the faithful path, peak memory and the output
difference to the faithful output. On CPU, peak resident memory is measured in a fresh child
process per path; the large-frame paths (1280x720 by default) run only there, once each.

    python -m dgunet bench --task deblurring --arch DGUNet --size 256
    python -m dgunet bench --train-step --size 128 --train-batch 2    # training paths (bench_train)
    python -m dgunet bench --data --task deblurring --workers 8      # data loader (bench_data)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet.engine.data import psnr01
from dgunet.errors import ConfigError
from dgunet.inference import check_tile, cpu_has_fast_bf16, min_size, restore, size_multiple
from dgunet.models.fast import kernel_choices, use_fast_merge
from dgunet.models.keyed_init import keyed_state_dict
from dgunet.models.registry import build_model, get_variant


@dataclass(frozen=True)
class BenchPath:
    """One way of running the model: restore() options plus where and at which size it runs."""

    name: str
    about: str
    options: dict = field(default_factory=dict)
    merge_only: bool = False  # the fast merge alone (restore's fast=True also swaps convs)
    large: bool = False  # runs on the large frame, compared with `large`
    tiled: bool = False  # takes --tile/--overlap
    cuda_only: bool = False


PATHS = {p.name: p for p in [
    BenchPath("faithful", "published computation: eager fp32, NCHW"),
    BenchPath("fast-merge", "fp32, solve-based merge", merge_only=True),
    BenchPath("fast", "fp32, fast merge + fast convs (CPU: Winograd 3x3, GEMM 1x1)", {"fast": True}),
    BenchPath("channels-last", "fp32, NHWC", {"channels_last": True}),
    BenchPath("bf16", "bf16 autocast, NCHW", {"precision": "bf16", "channels_last": False}),
    BenchPath("bf16-cl", "bf16 autocast, NHWC", {"precision": "bf16", "channels_last": True}),
    BenchPath("fp16", "fp16 autocast, NCHW", {"precision": "fp16", "channels_last": False}, cuda_only=True),
    BenchPath("fp16-cl", "fp16 autocast, NHWC", {"precision": "fp16", "channels_last": True}, cuda_only=True),
    BenchPath("compile", "torch.compile, fp32", {"compile": True}),
    BenchPath("large", "whole frame, faithful fp32", large=True),
    BenchPath("large-bf16-cl", "whole frame, bf16 NHWC", {"precision": "bf16", "channels_last": True},
              large=True),
    BenchPath("large-fp16-cl", "whole frame, fp16 NHWC", {"precision": "fp16", "channels_last": True},
              large=True, cuda_only=True),
    BenchPath("tiled", "tiles, faithful fp32", large=True, tiled=True),
    BenchPath("tiled-fast", "tiles, fp32 fast", {"fast": True}, large=True, tiled=True),
]}


def default_paths(device: str, with_compile: bool) -> list[str]:
    """The paths worth running on this device (bf16 only where the hardware has it)."""
    if device == "cuda":
        names = ["faithful", "fast-merge", "channels-last", "bf16", "bf16-cl", "fp16", "fp16-cl",
                 "large", "large-bf16-cl", "large-fp16-cl", "tiled"]
    else:
        names = ["faithful", "fast-merge", "fast", "channels-last"]
        names += ["bf16", "bf16-cl"] if cpu_has_fast_bf16() else []
        names += ["large", "tiled", "tiled-fast"]
    return names + (["compile"] if with_compile else [])


def restore_options(path: BenchPath, args: argparse.Namespace) -> dict:
    opts = dict(path.options)
    if path.tiled:
        opts.update(tile=args.tile, overlap=args.overlap)
    return opts


# ---------------------------------------------------------------- inputs and model

def parse_size(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '1280x720' (width x height) -> (720, 1280) as (H, W)."""
    w, _, h = text.lower().partition("x")
    try:
        return (int(h or w), int(w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: use N or WIDTHxHEIGHT, e.g. 1280x720") from None


def clean_image(hw: tuple[int, int], channels: int) -> Tensor:
    """A natural photo (scikit-image's 'coffee') resized to (1,channels,H,W) in [0,1]; a
    deterministic synthetic scene when scikit-image is missing."""
    try:
        from skimage import data

        img = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255
    except ImportError:
        g = torch.Generator().manual_seed(0)
        img = F.interpolate(torch.rand(1, 3, 12, 18, generator=g), size=(400, 600), mode="bicubic")
    img = F.interpolate(img, size=hw, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return img.mean(1, keepdim=True) if channels == 1 else img


def degrade(clean: Tensor, task: str) -> Tensor:
    """The model input for `task`: blurred (deblurring, deraining), noisy (denoising) or clean (CS)."""
    if task == "cs":
        return clean
    if task == "denoising":
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        return (clean + noise * 15 / 255).clamp(0, 1)
    x = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * 1.6 ** 2))
    k2 = (k[:, None] * k[None, :] / k.sum() ** 2).expand(clean.shape[1], 1, 9, 9)
    return F.conv2d(F.pad(clean, (4, 4, 4, 4), mode="reflect"), k2, groups=clean.shape[1])


def load_model(args: argparse.Namespace) -> nn.Module:
    """The variant with --weights, or the key-named weights of the reference fixtures."""
    extra = {"cs_ratio": args.cs_ratio} if args.task == "cs" else {}
    model = build_model(args.task, args.arch, **extra)
    if args.weights:
        from dgunet.checkpoint import load_weights

        load_weights(model, args.weights)
    else:
        model.load_state_dict(keyed_state_dict(model))
    return model.eval().to(args.device)


def bench_input(args: argparse.Namespace, large: bool) -> tuple[Tensor, Tensor]:
    """(input, clean) of shape (batch,C,H,W) on the bench device."""
    channels = 1 if args.task == "cs" else 3
    hw = args.large_size if large else args.size
    clean = clean_image(hw, channels).expand(args.batch, -1, -1, -1).contiguous()
    return degrade(clean, args.task).to(args.device), clean.to(args.device)


# ---------------------------------------------------------------- measuring

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def runner(model: nn.Module, x: Tensor, path: BenchPath, args: argparse.Namespace) -> Callable[[], Tensor]:
    """A no-argument callable that restores x along `path` and waits for the device."""
    opts = restore_options(path, args)

    def run() -> Tensor:
        with use_fast_merge(model) if path.merge_only else nullcontext():
            out = restore(model, x, **opts)
        sync(args.device)
        return out

    return run


def time_interleaved(runs: dict[str, Callable[[], Tensor]], warmup: int, repeats: int
                     ) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Warm every path up, then time them in turns; returns all times and each last output."""
    outputs = {}
    for name, run in runs.items():
        for _ in range(warmup):
            outputs[name] = run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def rss_bytes() -> int:
    """Current resident set size of this process (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0), so that it measures what follows only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the last reset (VmHWM), else since the process started (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cuda_peak(run: Callable[[], Tensor]) -> int:
    """Peak CUDA memory `run` allocates on top of what was allocated before it.

    The absolute max_memory_allocated() would count every other path's model copy (and, in the
    training bench, its optimizer state) held by this process; reset_peak_memory_stats() sets
    the peak to the current allocation, so peak - resident is this run's own working memory.
    """
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - resident


def child_command(args: argparse.Namespace, name: str, out_file: str) -> list[str]:
    """The command line that re-runs this bench for one path in a fresh process."""
    cmd = [sys.executable, "-m", "dgunet", "bench", "--task", args.task, "--arch", args.arch,
           "--size", f"{args.size[1]}x{args.size[0]}", "--large-size",
           f"{args.large_size[1]}x{args.large_size[0]}", "--batch", str(args.batch),
           "--tile", str(args.tile), "--overlap", str(args.overlap), "--device", args.device,
           "--cs-ratio", str(args.cs_ratio), "--child", name, "--child-out", out_file]
    if args.weights:
        cmd += ["--weights", str(args.weights)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def measure_in_child(args: argparse.Namespace, name: str, workdir: str) -> dict:
    """Run one path once in a fresh process: its seconds, peak RSS and output."""
    out_file = os.path.join(workdir, f"{name}.pt")
    proc = subprocess.run(child_command(args, name, out_file), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child for {name} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["output"] = torch.load(out_file, weights_only=True)
    return result


def run_child(args: argparse.Namespace) -> int:
    """Child side of `measure_in_child`: one forward, a JSON line on stdout."""
    path = PATHS[args.child]
    model = load_model(args)
    x, _ = bench_input(args, path.large)
    run = runner(model, x, path, args)
    if path.options.get("fast"):
        # The first fast forward at a new size times the conv kernels (dgunet.models.fast);
        # one tile (or the image) does that here, so neither the seconds nor the memory count it.
        runner(model, x[..., :args.tile, :args.tile] if path.tiled else x, path, args)()
    base = rss_bytes()
    reset_peak_rss()  # loading the weights must not count
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    torch.save(out.cpu(), args.child_out)
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss_bytes(), "base_rss": base}))
    return 0


# ---------------------------------------------------------------- reporting

@dataclass
class Row:
    path: BenchPath
    size: tuple[int, int]
    seconds: list[float]
    output: Tensor
    memory: str = "-"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def fmt_db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def table(rows: list[Row], clean: dict[bool, Tensor], batch: int) -> str:
    """Markdown table; large-frame paths are compared with `large`, the others with `faithful`."""
    by_name = {r.path.name: r for r in rows}
    lines = ["| path | what | input | runs | median s | speed vs faithful | img/s | peak memory "
             "| max abs diff | PSNR vs faithful (dB) | PSNR vs clean (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = by_name.get("large" if r.path.large else "faithful")
        ratio = f"{ref.median / r.median:.2f}x" if ref else "-"
        diff = (r.output.float() - ref.output.float()).abs().max().item() if ref else None
        lines.append(
            f"| {r.path.name} | {r.path.about} | {r.size[1]}x{r.size[0]} | {len(r.seconds)} "
            f"| {r.median:.3f} | {ratio} | {batch / r.median:.2f} | {r.memory} "
            f"| {'-' if diff is None else f'{diff:.2e}'} "
            f"| {'-' if ref is None else fmt_db(psnr01(r.output, ref.output))} "
            f"| {fmt_db(psnr01(r.output, clean[r.path.large]))} |")
    return "\n".join(lines)


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides torch's CPU kernels


def cpu_description() -> str:
    """The CPU model and the vector/matrix flags in CPU_FLAGS it has (Linux /proc/cpuinfo)."""
    cpu, flags = platform.processor() or "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        have = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        flags = [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return f"{cpu} (flags: {' '.join(flags) or 'unknown'})"


def machine() -> str:
    """The CPU model, flags and core count, torch's threads, and the CUDA card if any."""
    text = (f"{cpu_description()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, native CPU bf16: {cpu_has_fast_bf16()}, "
            f"NNPACK: {torch._nnpack_available()}")
    if torch.cuda.is_available():
        text += f"; GPU: {torch.cuda.get_device_name()}"
    return text


# ---------------------------------------------------------------- command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="deblurring", help="deblurring, deraining, denoising or cs")
    parser.add_argument("--arch", default="DGUNet", help="DGUNet or DGUNet_plus")
    parser.add_argument("--physics", action="store_true",
                        help="time the known operators (dgunet.physics) against a deblurring DGUNet forward")
    parser.add_argument("--cs-ratio", type=float, default=25, help="CS sampling ratio in %% (task cs)")
    parser.add_argument("--size", type=parse_size, default=(256, 256), help="N or WxH (default 256)")
    parser.add_argument("--large-size", type=parse_size, default=(720, 1280),
                        help="frame of the large/tiled paths, WxH (default 1280x720)")
    parser.add_argument("--tile", type=int, default=512, help="tile side of the tiled paths (default 512)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap (default 32)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per path (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per path first (default 1)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), metavar="PATH",
                        help=f"paths to run (default: those suited to the device): {', '.join(PATHS)}")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--weights", help="checkpoint to load (default: key-named weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory child processes")
    parser.add_argument("--train-step", action="store_true",
                        help="time a training step along every speed path instead (dgunet.bench_train)")
    parser.add_argument("--train-batch", type=int, default=2, help="batch of the training step (default 2)")
    parser.add_argument("--train-paths", nargs="+", metavar="PATH",
                        help="training paths to run (default all; published is always added)")
    parser.add_argument("--data", action="store_true",
                        help="time the training data loader instead (dgunet.bench_data; --workers, --data-dir)")
    from dgunet.bench_data import add_arguments as add_data_arguments

    add_data_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)


def check_args(args: argparse.Namespace) -> list[BenchPath]:
    model_cls = get_variant(args.task, args.arch).cls  # also rejects an unknown task or arch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch")
    names = args.paths or default_paths(args.device, args.compile)
    paths = [PATHS[n] for n in names]
    cpu_only_bad = [p.name for p in paths if p.cuda_only and args.device != "cuda"]
    if cpu_only_bad:
        raise ConfigError(f"{', '.join(cpu_only_bad)}: fp16 needs --device cuda")
    if args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise ConfigError("--runs and --batch must be at least 1, --warmup at least 0")
    if any(p.tiled for p in paths):
        try:
            check_tile(args.tile, args.overlap, size_multiple(model_cls), min_size(model_cls))
        except ValueError as err:
            raise ConfigError(f"--tile/--overlap: {err}") from None
    return paths


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return run_child(args)
    if args.physics:
        from dgunet.physics.timing import run_physics_bench

        return run_physics_bench(args.device, args.size[0], args.batch, args.warmup, args.runs)
    if args.data:
        from dgunet.bench_data import run_data_bench

        print(f"machine: {machine()}")
        print(run_data_bench(args))
        return 0
    paths = check_args(args)
    print(f"machine: {machine()}")
    print(f"model: {get_variant(args.task, args.arch).label}, weights: {args.weights or 'key-named'}")
    if args.train_step:
        from dgunet.bench_train import run_train_bench

        print(run_train_bench(args))
        return 0
    base = load_model(args)
    inputs = {large: bench_input(args, large) for large in {p.large for p in paths}}
    # On CPU the large frames run once each, in the memory children (unless --no-memory).
    in_children = args.device == "cpu" and not args.no_memory
    in_process = [p for p in paths if not (p.large and in_children)]
    runs = {p.name: runner(copy.deepcopy(base), inputs[p.large][0], p, args) for p in in_process}
    print(f"timing {', '.join(runs)}: {args.warmup} warm-up + {args.runs} runs each, in turns", flush=True)
    times, outputs = time_interleaved(runs, args.warmup, args.runs)
    rows = {p.name: Row(p, args.large_size if p.large else args.size, times[p.name], outputs[p.name].cpu())
            for p in in_process}
    if args.device == "cuda":
        for name, run_path in runs.items():
            rows[name].memory = f"+{gib(cuda_peak(run_path))} allocated"
    elif in_children:
        with tempfile.TemporaryDirectory() as workdir:
            for p in paths:
                print(f"measuring {p.name} in a child process", flush=True)
                res = measure_in_child(args, p.name, workdir)
                if p.name not in rows:  # large frames on CPU: one run, in the child
                    rows[p.name] = Row(p, args.large_size, [res["seconds"]], res["output"])
                rows[p.name].memory = (f"{gib(res['peak_rss'])} RSS "
                                       f"(+{gib(res['peak_rss'] - res['base_rss'])})")
    ordered = [rows[p.name] for p in paths if p.name in rows]
    print()
    print(table(ordered, {large: inputs[large][1].cpu() for large in inputs}, args.batch))
    if kernel_choices():
        chosen = ", ".join(f"{kind} {won}/{total}" for kind, (won, total) in kernel_choices().items())
        print(f"\nfast convs, shapes where the fast kernel beat oneDNN here: {chosen}")
    return 0
