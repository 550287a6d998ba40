"""What a run leaves behind besides checkpoints (rank 0 only).

- a tqdm bar per epoch;
- metrics.jsonl: one JSON object per completed epoch (epoch, lr, train_loss, val_psnr, best_psnr,
  seconds, images_per_s, ...), appended as the epoch ends;
- curves.png: training loss and validation PSNR against epoch, redrawn after each validation;
- config.yml: the resolved configuration the run uses;
- TensorBoard scalars under tensorboard/ when `torch.utils.tensorboard` imports.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dgunet.atomic import atomic_open, write_text_atomic, writing
from dgunet.jsonio import json_safe

METRICS = "metrics.jsonl"
_OPEN_BARS: weakref.WeakSet = weakref.WeakSet()  # the bars of this process, for close_progress_bars
CURVES = "curves.png"
CONFIG = "config.yml"


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Records:
    """All methods are no-ops on ranks other than 0."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.writer = None
        if enabled:
            with writing(self.out_dir):
                self.out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # the tensorboard package is optional
                    SummaryWriter = None
                if SummaryWriter is not None:
                    self.writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def print(self, *args: Any) -> None:
        """A log line through the progress bar's own writer: the bar is cleared, the line written,
        the bar redrawn below it, so no line lands on the bar's."""
        if self.enabled:
            tqdm.write(" ".join(str(a) for a in args))

    def save_config(self, config_yaml: str) -> None:
        if self.enabled:
            write_text_atomic(self.out_dir / CONFIG, config_yaml)

    def progress(self, epoch: int, last_epoch: int, steps: int, done: int = 0) -> tqdm:
        """The epoch's bar; `done` steps already taken (a run resumed from a mid-epoch snapshot)."""
        bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{last_epoch}", unit="step", leave=False,
                   disable=not self.enabled, dynamic_ncols=True)
        _OPEN_BARS.add(bar)
        return bar

    def keep_epochs_up_to(self, epoch: int) -> None:
        """On resume: forget lines of epochs after the checkpoint (a crash between logging an
        epoch and saving its checkpoint would otherwise log that epoch twice)."""
        if not self.enabled:
            return
        rows = read_metrics(self.out_dir)
        kept = [r for r in rows if r["epoch"] <= epoch]
        if len(kept) != len(rows):
            write_text_atomic(self.out_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = json_safe(row)
        with writing(self.out_dir / METRICS), open(self.out_dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def log_validation(self, psnr: float, epoch: int, step: int, steps: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar("val_psnr_step", psnr, (epoch - 1) * steps + step)

    def plot(self) -> None:
        """curves.png from metrics.jsonl (the whole run, resumed parts included)."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = read_metrics(self.out_dir)
        fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4))
        ax_loss.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], "-")
        ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss (sum over 7 stages)")
        val = [(r["epoch"], r["val_psnr"]) for r in rows if isinstance(r.get("val_psnr"), int | float)]
        ax_psnr.plot([e for e, _ in val], [p for _, p in val], "o-")
        ax_psnr.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation PSNR")
        fig.tight_layout()
        try:
            with atomic_open(self.out_dir / CURVES) as f:
                fig.savefig(f, format="png", dpi=80)
        finally:
            plt.close(fig)

    @staticmethod
    def close_progress_bars() -> None:
        """Clear every bar still on screen (a run that ends by an error), so that the error message
        starts on a line of its own instead of at the end of the bar's."""
        for bar in list(_OPEN_BARS):
            bar.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
