"""`python -m dgunet data check --task TASK --root DIR`: is a data set laid out as expected?

Expected layouts under --root (counts are the published ones; other counts only warn,
since you may train on your own data). Paired folders hold `input/` and `target/` whose
files pair by name without extension. Starred folders are required for training; the
others are needed only to evaluate on them.

deblurring:
    train/input,target*                 GoPro train, 2103 pairs
    test/GoPro/input,target*            1111 pairs (validation during training)
    test/HIDE/input,target              2025 pairs
    test/RealBlur_J/input,target        980 pairs
    test/RealBlur_R/input,target        980 pairs
deraining:
    train/input,target*                 Rain13K, 13712 pairs
    test/Rain100L/input,target*         100 pairs (validation during training)
    test/Rain100H, test/Test100         100 pairs each
    test/Test1200, test/Test2800        1200 and 2800 pairs
denoising:
    train/input,target*                 SIDD-Medium patches (320 images x 300 = 96000);
                                        make them with `python -m dgunet.data.sidd`
    val/input,target*                   SIDD validation patches, 1280 pairs
    test/SIDD/ValidationNoisyBlocksSrgb.mat, test/SIDD/ValidationGtBlocksSrgb.mat
    test/DND/info.mat, test/DND/images_srgb/ (50 .mat files)
cs:
    train/*                             DIV2K_BSD400 images (800 + 400)
    test/Set11*                         11 images (validation during training)
    test/BSD68                          68 images

Only names are checked, not whether every image decodes (that would take minutes).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from dgunet import tasks
from dgunet.data.io import list_images
from dgunet.data.paired import match_stems
from dgunet.errors import DataError


@dataclass(frozen=True)
class Expect:
    """One expected entry: kind is 'pairs', 'images', 'file' or 'mats' (a folder of .mat)."""

    path: str
    kind: str
    count: int | None
    required: bool


def _pairs(path: str, count: int, required: bool = False) -> Expect:
    return Expect(path, "pairs", count, required)


LAYOUTS: dict[str, list[Expect]] = {
    "deblurring": [
        _pairs("train", 2103, True),
        _pairs("test/GoPro", 1111, True),
        _pairs("test/HIDE", 2025),
        _pairs("test/RealBlur_J", 980),
        _pairs("test/RealBlur_R", 980),
    ],
    "deraining": [
        _pairs("train", 13712, True),
        _pairs("test/Rain100L", 100, True),
        _pairs("test/Rain100H", 100),
        _pairs("test/Test100", 100),
        _pairs("test/Test1200", 1200),
        _pairs("test/Test2800", 2800),
    ],
    "denoising": [
        _pairs("train", 96000, True),
        _pairs("val", 1280, True),
        Expect("test/SIDD/ValidationNoisyBlocksSrgb.mat", "file", None, False),
        Expect("test/SIDD/ValidationGtBlocksSrgb.mat", "file", None, False),
        Expect("test/DND/info.mat", "file", None, False),
        Expect("test/DND/images_srgb", "mats", 50, False),
    ],
    "cs": [
        Expect("train", "images", 1200, True),
        Expect("test/Set11", "images", 11, True),
        Expect("test/BSD68", "images", 68, False),
    ],
}
# The tasks trained on data sets on disk (the task table's non-synthetic ones), in the table's order.
TASKS = tuple(t.name for t in tasks.TASK_TABLE if t.data != tasks.SYNTHETIC)


@dataclass
class FolderReport:
    """What was found for one expected entry. `broken` means present but unusable."""

    path: str
    kind: str
    required: bool
    present: bool
    count: int = 0
    expected: int | None = None
    unpaired: list[str] = field(default_factory=list)
    broken: str = ""

    @property
    def ok(self) -> bool:
        """False when this entry makes the check fail."""
        if not self.present:
            return not self.required
        return not self.broken

    @property
    def status(self) -> str:
        if not self.present:
            return "MISSING" if self.required else "absent (optional)"
        if self.broken:
            return "BROKEN"
        if self.expected is not None and self.count != self.expected:
            return "ok (count differs)"
        return "ok"


def _check_pairs(base: Path, report: FolderReport) -> None:
    folders = (base / "input", base / "target")
    absent = [f.name for f in folders if not f.is_dir()]
    if absent:
        report.present = base.is_dir()
        report.broken = f"no {' or '.join(absent)}/ folder"
        return
    pairs, only_in, only_tgt = match_stems(*(list_images(f) for f in folders))
    report.count = len(pairs)
    report.unpaired = [f"input/{s}" for s in only_in] + [f"target/{s}" for s in only_tgt]
    if report.unpaired:
        report.broken = f"{len(report.unpaired)} file(s) without a partner"
    elif not pairs:
        report.broken = "no images"


def _check_entry(root: Path, expect: Expect) -> FolderReport:
    base = root / expect.path
    report = FolderReport(expect.path, expect.kind, expect.required, base.exists(), expected=expect.count)
    if not report.present:
        return report
    if expect.kind == "pairs":
        try:
            _check_pairs(base, report)
        except DataError as err:  # e.g. a.png and a.jpg in one folder
            report.broken = str(err)
    elif expect.kind == "images":
        report.count = len(list_images(base))
        report.broken = "" if report.count else "no images"
    elif expect.kind == "mats":
        report.count = len(list(base.glob("*.mat")))
        report.broken = "" if report.count else "no .mat files"
    else:
        report.count = 1
        report.broken = "" if base.is_file() else "not a file"
    return report


def check_dataset(task: str, root: str | Path) -> list[FolderReport]:
    """One report per expected entry of `task` under `root` (see the module docstring)."""
    if task not in LAYOUTS:
        raise DataError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set root {root} does not exist; pass --root to the Datasets folder")
    return [_check_entry(root, expect) for expect in LAYOUTS[task]]


def format_table(reports: list[FolderReport]) -> str:
    rows = [("entry", "status", "found", "expected", "note")]
    for r in reports:
        name = r.path + ("/{input,target}" if r.kind == "pairs" else "")
        note = r.broken
        if r.unpaired:
            note += ": " + ", ".join(r.unpaired[:5]) + (" ..." if len(r.unpaired) > 5 else "")
        found = str(r.count) if r.present else "-"
        expected = "-" if r.expected is None else str(r.expected)
        rows.append((name, r.status, found, expected, note))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Show the expected layouts in `--help`, verbatim.
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("action", choices=["check"], help="what to do with the data set")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--root", required=True, type=Path, help="the task's Datasets folder, e.g. Deraining/Datasets"
    )


def run(args: argparse.Namespace) -> int:
    reports = check_dataset(args.task, args.root)
    print(f"{args.task} data under {args.root}")
    print(format_table(reports))
    failed = [r.path for r in reports if not r.ok]
    if failed:
        print(f"FAILED: fix {', '.join(failed)} (layout: python -m dgunet data check --help)")
        return 1
    print("OK: every required folder is present and pairs up")
    return 0
