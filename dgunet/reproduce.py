"""`python -m dgunet reproduce`: test a task on all its test sets and compare with the paper.

    python -m dgunet reproduce --task deraining --weights W --data-root D [--arch ...]
    python -m dgunet reproduce --task cs --weights 'cs_{ratio}.pkl' --cs-ratios 10 25 --data-root D

Results go to <results>/<task>/<dataset>/ (compressive sensing: <results>/cs/ratio_<r>/<dataset>/);
the comparison table to <results>/<task>/table.md and table.json. Test sets missing under the
data root are listed as skipped; at least one must exist. The paper's numbers are package data
(dgunet/paper_results.json).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from dgunet.atomic import write_text_atomic
from dgunet.checkpoint import extract_state_dict, infer_structure, read_checkpoint
from dgunet.errors import ConfigError
from dgunet.evaluate import write_json_atomic
from dgunet.jsonio import json_safe
from dgunet.tasks import KNOWN_PROTOCOLS, TASK_NAMES, get_task
from dgunet.testrun import known, options
from dgunet.testrun.datasets import KNOWN_DATASETS, TASK_DATASETS, DatasetSpec
from dgunet.testrun.results import DatasetResult, fmt_number
from dgunet.testrun.runner import make_context, run_datasets

PAPER_FILE = Path(__file__).with_name("paper_results.json")
DERAINING_AVERAGE = "Average"


def load_paper() -> dict:
    return json.loads(PAPER_FILE.read_text(encoding="utf-8"))


def ratio_key(ratio: float) -> str:
    return f"{ratio:g}"


def paper_scores(paper: dict, task: str, arch: str, dataset: str,
                 ratio: float | None = None) -> tuple[float, float] | None:
    """The paper's (PSNR, SSIM) for one table cell, None when the paper has none."""
    entry = paper["tasks"].get(task, {}).get(arch, {}).get(dataset)
    if entry is not None and ratio is not None:
        entry = entry.get(ratio_key(ratio))
    return tuple(entry) if entry else None


@dataclass
class Row:
    """One line of the comparison table."""

    dataset: str
    ratio: float | None = None
    images: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    paper_psnr: float | None = None
    paper_ssim: float | None = None
    note: str = ""

    @property
    def delta_psnr(self) -> float | None:
        return _diff(self.psnr, self.paper_psnr)

    @property
    def delta_ssim(self) -> float | None:
        return _diff(self.ssim, self.paper_ssim)


def _diff(ours: float | None, paper: float | None) -> float | None:
    if ours is None or paper is None or not math.isfinite(ours):
        return None
    return ours - paper


def _row(paper: dict, task: str, arch: str, name: str, ratio: float | None,
         result: DatasetResult | None, note: str) -> Row:
    row = Row(name, ratio, note=note)
    cell = paper_scores(paper, task, arch, name, ratio)
    if cell:
        row.paper_psnr, row.paper_ssim = cell
    if result is not None:
        row.images, row.psnr, row.ssim = result.count, result.psnr, result.ssim
        row.note = result.note
    return row


def average_row(paper: dict, task: str, arch: str, rows: list[Row]) -> Row:
    """The Average row (deraining's): the mean of the data-set means, only when all were scored."""
    scored = [r for r in rows if r.psnr is not None]
    row = _row(paper, task, arch, DERAINING_AVERAGE, None, None, "")
    if len(scored) == len(rows):
        row.psnr = sum(r.psnr for r in scored) / len(scored)
        row.ssim = sum(r.ssim for r in scored) / len(scored)
        row.note = f"mean of the {len(scored)} data-set means"
    else:
        row.note = f"needs all {len(rows)} data sets ({len(scored)} scored)"
    return row


def build_rows(paper: dict, task: str, arch: str, data_root: str,
               runs: list[tuple[float | None, list[DatasetResult]]],
               specs: list[DatasetSpec] | None = None) -> list[Row]:
    """Table rows in the paper's data-set order, per ratio for CS; skipped sets included."""
    rows = []
    specs = list(TASK_DATASETS[task]) if specs is None else specs
    for ratio, results in runs:
        by_name = {r.dataset: r for r in results}
        ratio_rows = [_row(paper, task, arch, spec.name, ratio, by_name.get(spec.name),
                           f"not found under {data_root} (skipped)")
                      for spec in specs]
        if get_task(task).reports_average:
            ratio_rows.append(average_row(paper, task, arch, ratio_rows))
        rows += ratio_rows
    return rows


def _signed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def render_markdown(task: str, arch: str, rows: list[Row], header: list[str]) -> str:
    name = "DGUNet+" if arch == "DGUNet_plus" else "DGUNet"
    cs = task == "cs"
    ssim_digits = 4 if cs else 3
    columns = ["Data set", *(["Ratio"] if cs else []), "Images", "PSNR", "SSIM", "Paper PSNR",
               "Paper SSIM", "Δ PSNR", "Δ SSIM", "Note"]
    lines = [f"## {get_task(task).title}, {name}: ours vs. the paper (PSNR dB / SSIM)", "",
             *[f"- {h}" for h in header], "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r.dataset, *([f"{r.ratio:g}%"] if cs else []),
                 "-" if r.images is None else str(r.images),
                 fmt_number(r.psnr, 2), fmt_number(r.ssim, ssim_digits + 1),
                 fmt_number(r.paper_psnr, 2), fmt_number(r.paper_ssim, ssim_digits),
                 _signed(r.delta_psnr, 2), _signed(r.delta_ssim, ssim_digits + 1), r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_json(task: str, arch: str, rows: list[Row], header: list[str]) -> dict:
    items = []
    for r in rows:
        item = json_safe(asdict(r))
        item["delta_psnr"], item["delta_ssim"] = r.delta_psnr, r.delta_ssim
        items.append(item)
    return {"task": task, "arch": arch, "settings": header, "rows": items}


def checkpoint_ratio(path: str) -> float | None:
    structure = infer_structure(extract_state_dict(read_checkpoint(path), f"checkpoint {path}"))
    return structure.cs_ratio if structure is not None and structure.kind == "cs" else None


def weight_jobs(task: str, weights: list[str], ratios: list[float] | None) -> list[tuple[str, float | None]]:
    """(checkpoint, CS ratio) pairs to run. CS: a '{ratio}' template or one file per ratio."""
    if not weights:
        raise ConfigError("--weights is required (or --method hyperlaplacian / bicubic with a known-operator "
                          "--protocol)")
    if task != "cs":
        if len(weights) != 1 or ratios:
            raise ConfigError(f"{task} takes one --weights file and no --cs-ratios")
        return [(weights[0], None)]
    if len(weights) == 1 and "{ratio}" in weights[0]:
        if not ratios:
            raise ConfigError("a --weights template with {ratio} needs --cs-ratios")
        return [(weights[0].replace("{ratio}", ratio_key(r)), r) for r in ratios]
    jobs = [(w, checkpoint_ratio(w)) for w in weights]
    if ratios:
        have = {r for _, r in jobs}
        missing = [ratio_key(r) for r in ratios if r not in have]
        if missing and len(jobs) == 1 and len(ratios) == 1 and jobs[0][1] is None:
            return [(weights[0], ratios[0])]  # a file whose ratio we cannot tell: trust the flag
        if missing:
            raise ConfigError(f"no checkpoint among --weights is for ratio(s) {', '.join(missing)}%")
        jobs = [(w, r) for w, r in jobs if r in ratios]
    return jobs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--weights", nargs="+",
                        help="checkpoint; for cs one file per ratio or a path with {ratio}")
    parser.add_argument("--data-root", required=True, help="folder holding the task's test sets")
    parser.add_argument("--results", default="results", help="output root (default ./results)")
    parser.add_argument("--cs-ratios", type=options.percent, nargs="+", default=None,
                        help="cs only: sampling ratios in percent (default: those of the checkpoints)")
    options.add_model_arguments(parser)
    options.add_run_arguments(parser, tiles=True)
    options.add_skip_bad_argument(parser)
    known.add_known_arguments(parser, None)


def _header(args: argparse.Namespace, ctx_restore, weights: list[str]) -> list[str]:
    return [f"weights: {', '.join(weights)}", f"data root: {args.data_root}",
            f"self-ensemble: {'x8' if ctx_restore.self_ensemble else 'off'}, precision: {args.precision}"
            + (f", tiles {args.tile} (overlap {args.overlap})" if args.tile else "")]


def run(args: argparse.Namespace) -> int:
    task = args.task
    if task == "cs" and args.tile:
        raise ConfigError("--tile does not apply to cs: its protocol fixes 128x128 tiles")
    out_root = Path(args.results) / task
    paper, runs, arch, restore = load_paper(), [], "DGUNet", None
    protocol = known.known_protocol(task, args)
    if protocol and protocol != KNOWN_PROTOCOLS.get(task):
        raise ConfigError(f"--protocol {protocol} belongs to --task "
                          f"{next(t for t, p in KNOWN_PROTOCOLS.items() if p == protocol)}, not {task}")
    specs = list(KNOWN_DATASETS[protocol]) if protocol else list(TASK_DATASETS[task])
    baseline = protocol is not None and args.method != "model"
    jobs = [(None, None)] if baseline else weight_jobs(task, args.weights, args.cs_ratios)
    for weights, ratio in jobs:
        ctx = make_context(task, args, weights, ratio)
        arch, restore = ctx.arch, ctx.restore
        result_root = out_root / f"ratio_{ratio_key(ctx.cs_ratio)}" if task == "cs" else out_root
        results, _ = run_datasets(ctx, specs, args.data_root, result_root, skip_missing=True,
                                  skip_bad=args.skip_bad)
        runs.append((ctx.cs_ratio, results))
    header = _header(args, restore, args.weights or [f"{args.method} baseline"])
    if protocol:
        header.append(f"protocol: {protocol} (dgunet/benchmarks); the paper has no numbers for it")
    rows = build_rows(paper, task, arch, args.data_root, runs, specs)
    text = render_markdown(task, arch, rows, header)
    write_text_atomic(out_root / "table.md", text)
    write_json_atomic(out_root / "table.json", rows_json(task, arch, rows, header))
    print(text)
    print(f"wrote {out_root / 'table.md'} and {out_root / 'table.json'}")
    return 0
