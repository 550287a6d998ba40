"""What testing one data set produced: where the results are and, with ground truth, the scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dgunet.evaluate import EvaluationResult, write_json_atomic


@dataclass
class DatasetResult:
    """One data set's outcome. `scores` is None without ground truth; `note` says why."""

    task: str
    dataset: str
    result_dir: Path
    count: int
    seconds: float
    scores: EvaluationResult | None = None
    note: str = ""
    cs_ratio: float | None = None
    unit: str = "images"  # what `count` counts: images, blocks (SIDD), crops (DND)
    skipped: list = field(default_factory=list)  # precheck.BadFile: left out by --skip-bad

    @property
    def psnr(self) -> float | None:
        return self.scores.psnr if self.scores else None

    @property
    def ssim(self) -> float | None:
        return self.scores.ssim if self.scores else None

    def summary(self) -> str:
        ratio = f" at {self.cs_ratio:g}%" if self.cs_ratio is not None else ""
        unit = self.unit if self.count != 1 else self.unit[:-1]
        head = f"{self.dataset}{ratio}: {self.count} {unit} in {self.seconds:.1f} s -> {self.result_dir}"
        if self.skipped:
            head += f" ({len(self.skipped)} left out by --skip-bad" + (
                ", listed in scores.json)" if self.scores is not None else ")")
        if self.scores is None:
            return f"{head}\n  {self.note}" if self.note else head
        means = f"mean PSNR {fmt_number(self.psnr, 4)} dB, SSIM {fmt_number(self.ssim, 4)}"
        return f"{head}\n  {means} ({self.scores.protocol} protocol)"

    def write_scores(self) -> Path | None:
        """<result_dir>/scores.json (the evaluate command's JSON format), when scored."""
        if self.scores is None:
            return None
        path = self.result_dir / "scores.json"
        document = self.scores.to_json()
        if self.skipped:
            document["skipped"] = [f.to_json() for f in self.skipped]
        write_json_atomic(path, document)
        return path


def fmt_number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
