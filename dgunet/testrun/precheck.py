"""Test sets checked before any restoring, so that a bad file costs seconds, not a whole run.

Per image-folder set (paired input/ + target/, compressive sensing's clean images): files that
cannot be decoded, inputs without a target and targets without an input, targets whose channels
or size differ from what the restored image will be (a gray target for an RGB result), and
images smaller than the protocol's metrics need (SSIM windows, SR border crops). All problems of
all sets are listed in one report, then the test stops with one DataError; with `--skip-bad` it
goes on without those files, and each set's scores.json lists them under "skipped". The clean
sets of the known-operator protocols are checked for unreadable files; their runner
(testrun/known.py) does not take a skip list yet, so there --skip-bad still stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from dgunet.data.io import list_images
from dgunet.data.paired import by_stem
from dgunet.errors import DataError
from dgunet.metrics.protocols import get_protocol


@dataclass(frozen=True)
class BadFile:
    """One file left out of a test set, and why."""

    stem: str  # the image's name without extension: what scores.json lists
    path: Path
    problem: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.stem, "file": str(self.path), "problem": self.problem}


@cache
def smallest_side(protocol: str) -> int:
    """The smallest square side the protocol scores, found by asking it (its metrics raise
    DataError below their window), so no second copy of each metric's limit lives here."""
    rng = np.random.default_rng(0)
    proto = get_protocol(protocol)
    for side in range(1, 65):
        gt = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        try:
            proto.score(gt // 2 + 64, gt)
        except DataError:
            continue
        return side
    return 1


def _decoded_shape(path: Path) -> tuple[int, ...] | str:
    """(H, W) or (H, W, C) of an image file, or why it cannot be used."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        return "cannot be read as an image (damaged, empty or not an image)"
    if array.dtype != np.uint8:
        return f"is a {array.dtype} image; the protocols score 8-bit images"
    return array.shape


def _channels(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 2 else min(shape[2], 3)  # an alpha channel is dropped


def _size_problem(shape: tuple[int, ...], protocol: str | None) -> str | None:
    if protocol is None or protocol == "sidd":
        return None
    need = smallest_side(protocol)
    if min(shape[:2]) < need:
        return (f"is {shape[0]}x{shape[1]}, smaller than the {need}x{need} pixels the {protocol} "
                f"protocol's metrics need")
    return None


def check_paired(folder: Path, protocol: str | None, channels: int = 3) -> list[BadFile]:
    """Problems of a paired set `folder` (input/, optional target/); `channels` of the results."""
    inputs = by_stem(list_images(folder / "input"))
    target_dir = folder / "target"
    if not target_dir.is_dir():  # restored only, not scored: only unreadable inputs matter
        return [BadFile(s, p, why) for s, p in inputs.items() if isinstance(why := _decoded_shape(p), str)]
    targets = by_stem(list_images(target_dir))
    bad = [BadFile(s, p, f"has no target image in {target_dir}") for s, p in inputs.items() if s not in targets]
    bad += [BadFile(s, p, f"has no input image in {folder / 'input'}") for s, p in targets.items()
            if s not in inputs]
    for stem in sorted(inputs.keys() & targets.keys()):
        problem = _pair_problem(inputs[stem], targets[stem], protocol, channels)
        if problem is not None:
            bad.append(BadFile(stem, *problem))
    return bad


def _pair_problem(inp: Path, target: Path, protocol: str | None, channels: int) -> tuple[Path, str] | None:
    in_shape, gt_shape = _decoded_shape(inp), _decoded_shape(target)
    if isinstance(in_shape, str):
        return inp, in_shape
    if isinstance(gt_shape, str):
        return target, gt_shape
    if in_shape[:2] != gt_shape[:2]:
        return target, (f"is {gt_shape[0]}x{gt_shape[1]} but its input {inp.name} is "
                        f"{in_shape[0]}x{in_shape[1]}; the result has the input's size")
    strict = protocol is not None and get_protocol(protocol).same_channels
    if strict and _channels(gt_shape) != channels:
        return target, (f"has {_channels(gt_shape)} channel(s) (gray vs RGB) but the results have {channels}; "
                        f"the {protocol} protocol compares them channel by channel")
    size = _size_problem(gt_shape, protocol)
    return (target, size) if size else None


def check_clean(folder: Path, protocol: str | None) -> list[BadFile]:
    """Problems of a folder of clean images (compressive sensing; usable for any such set)."""
    bad = []
    for stem, path in by_stem(list_images(folder)).items():
        shape = _decoded_shape(path)
        problem = shape if isinstance(shape, str) else _size_problem(shape, protocol)
        if problem is not None:
            bad.append(BadFile(stem, path, problem))
    return bad


def check_known_clean(folder: Path) -> list[BadFile]:
    """Unreadable files of a known-operator protocol's clean set (its cases crop and score them)."""
    from dgunet.data.synthetic import clean_images

    return [BadFile(p.stem, p, why) for p in clean_images(folder) if isinstance(why := _decoded_shape(p), str)]


# Kinds whose runners leave out what --skip-bad names; a bad file of another kind always stops.
SKIPPABLE = ("paired", "cs")


def check_set(kind: str, folder: Path, protocol: str | None, channels: int = 3) -> list[BadFile] | None:
    """The bad files of one set, or None for a kind checked where it is read (.mat sets, Photos)."""
    if kind == "paired":
        return check_paired(folder, protocol, channels)
    if kind == "cs":
        return check_clean(folder, protocol)
    if kind == "clean":
        return check_known_clean(folder)
    return None


def check_sets(found: list[tuple[object, Path | None]], skip_bad: bool, log: Callable[[str], None],
               channels: int = 3) -> dict[str, list[BadFile]]:
    """Check every located set of `found` [(DatasetSpec, folder)]; {set name: its bad files}.

    Lists all problems in one report through `log`; raises DataError after it unless `skip_bad`.
    """
    checked = {spec.name: check_set(spec.kind, folder, spec.protocol, channels)
               for spec, folder in found if folder is not None}
    bad = {name: files for name, files in checked.items() if files}
    unskippable = [spec.name for spec, _ in found if spec.name in bad and spec.kind not in SKIPPABLE]
    count = sum(len(files) for files in bad.values())
    if not count:
        return {}
    log(f"test-set check: {count} file(s) cannot be tested:")
    for name, files in bad.items():
        for f in files:
            log(f"  {name}: {f.path} {f.problem}")
    if skip_bad and unskippable:
        raise DataError(f"--skip-bad cannot leave files out of the known-operator set(s) "
                        f"{', '.join(unskippable)} (listed above); remove or fix them")
    if not skip_bad:
        hint = "" if len(unskippable) == len(bad) else (
            ", or pass --skip-bad to test the others and list these in scores.json")
        raise DataError(f"{count} file(s) of the test sets cannot be tested (listed above); fix or remove "
                        f"them{hint}")
    log("--skip-bad: testing without them; each set's scores.json lists them under \"skipped\"")
    return {name: files for name, files in bad.items() if files}
