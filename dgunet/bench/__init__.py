"""`python -m dgunet bench`: the benchmarks, one package with one timer.

    python -m dgunet bench --task deblurring --arch DGUNet --size 256   # inference paths (inference.py)
    python -m dgunet bench --train-step --size 128 --train-batch 2     # training paths (train.py)
    python -m dgunet bench --data --config Deblurring/training.yml     # data loader (data.py)
    python -m dgunet bench --physics --size 256                        # known operators (physics.py)

Modules: timer (the timer and the device sync every benchmark uses), memory (peak RSS, CUDA
peaks), machine (what it ran on), inputs (model and image), peaks (MFU denominators), gpucheck
(`scripts/gpu_check.sh`). They import each other, never this file, so there is no cycle.
"""

from __future__ import annotations

import argparse

import torch

from dgunet.bench.inference import PATHS, check_args, run_child, run_inference_bench
from dgunet.bench.inputs import parse_size
from dgunet.bench.machine import cpu_description, machine
from dgunet.models.registry import get_variant

__all__ = ["add_arguments", "cpu_description", "machine", "run"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, the input and the device every bench mode shares."""
    parser.add_argument("--task", help="deblurring (default), deraining, denoising or cs; --data: the task of "
                                       "--config unless given")
    parser.add_argument("--arch", default="DGUNet", help="DGUNet or DGUNet_plus")
    parser.add_argument("--cs-ratio", type=float, default=25, help="CS sampling ratio in %% (task cs)")
    parser.add_argument("--size", type=parse_size, default=(256, 256), help="N or WxH (default 256)")
    parser.add_argument("--large-size", type=parse_size, default=(720, 1280),
                        help="frame of the large/tiled paths, WxH (default 1280x720)")
    parser.add_argument("--tile", type=int, default=512, help="tile side of the tiled paths (default 512)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap (default 32)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--weights", help="checkpoint to load (default: key-named weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--physics", action="store_true",
                        help="time the known operators (dgunet.physics) against a deblurring DGUNet forward")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per path (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per path first (default 1)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), metavar="PATH",
                        help=f"paths to run (default: those suited to the device): {', '.join(PATHS)}")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory child processes")
    parser.add_argument("--train-step", action="store_true",
                        help="time a training step along every speed path instead (dgunet.bench.train)")
    parser.add_argument("--train-batch", type=int, default=2, help="batch of the training step (default 2)")
    parser.add_argument("--train-paths", nargs="+", metavar="PATH",
                        help="training paths to run (default all; published is always added)")
    parser.add_argument("--data", action="store_true",
                        help="time the training data loader instead (dgunet.bench.data; --config, --workers, "
                             "--data-dir)")
    # Imported here, not at the top: scripts import this package for cpu_description alone.
    from dgunet.bench.data import add_arguments as add_data_arguments

    add_data_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the mode asked for; the physics, data and training modules load only for their mode."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return run_child(args)
    if args.physics:
        from dgunet.bench.physics import run_physics_bench

        return run_physics_bench(args.device, args.size[0], args.batch, args.warmup, args.runs)
    if args.data:
        from dgunet.bench.data import run_data_bench

        print(f"machine: {machine()}")
        print(run_data_bench(args))
        return 0
    paths = check_args(args)
    print(f"machine: {machine()}")
    print(f"model: {get_variant(args.task, args.arch).label}, weights: {args.weights or 'key-named'}")
    if args.train_step:
        from dgunet.bench.train import run_train_bench

        print(run_train_bench(args))
    else:
        print(run_inference_bench(args, paths))
    return 0
