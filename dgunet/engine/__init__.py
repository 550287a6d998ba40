"""Training engine: `main` behind every task's train.py, and `train(cfg)` for programs.

    python Deblurring/train.py [--config training.yml] [--arch DGUNet|DGUNet_plus] [--resume]
                               [--amp bf16|fp16] [--fast] [--accum-steps N] [--opts KEY VALUE ...]
    python Compressive_Sensing/train.py --cs-ratio 10 [--phase 1|2] [--init-from PATH] ...
    torchrun --nproc_per_node 2 Deblurring/train.py ...

Exit codes: 0 done (or stopped at TRAIN.STOP_AT_EPOCH), 2 a configuration/data/checkpoint
problem or a non-finite loss (the message says what), 130 / 143 stopped by SIGINT / SIGTERM
after leaving a resumable model_latest.pth.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dgunet.config import load_config
from dgunet.engine.trainer import TrainResult, train
from dgunet.errors import DGUNetError
from dgunet.tasks import TASK_FOLDERS, get_task

__all__ = ["TrainResult", "build_parser", "config_from_args", "main", "train"]

TASK_DIRS = TASK_FOLDERS  # task -> its folder, a view of the task table (dgunet.tasks)


def build_parser(task: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python {TASK_DIRS.get(task, task)}/train.py",
        description=f"Train DGUNet / DGUNet+ for {task} with the paper's recipe (docs/training.md).")
    parser.add_argument("--config", help="yml file (default: training.yml next to train.py; "
                        "relative paths are tried from the current folder, then the task folder)")
    parser.add_argument("--arch", help="DGUNet or DGUNet_plus (MODEL.ARCH)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the output folder from its model_latest.pth")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision (TRAIN.AMP)")
    parser.add_argument("--fast", action="store_true",
                        help="TRAIN.SPEED fast: the fastest options that keep results on this device "
                             "(bf16 AMP + channels_last where native, fused/foreach Adam, fast merge)")
    parser.add_argument("--accum-steps", type=int, help="gradient accumulation steps (TRAIN.ACCUM_STEPS)")
    if get_task(task).is_cs:
        parser.add_argument("--cs-ratio", type=float, help="sampling ratio in percent (MODEL.CS_RATIO)")
        parser.add_argument("--phase", type=int, choices=[1, 2],
                            help="1: 32x32 blocks; 2: deblocking on larger crops, from phase 1's best weights "
                                 "(default config training_deblock.yml)")
        parser.add_argument("--init-from", help="weights to start from (TRAIN.INIT_FROM)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE pairs overriding the yml (last on the line), e.g."
                        " --opts OPTIM.NUM_EPOCHS 10 TRAIN.WORKERS 2")
    return parser


def _config_path(args: argparse.Namespace, default_config: Path) -> Path:
    if args.config is None:
        if getattr(args, "phase", None) == 2:
            return default_config.with_name("training_deblock.yml")
        return default_config
    given = Path(args.config)
    if given.is_absolute() or given.exists():
        return given
    return default_config.parent / given


def config_from_args(task: str, default_config: str | Path, argv: Sequence[str] | None = None):
    """Parse train.py's command line into a validated, frozen config."""
    args = build_parser(task).parse_args(argv)
    default_config = Path(default_config).resolve()
    overrides: dict = {"TASK_DIR": str(default_config.parent), "MODEL": {"TASK": task}, "TRAIN": {}}
    if args.arch:
        overrides["MODEL"]["ARCH"] = args.arch
    if args.resume:
        overrides["TRAIN"]["RESUME"] = True
    if args.amp:
        overrides["TRAIN"]["AMP"] = args.amp
    if args.fast:
        overrides["TRAIN"]["SPEED"] = "fast"
    if args.accum_steps is not None:
        overrides["TRAIN"]["ACCUM_STEPS"] = args.accum_steps
    if get_task(task).is_cs:
        if args.cs_ratio is not None:
            overrides["MODEL"]["CS_RATIO"] = args.cs_ratio
        if args.phase is not None:
            overrides["TRAIN"]["PHASE"] = args.phase
        if args.init_from:
            overrides["TRAIN"]["INIT_FROM"] = str(Path(args.init_from).resolve())
    cfg = load_config(_config_path(args, default_config), opts=args.opts, overrides=overrides)
    return cfg


def main(task: str, default_config: str | Path, argv: Sequence[str] | None = None) -> int:
    """Entry point of `<Task>/train.py`; returns the process exit code."""
    try:
        cfg = config_from_args(task, default_config, argv)
        result = train(cfg)
    except DGUNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return result.exit_code
