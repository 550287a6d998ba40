"""Image-folder test sets (deblurring, deraining): restore input/, save PNGs, score against target/."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from dgunet.data.io import list_images, read_image, save_png_atomic
from dgunet.data.paired import by_stem
from dgunet.errors import DataError
from dgunet.evaluate import evaluate_folders
from dgunet.testrun.context import Context
from dgunet.testrun.datasets import DatasetSpec
from dgunet.testrun.restoring import restore_images
from dgunet.testrun.results import DatasetResult


def restore_folder(ctx: Context, in_dir: Path, out_dir: Path, skip: Collection[str] = ()) -> int:
    """Restore every image of `in_dir` but the stems in `skip` into `out_dir`/<stem>.png (8-bit,
    atomic). Returns the count."""
    files = [p for s, p in by_stem(list_images(in_dir)).items() if s not in skip]  # a.png + a.jpg: one a.png
    if not files:
        raise DataError(f"{in_dir} holds no images")
    channels = getattr(ctx.model, "in_c", 3)
    for done, path in enumerate(files, 1):
        image = read_image(path, channels).unsqueeze(0)  # (1,C,H,W)
        restored = restore_images(ctx.model, image, ctx.restore)[0]
        save_png_atomic(out_dir / f"{path.stem}.png", restored)
        if done % 50 == 0 or done == len(files):
            ctx.log(f"  {done}/{len(files)} {path.name}")
    return len(files)


def run_paired(ctx: Context, spec: DatasetSpec, folder: Path, out_dir: Path) -> DatasetResult:
    """Test one paired set; scores with the set's protocol when `folder`/target exists."""
    start = time.perf_counter()
    skipped = ctx.bad_files.get(spec.name, [])
    skip = {f.stem for f in skipped}
    count = restore_folder(ctx, folder / "input", out_dir, skip)
    result = DatasetResult(ctx.task, spec.name, out_dir, count, time.perf_counter() - start, skipped=skipped)
    target = folder / "target"
    if target.is_dir():
        # Stale PNGs of an earlier run in out_dir are ignored; every target still needs a result.
        result.scores = evaluate_folders(spec.protocol, out_dir, target, workers=ctx.workers,
                                         allow_missing=True, exclude=skip)
    else:
        result.note = f"no {target}: results not scored"
    return result
