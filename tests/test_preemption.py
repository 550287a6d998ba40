"""Preemption: mid-epoch snapshots, SIGTERM/SIGKILL at random steps, exact step-level --resume."""

from __future__ import annotations

import random
import re
import signal
import subprocess

import pytest
import torch
from _engine_helpers import (
    PYTHON,
    REPO,
    env_one_thread,
    free_port,
    make_task_data,
    metrics,
    small_opts,
    train_py,
)
from _preemption_helpers import (
    PREEMPT_OPTS,
    assert_bitwise_equal,
    final_state,
    preempt_config,
    run_with_sigterms,
    sigterm_inside_steps,
)

from dgunet.checkpoint import read_checkpoint
from dgunet.engine import train
from dgunet.engine.distributed import BatchPlan, GlobalBatchSampler
from dgunet.engine.snapshots import SNAPSHOT
from dgunet.engine.trainer import _snapshot_due
from dgunet.errors import CheckpointError

STEP_LINE = re.compile(r"^epoch (\d+) step (\d+)/(\d+) loss (\S+)$", re.M)
ROWS = ("epoch", "lr", "train_loss", "val_psnr", "val_psnrs", "best_psnr", "best_epoch", "steps")


def step_lines(text: str) -> list[tuple[str, ...]]:
    return STEP_LINE.findall(text)


def random_stops(total_steps: int, count: int = 3) -> tuple[int, list[int]]:
    """`count` distinct steps in 1..total_steps-1, from a fresh seed that failure messages name."""
    seed = random.SystemRandom().randrange(2**31)
    return seed, sorted(random.Random(seed).sample(range(1, total_steps), count))


def test_sampler_starting_at_a_step_yields_the_rest_of_the_epoch():
    plan = BatchPlan(batch=4, accum_steps=2, world_size=2)
    full = GlobalBatchSampler(24, plan, rank=1, seed=7)
    full.set_epoch(3)
    late = GlobalBatchSampler(24, plan, rank=1, seed=7)
    late.set_epoch(3, start_step=4)
    assert list(late) == list(full)[4 * 2:] and len(late) == (6 - 4) * 2
    late.set_epoch(4)  # a new epoch starts at its beginning again
    assert len(list(late)) == 6 * 2
    with pytest.raises(ValueError, match="start step"):
        late.set_epoch(3, start_step=7)


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.slow
def test_three_sigterms_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path, capsys, one_thread,
                                                                              accum):
    make_task_data(tmp_path, "deraining", n_train=12, n_val=1, size=24)  # batch 4: 3 steps per epoch
    extra = ["TRAIN.ACCUM_STEPS", str(accum)]
    straight = train(preempt_config(tmp_path, "straight", extra, batch=4, epochs=2))
    want_lines = step_lines(capsys.readouterr().out)

    seed, stops = random_stops(6)
    results = run_with_sigterms(
        lambda resume: preempt_config(tmp_path, "cut", extra, resume, batch=4, epochs=2), set(stops))
    out = capsys.readouterr().out
    why = f"SIGTERM inside steps {stops} (seed {seed}); log:\n{out[-3000:]}"
    assert [r.exit_code for r in results] == [143, 143, 143, 0], why
    # The step log continues at K+1 after each resume: no row repeated, none missing, same losses.
    assert step_lines(out) == want_lines, why
    assert_bitwise_equal(final_state(straight.out_dir), final_state(results[-1].out_dir), "model_latest")
    a, b = metrics(straight.out_dir), metrics(results[-1].out_dir)
    assert [[r.get(k) for k in ROWS] for r in a] == [[r.get(k) for k in ROWS] for r in b], why
    assert read_checkpoint(straight.out_dir / "model_best.pth")["best_psnr"] == \
        read_checkpoint(results[-1].out_dir / "model_best.pth")["best_psnr"]


def test_a_stop_mid_epoch_leaves_a_snapshot_and_keeps_model_latest_at_the_epoch(tmp_path, capsys, one_thread):
    make_task_data(tmp_path, "deraining", n_train=8, n_val=1, size=24)  # batch 2: 4 steps per epoch
    with sigterm_inside_steps({6}):
        stopped = train(preempt_config(tmp_path, "run"))
    out = capsys.readouterr().out
    assert stopped.exit_code == 143 and "stopped by signal 15 during epoch 2 after step 2/4" in out
    assert read_checkpoint(stopped.out_dir / "model_latest.pth")["epoch"] == 1  # the published format
    snap = read_checkpoint(stopped.out_dir / SNAPSHOT)  # weights_only loads it
    assert (snap["epoch"], snap["progress"]["epoch"], snap["progress"]["step"]) == (1, 2, 2)
    assert len(snap["progress"]["losses"]) == 2 and len(snap["progress"]["val_psnrs"]) == 1
    assert [r["epoch"] for r in metrics(stopped.out_dir)] == [1]

    # Another batch, width or data folder changes what step 2 means: refused, naming the change.
    refusals = {"OPTIM.BATCH_SIZE": ["OPTIM.BATCH_SIZE", "4"], "MODEL.N_FEAT": ["MODEL.N_FEAT", "12"],
                "DATA.TRAIN_DIR": ["DATA.TRAIN_DIR", "Datasets/other"]}
    (tmp_path / "Datasets" / "train").rename(tmp_path / "Datasets" / "other")
    (tmp_path / "Datasets" / "train").symlink_to(tmp_path / "Datasets" / "other")
    for key, change in refusals.items():
        with pytest.raises(CheckpointError, match=re.escape(key) + ".*->") as err:
            train(preempt_config(tmp_path, "run", change, resume=True))
        assert SNAPSHOT in str(err.value)
    # A changed lr or epoch count is allowed, with a warning; the run goes on from step 3.
    capsys.readouterr()
    resumed = train(preempt_config(tmp_path, "run", ["OPTIM.LR_INITIAL", "0.0001"], resume=True, epochs=2))
    out = capsys.readouterr().out
    assert resumed.exit_code == 0 and "changed recipe: OPTIM.LR_INITIAL" in out
    assert "changed recipe: OPTIM.NUM_EPOCHS: 3 -> 2" in out
    assert [(e, k) for e, k, _n, _l in step_lines(out)] == [("2", "3"), ("2", "4")]
    assert [r["epoch"] for r in metrics(resumed.out_dir)] == [1, 2]


@pytest.mark.slow
def test_two_gloo_processes_with_accumulation_resume_bitwise_after_three_sigterms(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=16, n_val=1, size=24)  # 2 steps per epoch, 3 epochs
    seed, stops = random_stops(6)
    worker = REPO / "tests" / "_preemption_ddp_worker.py"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(worker), str(tmp_path), str(tmp_path), ",".join(map(str, stops))]
    proc = subprocess.run(cmd, env=env_one_thread(), capture_output=True, text=True, timeout=300)
    why = f"SIGTERM on rank 0 inside steps {stops} (seed {seed}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    assert proc.returncode == 0, why
    for rank in (0, 1):  # rank 1 was never signalled, yet stopped at the same steps
        assert torch.load(tmp_path / f"codes_rank{rank}.pt", weights_only=True) == [143, 143, 143, 0], why
    straight_log, cut_log = proc.stdout.split("=== cut ===")
    assert step_lines(cut_log) == step_lines(straight_log) and len(step_lines(straight_log)) == 6, why
    runs = tmp_path / "checkpoints"
    assert_bitwise_equal(final_state(runs / "straight"), final_state(runs / "cut"), "model_latest")
    a, b = metrics(runs / "straight"), metrics(runs / "cut")
    assert [[r.get(k) for k in ROWS] for r in a] == [[r.get(k) for k in ROWS] for r in b], why


def train_py_args(task_dir, extra: list[str], resume: bool) -> list[str]:
    """train.py's command line for preempt_config(task_dir, "run", extra, resume, epochs=2)."""
    return [*(["--resume"] if resume else []), "--opts", *small_opts("deraining", task_dir, 2, 2),
            *PREEMPT_OPTS, "OUTPUT.NAME", "run", *extra]


def launch(cmd: list[str], task_dir) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=task_dir, env=env_one_thread(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_after(proc: subprocess.Popen, marker) -> str:
    """Read the child's output until a line matches `marker`, SIGKILL it, return what it printed."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker(line):
            proc.kill()
            break
    lines += proc.stdout.readlines()
    proc.wait(timeout=30)
    return "".join(lines)


def global_steps(text: str) -> list[int]:
    return [(int(e) - 1) * int(n) + int(k) for e, k, n, _loss in step_lines(text)]


@pytest.mark.slow
def test_sigkill_at_random_moments_and_mid_write_resumes_from_the_last_complete_snapshot(tmp_path, capsys,
                                                                                         one_thread):
    make_task_data(tmp_path, "deraining", n_train=8, n_val=1, size=24)  # 4 steps per epoch, 2 epochs
    extra, every = ["TRAIN.SNAPSHOT_EVERY_STEPS", "2"], 2
    straight = train(preempt_config(tmp_path, "straight", extra, epochs=2))
    want = global_steps(capsys.readouterr().out)
    run = tmp_path / "checkpoints" / "run"

    # 1. Killed while writing its 2nd snapshot (epoch 2, step 2): the 1st one (epoch 1) stays whole.
    worker = REPO / "tests" / "_preemption_kill_worker.py"
    log = kill_after(launch([PYTHON, str(worker), str(tmp_path), "2"], tmp_path), lambda s: "HALF-WRITTEN" in s)
    assert "HALF-WRITTEN" in log, log[-3000:]
    assert list(run.glob(f".{SNAPSHOT}.*.tmp")), "the interrupted write left no temporary file"
    kept = read_checkpoint(run / SNAPSHOT)["progress"]
    assert (kept["epoch"], kept["step"]) == (1, 2), kept
    done = global_steps(log)

    # 2. Resumed by train.py, SIGKILLed after a random step line.
    seed = random.SystemRandom().randrange(2**31)
    kill_at = random.Random(seed).randrange(done[-1] - every + 1, len(want))  # leave work for step 3
    cmd = [PYTHON, str(train_py("deraining")), *train_py_args(tmp_path, extra, resume=True)]
    log2 = kill_after(launch(cmd, tmp_path), lambda s: any(g >= kill_at for g in global_steps(s)))
    steps2 = global_steps(log2)
    why = f"kill after global step {kill_at} (seed {seed}):\n{log2[-3000:]}"
    assert not list(run.glob(".*.tmp")), "a resume must clear the temporaries of a killed write"
    assert steps2[0] > done[-1] - every, why  # at most one snapshot interval redone

    # 3. Resumed to the end: the same run as without kills, every file readable.
    resumed = train(preempt_config(tmp_path, "run", extra, resume=True, epochs=2))
    steps3 = global_steps(capsys.readouterr().out)
    assert resumed.exit_code == 0 and steps3[-1] == len(want), why
    assert steps3[0] > (steps2[-1] if steps2 else done[-1]) - every, why
    assert_bitwise_equal(final_state(straight.out_dir), final_state(run), "model_latest")
    for path in run.glob("*.pth"):
        read_checkpoint(path)
    assert [r["epoch"] for r in metrics(run)] == [1, 2]
    assert [r["train_loss"] for r in metrics(run)] == [r["train_loss"] for r in metrics(straight.out_dir)]


GRACE_SCRIPT = """
import os, signal, sys, time
from dgunet.engine.signals import StopSignal
with StopSignal(float(sys.argv[1])) as stop:
    stop.kept = "snapshot.pth (epoch 2, step 7)"
    os.kill(os.getpid(), signal.SIGTERM)
    print("flag", stop.requested, flush=True)
    if sys.argv[2] == "twice":
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # a step or a snapshot that does not end
"""


@pytest.mark.slow
def test_grace_period_exits_143_saying_what_was_kept_and_a_second_signal_kills_at_once(tmp_path):
    procs = {how: subprocess.Popen([PYTHON, "-c", GRACE_SCRIPT, grace, how], cwd=REPO, env=env_one_thread(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for how, grace in (("once", "0.5"), ("twice", "30"))}
    out = {how: p.communicate(timeout=50)[0] for how, p in procs.items()}
    assert procs["once"].returncode == 143, out["once"]
    assert "flag True" in out["once"] and "grace period of 0.5 s" in out["once"]
    assert "Kept on disk: snapshot.pth (epoch 2, step 7)" in out["once"]
    assert procs["twice"].returncode == -signal.SIGTERM, out["twice"]  # the default handler: killed


def test_snapshot_triggers_by_time_and_by_steps():
    cfg = preempt_config(REPO, "x", ["TRAIN.SNAPSHOT_MINUTES", "15", "TRAIN.SNAPSHOT_EVERY_STEPS", "0"])
    assert not _snapshot_due(cfg, 7, 60 * 15 - 1) and _snapshot_due(cfg, 7, 60 * 15)
    off = preempt_config(REPO, "x", ["TRAIN.SNAPSHOT_MINUTES", "0", "TRAIN.SNAPSHOT_EVERY_STEPS", "3"])
    assert [s for s in range(1, 10) if _snapshot_due(off, s, 1e9)] == [3, 6, 9]


def test_the_setup_fingerprint_covers_the_gradient_mode_and_the_synthetic_degradations():
    """A snapshot must not resume under another degradation: it would change the rest of the epoch's samples."""
    from dgunet.config import load_config
    from dgunet.engine.snapshots import fingerprint

    yml = REPO / "Deblurring" / "training_nonblind.yml"
    base = fingerprint(load_config(yml), 10)
    for key, value in (("DEGRADE.SIGMA_RANGE", "[0.0, 0.05]"), ("DEGRADE.KERNELS", "[motion]"),
                       ("MODEL.GRADIENT", "known+learned")):
        changed = fingerprint(load_config(yml, [key, value]), 10)
        assert [k for k in base if base[k] != changed[k]] == [key]
