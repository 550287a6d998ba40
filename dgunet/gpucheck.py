"""`python -m dgunet.gpucheck` (scripts/gpu_check.sh): one command that checks a GPU machine.

Runs, each in its own process with a time limit:
  1. the `cuda` tests (tests/test_cuda.py; all skipped without a GPU),
  2. the inference bench: 256x256 and 1280x720, fp32 / bf16 / fp16,
  3. the training bench: every speed path at the published batch per GPU (8 of 256x256),
  4. the data loader bench with 8 workers,
then prints what passed and, unless --quick without --docs, rewrites the section between the
markers below in docs/benchmarks.md with the card's name and every table. Exit status 0 only
when every step passed. `--device cpu --quick` runs the same steps on tiny sizes in about a
minute; tests/test_bench_train.py runs it that way so that it cannot rot.

    scripts/gpu_check.sh                       # CUDA, full (under 8 minutes on an H100-class card)
    scripts/gpu_check.sh --device cpu --quick  # any machine
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dgunet.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- gpu-check:begin (written by scripts/gpu_check.sh; edits here are replaced) -->"
END = "<!-- gpu-check:end -->"


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str]  # after `python`
    timeout: int  # seconds


@dataclass
class Outcome:
    step: Step
    ok: bool
    seconds: float
    output: str


def bench(*args: str) -> list[str]:
    return ["-m", "dgunet", "bench", *args]


def plan(device: str, quick: bool) -> list[Step]:
    """The steps of a check on `device`; `quick`: tiny sizes, one run each."""
    tests = Step("cuda tests", ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                                str(REPO / "tests" / "test_cuda.py")], 300)
    if quick:
        half = ["bf16-cl"] if device == "cuda" or _cpu_bf16() else []
        return [tests,
                Step("inference 64x64", bench("--device", device, "--size", "64", "--paths", "faithful", *half,
                                              "--no-memory", "--runs", "1", "--warmup", "0"), 120),
                Step("training step 32x32", bench("--device", device, "--train-step", "--size", "32",
                                                  "--train-batch", "1", "--train-paths", "fast", "--runs", "1",
                                                  "--warmup", "0", "--no-memory"), 180),
                Step("data loader", bench("--data", "--task", "denoising", "--workers", "1",
                                          "--train-batch", "2", "--data-batches", "2", "--stand-in-count", "4"),
                     120)]
    steps = [tests]
    if device == "cuda":
        steps += [
            Step("inference 256x256", bench("--device", "cuda", "--size", "256", "--paths", "faithful",
                                            "fast-merge", "channels-last", "bf16", "bf16-cl", "fp16", "fp16-cl",
                                            "--runs", "5"), 300),
            Step("inference 1280x720", bench("--device", "cuda", "--large-size", "1280x720", "--paths", "large",
                                             "large-bf16-cl", "large-fp16-cl", "tiled", "--runs", "3"), 300),
            Step("training step, published batch per GPU", bench(
                "--device", "cuda", "--train-step", "--size", "256", "--train-batch", "8", "--compile",
                "--train-paths", "published", "bf16", "fp16", "channels-last", "foreach-adam", "fused-adam",
                "fast-merge", "fast", "fast+compile", "--runs", "5", "--warmup", "2"), 420)]
    else:
        steps += [Step("inference 256x256", bench("--device", "cpu", "--size", "256", "--runs", "2"), 600),
                  Step("training step 128x128", bench("--device", "cpu", "--train-step", "--size", "128",
                                                      "--train-batch", "2", "--runs", "2"), 1200)]
    steps.append(Step("data loader", bench("--data", "--task", "deblurring", "--workers", "8",
                                           "--train-batch", "8"), 300))
    return steps


def _cpu_bf16() -> bool:
    from dgunet.inference import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def run_step(step: Step, seconds_left: float) -> Outcome:
    """Run one step within its own limit and what is left of the whole check's budget."""
    limit = int(min(step.timeout, seconds_left))
    if limit < 10:
        print(f"-- {step.name}: SKIPPED, the check's time budget is spent", flush=True)
        return Outcome(step, False, 0.0, "skipped: the check's time budget (--budget) was spent")
    print(f"== {step.name}: python {' '.join(step.args)}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *step.args], cwd=REPO, capture_output=True, text=True,
                              timeout=limit)
        ok, output = proc.returncode == 0, proc.stdout + (proc.stderr[-3000:] if proc.returncode else "")
    except subprocess.TimeoutExpired as err:
        partial = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        ok, output = False, f"{partial}\ntimed out after {limit} s"
    seconds = time.perf_counter() - start
    print(output.rstrip(), flush=True)
    print(f"-- {step.name}: {'passed' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    return Outcome(step, ok, seconds, output)


def card_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    from dgunet.bench import machine

    return machine()


def report(outcomes: list[Outcome], device: str, quick: bool) -> str:
    """The docs section (between the markers, markers excluded)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## GPU check results: {card_name(device)}", "",
             f"`scripts/gpu_check.sh --device {device}{' --quick' if quick else ''}`, {when}, torch "
             f"{torch.__version__}. Steps: " + ", ".join(f"{o.step.name} {'passed' if o.ok else 'FAILED'} "
                                                         f"({o.seconds:.0f} s)" for o in outcomes) + "."]
    for o in outcomes[1:]:
        lines += ["", f"### {o.step.name}", "", f"`python {' '.join(o.step.args)}`", ""]
        lines += [ln for ln in o.output.strip().splitlines() if not ln.startswith("timing ")]
    return "\n".join(lines)


def rewrite_section(text: str, section: str) -> str:
    """`text` with what lies between BEGIN and END replaced (both appended when missing)."""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each (about a minute)")
    parser.add_argument("--docs", help="markdown file to write the results into (default docs/benchmarks.md, "
                                       "not written with --quick)")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds for the whole check (default 480; full CPU check 3600); "
                             "steps past it are skipped and count as failed")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU; use --device cpu --quick to check this machine",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    budget = args.budget or (3600.0 if args.device == "cpu" and not args.quick else 480.0)
    steps = plan(args.device, args.quick)
    outcomes = [run_step(step, budget - (time.perf_counter() - start)) for step in steps]
    docs = Path(args.docs) if args.docs else (None if args.quick else REPO / "docs" / "benchmarks.md")
    if docs is not None:
        old = docs.read_text(encoding="utf-8") if docs.is_file() else ""
        write_text_atomic(docs, rewrite_section(old, report(outcomes, args.device, args.quick)))
        print(f"results written to {docs}")
    print(f"\ngpu check ({card_name(args.device)}), {time.perf_counter() - start:.0f} s:")
    for o in outcomes:
        print(f"  {'PASS' if o.ok else 'FAIL'}  {o.step.name} ({o.seconds:.0f} s)")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
