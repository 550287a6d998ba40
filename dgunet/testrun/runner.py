"""Test a model on a task's test sets: find each set, restore it, write results, score them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from dgunet.errors import ConfigError, DataError, DGUNetError
from dgunet.tasks import get_task
from dgunet.testrun import cs, dnd, known, options, paired, sidd
from dgunet.testrun.context import Context
from dgunet.testrun.datasets import (
    KNOWN_DATASETS,
    LAYOUTS,
    TASK_DATASETS,
    DatasetSpec,
    candidate_folders,
    find_dataset,
    require_dataset,
    select_datasets,
)
from dgunet.testrun.loading import checkpoint_config, load_model
from dgunet.testrun.precheck import check_sets
from dgunet.testrun.restoring import check_supported
from dgunet.testrun.results import DatasetResult

RUNNERS: dict[str, Callable[..., DatasetResult]] = {
    "paired": paired.run_paired,
    "sidd": sidd.run_sidd,
    "dnd": dnd.run_dnd,
    "cs": cs.run_cs,
    "clean": known.run_known,
    "photos": known.run_known,
}


def locate(root: Path, specs: list[DatasetSpec], skip_missing: bool) -> list[tuple[DatasetSpec, Path | None]]:
    """(spec, folder or None) per set. Missing sets raise unless `skip_missing`; none at all always raises."""
    if not root.is_dir() and any(spec.kind != "photos" for spec in specs):  # Photos needs no folder
        photos = any(spec.kind == "photos" for spec in specs)
        raise DataError(f"data root {root} does not exist; pass the folder that holds the test sets"
                        + (" (--input_dir), or --dataset Photos to test on the photos scikit-image ships"
                           if photos else ""))
    found = [(spec, find_dataset(root, spec)) for spec in specs]
    missing = [spec for spec, folder in found if folder is None]
    if len(missing) == len(specs) == 1:
        require_dataset(root, specs[0])  # raises, naming the paths and the layout
    if len(missing) == len(specs):
        lines = [f"  {s.name}: {LAYOUTS[s.kind]} in one of "
                 f"{', '.join(str(f) for f in candidate_folders(root, s.name))}" for s in specs]
        raise DataError(f"no test set found under {root}. Expected:\n" + "\n".join(lines))
    if missing and not skip_missing:
        require_dataset(root, missing[0])  # raises, naming the paths and the layout
    return found


def run_datasets(ctx: Context, specs: list[DatasetSpec], data_root: str | Path, result_root: str | Path,
                 skip_missing: bool = False,
                 skip_bad: bool = False) -> tuple[list[DatasetResult], list[DatasetSpec]]:
    """Test every located set into <result_root>/<name>/. Returns (results, skipped sets).

    Every set is checked before the first is restored (dgunet.testrun.precheck); a bad file
    stops the test unless `skip_bad`, which leaves it out and lists it in scores.json.
    """
    results, skipped = [], []
    found = locate(Path(data_root), specs, skip_missing)
    ctx.bad_files = check_sets(found, skip_bad, ctx.log, channels=getattr(ctx.model, "in_c", 3))
    for spec, folder in found:
        if folder is None:
            ctx.log(f"{spec.name}: not found under {data_root}, skipped")
            skipped.append(spec)
            continue
        ctx.log(f"{spec.name}: {folder if spec.kind != 'photos' else 'scikit-image bundled photos'}")
        result = RUNNERS[spec.kind](ctx, spec, folder, Path(result_root) / spec.name)
        result.write_scores()
        ctx.log(result.summary())
        results.append(result)
    return results, skipped


def build_parser(task: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"{get_task(task).title}: restore the test sets with DGUNet/DGUNet+ and score them "
                    f"(see docs/testing.md)")
    names = [s.name for s in TASK_DATASETS[task]]
    if task in known.KNOWN_PROTOCOLS:
        names += [s.name for s in KNOWN_DATASETS[known.KNOWN_PROTOCOLS[task]] if s.name not in names]
    parser.add_argument("--weights", help="checkpoint (.pth / .pkl); required unless --method is a baseline")
    parser.add_argument("--input_dir", "--input-dir", dest="input_dir", default="Datasets",
                        help="data root holding the test sets (default ./Datasets)")
    parser.add_argument("--result_dir", "--result-dir", dest="result_dir", default="results",
                        help="results go to <result_dir>/<dataset>/ (default ./results)")
    parser.add_argument("--dataset", nargs="+", metavar="NAME",
                        help=f"one or more of {', '.join(names)} (default: all that exist)")
    options.add_model_arguments(parser)
    options.add_run_arguments(parser, tiles=task != "cs")
    options.add_skip_bad_argument(parser)
    if task == "cs":
        parser.add_argument("--cs-ratio", type=options.percent, default=None,
                            help="sampling ratio in percent (default: read from the checkpoint)")
    if task in known.KNOWN_PROTOCOLS:
        known.add_known_arguments(parser, task)
    if task == "denoising":
        parser.add_argument("--sidd-mat-dtype", choices=("float32", "uint8"), default="float32",
                            help="element type of Idenoised.mat (published: float32 in [0, 1])")
    return parser


def make_context(task: str, args: argparse.Namespace, weights: str, cs_ratio: float | None = None,
                 log: Callable[[str], None] = print) -> Context:
    """Check the options, load the model and bundle everything a runner needs."""
    restore = options.restore_options(args, task)
    check_supported(restore)
    if args.workers < 0:
        raise DataError(f"--workers must be 0 or more, got {args.workers}")
    protocol = known.known_protocol(task, args)
    if protocol and args.method != "model":  # a classical baseline: no weights, no model
        log(f"method: {args.method} baseline")
        run = known.make_known_run(task, args, protocol, None, None)
        return Context(task, None, "-", restore, None, args.workers, log=log, known=run)
    if not weights and protocol:  # a known-operator protocol: the shipped model of pretrained/
        weights = known.shipped_model(task, args, log)
    if not weights:
        raise ConfigError("--weights is required: the checkpoint to test")
    cfg = checkpoint_config(weights) if protocol else None
    gradient = known.model_gradient(args, cfg) if protocol else "learned"
    loaded = load_model(task, weights, args.arch, options.given_widths(args), cs_ratio,
                        options.pick_device(args.device), gradient=gradient)
    options.check_tile_for(loaded.model, restore)
    log(f"model: {loaded.describe(task)}, weights {weights}" + (f", gradient {gradient}" if protocol else ""))
    run = known.make_known_run(task, args, protocol, loaded.model, cfg) if protocol else None
    return Context(task, loaded.model, loaded.arch, restore, loaded.cs_ratio, args.workers,
                   getattr(args, "sidd_mat_dtype", "float32"), log, known=run)


def run_test(task: str, args: argparse.Namespace) -> list[DatasetResult]:
    specs = select_datasets(task, args.dataset, known.known_protocol(task, args))
    locate(Path(args.input_dir), specs, skip_missing=not args.dataset)  # fail before loading the model
    ctx = make_context(task, args, args.weights, getattr(args, "cs_ratio", None))
    results, _ = run_datasets(ctx, specs, args.input_dir, args.result_dir, skip_missing=not args.dataset,
                              skip_bad=args.skip_bad)
    return results


def main(task: str, argv: list[str] | None = None) -> int:
    """Entry point of <Task>/test.py. Returns the exit status (2 for errors a user can fix)."""
    args = build_parser(task).parse_args(argv)
    try:
        run_test(task, args)
    except DGUNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
