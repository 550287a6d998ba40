"""`python -m dgunet bench`: time the published-faithful forward against the fast paths.

All paths run in one process on the same weights and input: each is warmed up, then the paths
take turns run after run (dgunet.bench.timer) and the median is reported with its speed ratio
to the faithful path, peak memory and the output difference to the faithful output. On CPU,
peak resident memory is measured in a fresh child process per path; the large-frame paths
(1280x720 by default) run only there, once each.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dgunet.bench.inputs import bench_input, load_model
from dgunet.bench.memory import cuda_peak, gib, peak_rss_bytes, reset_peak_rss, rss_bytes
from dgunet.bench.timer import sync, time_in_turns
from dgunet.errors import ConfigError
from dgunet.inference import check_tile, cpu_has_fast_bf16, min_size, restore, size_multiple
from dgunet.metrics.psnr import psnr_torch
from dgunet.models.fast import kernel_choices, use_fast_merge
from dgunet.models.registry import get_variant

DEFAULT_TASK = "deblurring"  # of --task, except with --data (whose recipe names its task)

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


def runner(model: nn.Module, x: Tensor, path: BenchPath, args: argparse.Namespace) -> Callable[[], Tensor]:
    """A no-argument callable that restores x along `path` and waits for the device."""
    opts = restore_options(path, args)

    def run() -> Tensor:
        with use_fast_merge(model) if path.merge_only else nullcontext():
            out = restore(model, x, **opts)
        sync(args.device)
        return out

    return run


# ---------------------------------------------------------------- one path per child process

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
            f"| {'-' if ref is None else fmt_db(psnr_torch(r.output, ref.output))} "
            f"| {fmt_db(psnr_torch(r.output, clean[r.path.large]))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the command

def check_args(args: argparse.Namespace) -> list[BenchPath]:
    """The paths to run (and --task filled in); ConfigError (one line) for settings that cannot run here."""
    args.task = args.task or DEFAULT_TASK
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


def memory_in_children(args: argparse.Namespace, paths: list[BenchPath], rows: dict[str, Row]) -> None:
    """CPU: each path once more in a fresh process for its peak RSS; the large frames run only there."""
    with tempfile.TemporaryDirectory() as workdir:
        for p in paths:
            print(f"measuring {p.name} in a child process", flush=True)
            res = measure_in_child(args, p.name, workdir)
            if p.name not in rows:  # large frames on CPU: one run, in the child
                rows[p.name] = Row(p, args.large_size, [res["seconds"]], res["output"])
            rows[p.name].memory = f"{gib(res['peak_rss'])} RSS (+{gib(res['peak_rss'] - res['base_rss'])})"


def run_inference_bench(args: argparse.Namespace, paths: list[BenchPath]) -> str:
    """Time `paths` in turns and measure their memory; the table and the fast-conv choices."""
    base = load_model(args)
    inputs = {large: bench_input(args, large) for large in {p.large for p in paths}}
    # On CPU the large frames run once each, in the memory children (unless --no-memory).
    in_children = args.device == "cpu" and not args.no_memory
    in_process = [p for p in paths if not (p.large and in_children)]
    runs = {p.name: runner(copy.deepcopy(base), inputs[p.large][0], p, args) for p in in_process}
    print(f"timing {', '.join(runs)}: {args.warmup} warm-up + {args.runs} runs each, in turns", flush=True)
    times, outputs = time_in_turns(runs, args.warmup, args.runs, args.device)
    rows = {p.name: Row(p, args.large_size if p.large else args.size, times[p.name], outputs[p.name].cpu())
            for p in in_process}
    if args.device == "cuda":
        for name, run_path in runs.items():
            rows[name].memory = f"+{gib(cuda_peak(run_path))} allocated"
    elif in_children:
        memory_in_children(args, paths, rows)
    ordered = [rows[p.name] for p in paths if p.name in rows]
    text = "\n" + table(ordered, {large: inputs[large][1].cpu() for large in inputs}, args.batch)
    if kernel_choices():
        chosen = ", ".join(f"{kind} {won}/{total}" for kind, (won, total) in kernel_choices().items())
        text += f"\n\nfast convs, shapes where the fast kernel beat oneDNN here: {chosen}"
    return text
