"""Peak memory of one training step per micro-batch size, for each task's published model.

    python scripts/memory_per_microbatch.py                      # GPU if present, else CPU
    python scripts/memory_per_microbatch.py --device cpu --micro 1 2 --tasks deraining denoising
    python scripts/memory_per_microbatch.py --archs DGUNet DGUNet_plus --amp bf16 --out mem.md

One step = forward of the 7 stages, the task's published loss, backward, Adam step: exactly what
the engine does per micro-batch, at the published widths and patch size. Each measurement runs in
a fresh process so that peaks do not carry over:
  GPU: torch.cuda.max_memory_allocated (tensors; the CUDA context and allocator cache add ~0.5-1 GiB);
  CPU: the process's peak resident memory (VmHWM in /proc/self/status), also shown as the growth
       over the resident memory just before the step (weights already there).
Prints a markdown table (docs/training.md, "Reproducing on your hardware").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# label: (task, training patch, config file)
SETUPS = {
    "deblurring": ("deblurring", 256, "Deblurring/training.yml"),
    "deraining": ("deraining", 256, "Deraining/training.yml"),
    "denoising": ("denoising", 128, "Denoising/training.yml"),
    "cs": ("cs", 32, "Compressive_Sensing/training.yml"),
    "cs-deblock": ("cs", 128, "Compressive_Sensing/training_deblock.yml"),
}
GIB = 1024**3


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def measure(label: str, arch: str, micro: int, device: str, amp: str) -> dict:
    """One training step in this process; returns the numbers as a dict."""
    import torch

    from dgunet.config import load_config
    from dgunet.engine.speed import AMP_DTYPES, SpeedOptions, prepare_model
    from dgunet.engine.steps import build_model_from_cfg, compute_loss

    task, patch, yml = SETUPS[label]
    cfg = load_config(REPO / yml, ["MODEL.ARCH", arch])
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg).to(device).train()
    dtype = AMP_DTYPES[amp]
    prepare_model(model, SpeedOptions(amp=amp))  # under AMP, the merge's Gram inverse stays fp32
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    channels = 1 if task == "cs" else 3
    target = torch.rand(micro, channels, patch, patch, device=device)
    inp = target if task == "cs" else (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _proc_status_kib("VmRSS") * 1024
    start = time.perf_counter()
    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        outputs = model(inp)
    loss = compute_loss(outputs, target, cfg)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_kib("VmHWM") * 1024
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    return {"label": label, "arch": arch, "patch": patch, "micro": micro, "peak": peak,
            "step": peak - before, "seconds": seconds, "params": params, "loss": float(loss)}


def run_child(label: str, arch: str, micro: int, device: str, amp: str, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", label, arch, str(micro), device, amp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"label": label, "arch": arch, "micro": micro, "error": f"over {timeout:.0f} s"}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        error = "out of memory" if "out of memory" in proc.stderr.lower() or proc.returncode == -9 else tail[0]
        return {"label": label, "arch": arch, "micro": micro, "error": error}
    return json.loads(lines[-1])


def table(rows: list[dict], device: str, amp: str) -> str:
    memory = "peak allocated (GiB)" if device == "cuda" else "peak RSS (GiB)"
    growth = "step allocations (GiB)" if device == "cuda" else "growth during the step (GiB)"
    out = [f"| task | model | patch | micro-batch | {memory} | {growth} | s/step |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "DGUNet+" if r["arch"] == "DGUNet_plus" else "DGUNet"
        if "error" in r:
            out.append(f"| {r['label']} | {name} | {SETUPS[r['label']][1]} | {r['micro']} | {r['error']} | | |")
            continue
        out.append(f"| {r['label']} | {name} | {r['patch']} | {r['micro']} | {r['peak'] / GIB:.2f} | "
                   f"{r['step'] / GIB:.2f} | {r['seconds']:.1f} |")
    return "\n".join(out) + f"\n\n(device {device}, amp {amp}; one forward + loss + backward + Adam step)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--tasks", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--archs", nargs="+", choices=["DGUNet", "DGUNet_plus"], default=["DGUNet"])
    parser.add_argument("--micro", nargs="+", type=int,
                        help="micro-batch sizes (default: CPU 1 2, GPU 1 2 4 8 16)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--child", nargs=5, metavar=("LABEL", "ARCH", "MICRO", "DEVICE", "AMP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        label, arch, micro, device, amp = args.child
        print(json.dumps(measure(label, arch, int(micro), device, amp)), flush=True)
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = args.micro or ([1, 2, 4, 8, 16] if device == "cuda" else [1, 2])
    rows = []
    for label in args.tasks:
        for arch in args.archs:
            for micro in sizes:
                row = run_child(label, arch, micro, device, args.amp, args.timeout)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if "error" in row:
                    break  # larger micro-batches will not fit either
    text = table(rows, device, args.amp)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
