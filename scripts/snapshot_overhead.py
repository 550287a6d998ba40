"""What one mid-epoch snapshot costs at the published deblurring widths.

    python scripts/snapshot_overhead.py [--out DIR] [--repeats 3]

Builds the published deblurring DGUNet with its Adam optimizer (moments filled by one step on
a small input), then times what the training loop does at a snapshot: gather the state on the
CPU (make_checkpoint + make_snapshot) and write it atomically (temporary file, fsync, rename).
Prints the file size, the median time and that time as a share of TRAIN.SNAPSHOT_MINUTES
(15 min by default), with the CPU it ran on. A GPU run also copies the state to the host first,
so measure there too when it matters.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dgunet.bench import cpu_description
from dgunet.checkpoint import save_atomic
from dgunet.engine.checkpointing import make_checkpoint
from dgunet.engine.snapshots import EpochProgress, make_snapshot
from dgunet.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=15.0, help="the snapshot interval to compare with")
    args = parser.parse_args()

    model = build_model("deblurring", "DGUNet")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3000)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    outputs = model(torch.rand(1, 3, 32, 32))  # one step, so that Adam holds both moments
    sum(o.mean() for o in outputs).backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())

    with tempfile.TemporaryDirectory(dir=args.out) as folder:
        path = Path(folder) / "snapshot.pth"
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ckpt = make_checkpoint(0, model, optimizer, scheduler, scaler, None, 0, "")
            mix_states = [torch.Generator().get_state()]
            snap = make_snapshot(ckpt, EpochProgress(1, 100, [0.1] * 100), mix_states, 1, {})
            save_atomic(snap, path)
            times.append(time.perf_counter() - t0)
        size = path.stat().st_size
    median = statistics.median(times)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"published deblurring DGUNet: {params:,} parameters; snapshot file {size / 2**20:.1f} MiB "
          f"(weights + Adam moments + RNG states)")
    print(f"snapshot time: median {median:.3f} s of {args.repeats} ({', '.join(f'{t:.3f}' for t in times)})")
    print(f"every {args.minutes:g} min: {100 * median / (60 * args.minutes):.3f}% of training time")


if __name__ == "__main__":
    main()
