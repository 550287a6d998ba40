"""`python -m dgunet.bench.gpucheck` (scripts/gpu_check.sh): one command that checks a GPU machine.

GPU time comes rarely and briefly, so the check fits 12 minutes on one H100/H200 with margin:
its steps run in order of value, each in its own process under its own time limit, and the
limits add up to less than the whole check's budget (600 s by default on CUDA):
  1. the `cuda` tests (tests/test_cuda.py, the compile test left to step 6),
  2. the inference bench at 256x256: the fast paths' speed ratio to the faithful one,
  3. the training bench at the published batch per GPU (8 of 256x256): ratio and MFU,
  4. (optional) whole 1280x720 frames,   5. (optional) the data loader with 8 workers,
  6. (optional, last) torch.compile of the fast training step: minutes of compilation.
Steps 1-3 are required: the exit status is 0 when all three passed. An optional step that
fails or finds the budget spent is reported and changes nothing else.

Results go into the --docs file only for steps that passed, one block per step between the
markers below, with the card's name: a failed or skipped step leaves the block of an earlier
good run as it was. The file is rewritten atomically, once, after all steps.

The package knows nothing of the checkout: the test file (--cuda-tests), the recipe the data
loader step times (--data-config) and the docs file (--docs) are passed in; scripts/gpu_check.sh
passes the checkout's tests/test_cuda.py, Deblurring/training.yml (Denoising/ with --quick)
and docs/benchmarks.md (not with --quick). Steps run in the current folder.

    scripts/gpu_check.sh                          # CUDA, about 10 minutes at most
    scripts/gpu_check.sh --plan                   # print the CUDA plan and its budgets, run nothing
    scripts/gpu_check.sh --device cpu --quick     # any machine, a dry run on tiny sizes (~1 minute)
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dgunet.atomic import write_text_atomic

BEGIN = "<!-- gpu-check:begin (written by scripts/gpu_check.sh; edits here are replaced) -->"
END = "<!-- gpu-check:end -->"
HEADING = "## GPU check results"
# The whole check on CUDA: 10 minutes, leaving 2 of the 12 for the machine's start and the copies.
CUDA_BUDGET_S = 600
CPU_BUDGETS_S = {True: 600, False: 3600}  # --device cpu, by --quick
NO_TESTS = "<the cuda test file: --cuda-tests>"  # in a plan printed without one


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str]  # after `python`
    timeout: int  # seconds
    optional: bool = False
    key: str = ""  # its block in the docs; "" when it has none

    @property
    def block_key(self) -> str:
        return self.key or re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class Outcome:
    step: Step
    ok: bool
    seconds: float
    output: str
    skipped: bool = False  # never started: the check's budget was spent

    @property
    def status(self) -> str:
        return "passed" if self.ok else "skipped" if self.skipped else "FAILED"


def bench(*args: str) -> list[str]:
    return ["-m", "dgunet", "bench", *args]


def cuda_tests(timeout: int, test_file: Path | None) -> Step:
    """The cuda tests without their compile test (minutes of compilation: step 6's business)."""
    pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-k", "not compiled"]
    return Step("cuda tests", [*pytest, str(test_file or NO_TESTS)], timeout, key="cuda-tests")


def data_step(timeout: int, task: str, recipe: Path | None, *options: str) -> Step:
    """The data loader bench of `recipe` (the package defaults for `task` when None)."""
    source = ["--config", str(recipe)] if recipe else ["--task", task]
    return Step("data loader", bench("--data", *source, *options), timeout, optional=True)


def cuda_plan(tests: Path | None = None, recipe: Path | None = None) -> list[Step]:
    """The full check on one CUDA GPU, most valuable first; limits sum to 585 s."""
    train = ["--device", "cuda", "--train-step", "--size", "256", "--train-batch", "8"]
    return [
        cuda_tests(150, tests),
        Step("inference 256x256", bench("--device", "cuda", "--size", "256", "--runs", "5", "--paths",
                                        "faithful", "fast-merge", "channels-last", "bf16-cl", "fp16-cl"), 90),
        Step("training step, published batch per GPU", bench(
            *train, "--train-paths", "published", "bf16", "fp16", "channels-last", "fused-adam", "fast-merge",
            "fast", "--runs", "5", "--warmup", "2"), 150, key="training-step"),
        Step("inference 1280x720", bench("--device", "cuda", "--large-size", "1280x720", "--paths", "large",
                                         "large-bf16-cl", "large-fp16-cl", "--runs", "3"), 60, optional=True),
        data_step(45, "deblurring", recipe, "--workers", "8", "--train-batch", "8", "--data-batches", "4",
                  "--stand-in-count", "16"),
        Step("torch.compile training step", bench(*train, "--compile", "--train-paths", "fast", "fast+compile",
                                                  "--runs", "3", "--warmup", "1", "--no-memory"), 90,
             optional=True, key="compile"),
    ]


def cpu_plan(quick: bool, tests: Path | None = None, recipe: Path | None = None) -> list[Step]:
    """The same steps on the CPU: tiny sizes with `quick` (a dry run of the plan), else 128-256."""
    if quick:
        half = ["bf16-cl"] if _cpu_bf16() else []
        return [cuda_tests(120, tests),
                Step("inference 64x64", bench("--device", "cpu", "--size", "64", "--paths", "faithful", *half,
                                              "--no-memory", "--runs", "1", "--warmup", "0"), 120),
                Step("training step 32x32", bench("--device", "cpu", "--train-step", "--size", "32",
                                                  "--train-batch", "1", "--train-paths", "fast", "--runs", "1",
                                                  "--warmup", "0", "--no-memory"), 180, key="training-step"),
                data_step(120, "denoising", recipe, "--workers", "1", "--train-batch", "2", "--data-batches",
                          "2", "--stand-in-count", "4")]
    return [cuda_tests(300, tests),
            Step("inference 256x256", bench("--device", "cpu", "--size", "256", "--runs", "2"), 900),
            Step("training step 128x128", bench("--device", "cpu", "--train-step", "--size", "128",
                                                "--train-batch", "2", "--runs", "2"), 1800,
                 key="training-step"),
            data_step(300, "deblurring", recipe, "--workers", "8", "--train-batch", "8")]


def plan(device: str, quick: bool, tests: Path | None = None, recipe: Path | None = None) -> list[Step]:
    """The steps of a check on `device`; `quick`: tiny sizes, one run each (CPU only). tests: the
    cuda test file; recipe: the training yml the data loader step times."""
    return cuda_plan(tests, recipe) if device == "cuda" else cpu_plan(quick, tests, recipe)


def default_budget(device: str, quick: bool) -> int:
    return CUDA_BUDGET_S if device == "cuda" else CPU_BUDGETS_S[quick]


def describe_plan(steps: list[Step], budget: float) -> str:
    """The plan as printed before a check (and alone with --plan)."""
    total = sum(s.timeout for s in steps)
    lines = [f"plan: {len(steps)} steps, limits {total} s in all, within a budget of {budget:.0f} s"]
    for i, s in enumerate(steps, 1):
        lines.append(f"  {i}. {s.name:<42} {s.timeout:>5} s  {'optional' if s.optional else 'required'}")
    return "\n".join(lines)


def _cpu_bf16() -> bool:
    from dgunet.inference import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def _run_limited(args: list[str], limit: int) -> tuple[bool, str]:
    """Run `python *args` for at most `limit` s; on timeout kill its whole process group (a
    torchrun or test.py grandchild must not keep the GPU busy for the next step)."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended between the timeout and the kill
        out, _ = proc.communicate()
        return False, f"{out or ''}\ntimed out after {limit} s"
    ok = proc.returncode == 0
    return ok, out + ("" if ok else err[-3000:])


def run_step(step: Step, seconds_left: float) -> Outcome:
    """Run one step within its own limit and what is left of the whole check's budget."""
    limit = int(min(step.timeout, seconds_left))
    if limit < 10:
        print(f"-- {step.name}: SKIPPED, the check's time budget is spent", flush=True)
        return Outcome(step, False, 0.0, "skipped: the check's time budget (--budget) was spent", skipped=True)
    print(f"== {step.name} (limit {limit} s): python {' '.join(step.args)}", flush=True)
    start = time.perf_counter()
    ok, output = _run_limited(step.args, limit)
    seconds = time.perf_counter() - start
    print(output.rstrip(), flush=True)
    print(f"-- {step.name}: {'passed' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    return Outcome(step, ok, seconds, output)


def card_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    from dgunet.bench.machine import machine

    return machine()


# ---------------------------------------------------------------- the docs

def _block_markers(key: str) -> tuple[str, str]:
    return f"<!-- gpu-check:step {key} -->", f"<!-- gpu-check:step-end {key} -->"


def step_block(outcome: Outcome, card: str, when: str) -> str:
    """The docs block of one passed step, markers included. A step that did not pass has no
    numbers worth keeping: ValueError, so that it can never replace an earlier good block."""
    if not outcome.ok:
        raise ValueError(f"step {outcome.step.name!r} {outcome.status}: its results are not written")
    start, end = _block_markers(outcome.step.block_key)
    body = [ln for ln in outcome.output.strip().splitlines() if not ln.startswith("timing ")]
    if outcome.step.key == "cuda-tests":
        body = body[-1:]  # pytest's summary line
    command = f"`python {' '.join(outcome.step.args)}`"
    head = [f"### {outcome.step.name}: {card}", "", f"{when}, torch {torch.__version__}, "
            f"{outcome.seconds:.0f} s: {command}", ""]
    return "\n".join([start, *head, *body, end])


def _old_blocks(section: str) -> dict[str, str]:
    pattern = re.compile(r"<!-- gpu-check:step (\S+) -->.*?<!-- gpu-check:step-end \1 -->", re.S)
    return {m.group(1): m.group(0) for m in pattern.finditer(section)}


def _current_section(text: str) -> str:
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        return text.split(BEGIN, 1)[1].split(END, 1)[0]
    return ""


def merged_section(text: str, outcomes: list[Outcome], card: str, when: str) -> str:
    """The section between the markers: the passed steps' new blocks, every other step's block
    from `text` unchanged, in plan order (blocks of steps no longer planned last)."""
    blocks = _old_blocks(_current_section(text))
    for o in outcomes:
        if o.ok:
            blocks[o.step.block_key] = step_block(o, card, when)
    order = [o.step.block_key for o in outcomes]
    keys = [k for k in order if k in blocks] + [k for k in blocks if k not in order]
    return "\n\n".join([HEADING, *(blocks[k] for k in keys)])


def rewrite_section(text: str, section: str) -> str:
    """`text` with what lies between BEGIN and END replaced (both appended when missing)."""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        head, rest = text.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_results(docs: Path, outcomes: list[Outcome], card: str) -> bool:
    """Rewrite `docs` atomically with the passed steps' blocks; False (file untouched) when none passed."""
    if not any(o.ok for o in outcomes):
        return False
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    old = docs.read_text(encoding="utf-8") if docs.is_file() else ""
    write_text_atomic(docs, rewrite_section(old, merged_section(old, outcomes, card, when)))
    return True


# ---------------------------------------------------------------- the command

def summary(outcomes: list[Outcome], card: str, seconds: float) -> str:
    lines = [f"\ngpu check ({card}), {seconds:.0f} s:"]
    for o in outcomes:
        mark = {"passed": "PASS", "skipped": "SKIP", "FAILED": "FAIL"}[o.status]
        lines.append(f"  {mark}  {o.step.name} ({o.seconds:.0f} s){' (optional)' if o.step.optional else ''}")
    return "\n".join(lines)


def required_passed(outcomes: list[Outcome]) -> bool:
    return all(o.ok for o in outcomes if not o.step.optional)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="CPU: tiny sizes, one run each (about a minute)")
    parser.add_argument("--plan", action="store_true", help="print the steps and their limits, run nothing")
    parser.add_argument("--docs", help="markdown file for the passed steps' results (default: none written; "
                                       "scripts/gpu_check.sh passes docs/benchmarks.md without --quick)")
    parser.add_argument("--cuda-tests", type=Path, help="the cuda test file the first step runs (needed to "
                                                        "run; scripts/gpu_check.sh passes tests/test_cuda.py)")
    parser.add_argument("--data-config", type=Path,
                        help="training yml the data loader step times (default: the package defaults; "
                             "scripts/gpu_check.sh passes Deblurring/training.yml, Denoising/ with --quick)")
    parser.add_argument("--budget", type=float, default=0.0,
                        help=f"seconds for the whole check (default {CUDA_BUDGET_S} on CUDA, CPU "
                             f"{CPU_BUDGETS_S[True]} quick / {CPU_BUDGETS_S[False]} full); later steps skipped")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = plan(args.device, args.quick, args.cuda_tests, args.data_config)
    budget = args.budget or default_budget(args.device, args.quick)
    print(describe_plan(steps, budget), flush=True)
    if args.plan:
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU; use --device cpu --quick to check this machine",
              file=sys.stderr)
        return 2
    if args.cuda_tests is None or not args.cuda_tests.is_file():
        print(f"error: --cuda-tests {args.cuda_tests or '(not given)'}: give the cuda test file, e.g. "
              f"tests/test_cuda.py of the checkout (scripts/gpu_check.sh does)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    outcomes = [run_step(step, budget - (time.perf_counter() - start)) for step in steps]
    card = card_name(args.device)
    docs = Path(args.docs) if args.docs else None
    if docs is not None:
        written = write_results(docs, outcomes, card)
        print(f"passed steps written to {docs}" if written else f"no step passed: {docs} unchanged")
    print(summary(outcomes, card, time.perf_counter() - start))
    return 0 if required_passed(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
