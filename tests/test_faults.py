"""Faults a new user meets, reproduced with real files and processes (issue 20).

Non-finite weights, two trainings on one folder, write failures (a file-size limit standing in
for a full disk, a folder that refuses files), resume under another setup, bad CLI values and
bad test sets: each ends in one line naming the file and the fix, and nothing half-written.
A read-only file system cannot be made here without mounting one (root in a container without
CAP_SYS_ADMIN): that case is not tested; the messages share one code path (dgunet/atomic.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time

import pytest
import torch
from _engine_helpers import (
    PYTHON,
    REPO,
    env_one_thread,
    make_task_data,
    metrics,
    run_train,
    small_opts,
    task_config,
    train_py,
)
from _fault_helpers import (
    DENIED_DIR,
    nan_checkpoint,
    one_error_line,
    refuses_writes,
    run_limited,
    run_module,
    temporaries,
)
from _testpy_data import make_paired, photo, tiny_checkpoint, write_image

from dgunet.atomic import writing
from dgunet.checkpoint import load_weights, read_checkpoint
from dgunet.engine import main, train
from dgunet.engine import steps as steps_module
from dgunet.engine import trainer as trainer_module
from dgunet.engine.lock import LOCK, RunLock
from dgunet.engine.snapshots import SNAPSHOT
from dgunet.errors import CheckpointError, ConfigError, StorageError
from dgunet.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
DEBLUR_YML = REPO / "Deblurring" / "training.yml"


def run_script(args: list[str], cwd) -> subprocess.CompletedProcess:
    """python ARGS in `cwd` (a task's test.py), one thread."""
    return subprocess.run([PYTHON, *args], cwd=cwd, env=env_one_thread(), capture_output=True, text=True,
                          timeout=180)


# ---------------------------------------------------------------- non-finite weights

def test_nan_weights_are_refused_by_test_py_naming_the_file_and_tensor(tmp_path):
    good = tiny_checkpoint(tmp_path / "good.pth", "deblurring")
    bad = tmp_path / "nan.pth"
    key = nan_checkpoint(bad, good)
    make_paired(tmp_path / "Datasets" / "GoPro", [(40, 48)])
    proc = run_script([str(REPO / "Deblurring" / "test.py"), "--weights", str(bad), "--input_dir",
                        "Datasets", "--result_dir", "results"], tmp_path)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and str(bad) in line and repr(key) in line and "non-finite" in line
    assert not (tmp_path / "results").exists()  # no black PNGs, no 12 dB score


def test_nan_init_from_and_nan_resume_are_refused_before_any_training(tmp_path, capsys):
    make_task_data(tmp_path, "deblurring", n_train=2, n_val=1, size=24)
    model = build_model("deblurring", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    state = model.state_dict()
    state["shallow_feat1.0.weight"][0, 0, 0, 0] = math.inf
    torch.save({"state_dict": state}, tmp_path / "inf.pth")
    opts = [*small_opts("deblurring", tmp_path, epochs=1), "TRAIN.INIT_FROM", str(tmp_path / "inf.pth")]
    code = main("deblurring", DEBLUR_YML, ["--opts", *opts])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "inf.pth") in err and "'shallow_feat1.0.weight'" in err
    run = tmp_path / "checkpoints" / "DGUNet"
    assert not (run / "model_latest.pth").exists(), "a NaN start must not become the run's 'last good state'"

    # A run whose model_latest.pth holds NaN (written by an older version): --resume refuses it.
    assert main("deblurring", DEBLUR_YML, ["--opts", *small_opts("deblurring", tmp_path, epochs=1)]) == 0
    nan_checkpoint(run / "model_latest.pth", run / "model_latest.pth", key_index=0)
    with pytest.raises(CheckpointError, match=re.escape(str(run / "model_latest.pth")) + ".*non-finite"):
        train(task_config("deblurring", tmp_path, epochs=2, args=["--resume"]))


def test_the_check_is_one_function_any_loader_can_call(tmp_path):
    model = build_model("deblurring", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[1] = -math.inf
    from dgunet.checkpoint import check_finite

    with pytest.raises(CheckpointError, match=re.escape(f"my.pth holds non-finite weights (NaN or inf, first "
                                                        f"in {name!r})")):
        check_finite(state, "my.pth")
    before = model.state_dict()[name].clone()
    with pytest.raises(CheckpointError, match="non-finite"):
        load_weights(model, state)
    assert torch.equal(model.state_dict()[name], before)  # refused before anything was copied in


def test_weights_that_turn_non_finite_are_never_saved_and_the_message_names_the_finite_file(
        tmp_path, monkeypatch, capsys):
    """A step with a finite loss whose update makes a weight NaN: the epoch's checkpoint is not
    written, and the message names model_latest.pth of the previous epoch, which is finite."""
    make_task_data(tmp_path, "deblurring", n_train=4, n_val=1, size=24)
    real_apply, calls = steps_module.apply_gradients, []

    def apply_then_poison(eng):
        real_apply(eng)
        calls.append(1)
        if len(calls) == 4:  # epoch 2, step 2 of 2: the epoch's end would save it
            with torch.no_grad():
                next(eng.raw.parameters()).view(-1)[0] = math.nan

    monkeypatch.setattr(steps_module, "apply_gradients", apply_then_poison)
    code = main("deblurring", DEBLUR_YML, ["--opts", *small_opts("deblurring", tmp_path, epochs=3)])
    err = capsys.readouterr().err
    run = tmp_path / "checkpoints" / "DGUNet"
    assert code == 2 and "became non-finite" in err
    assert f"The last finite state is {run / 'model_latest.pth'} (epoch 1)" in err
    latest = read_checkpoint(run / "model_latest.pth")
    assert latest["epoch"] == 1 and all(torch.isfinite(v).all() for v in latest["state_dict"].values())


# ---------------------------------------------------------------- one training per folder

def _read_until(proc: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    seen, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marker in line or time.monotonic() > deadline:
            break
    return "".join(seen)


@pytest.mark.slow
def test_a_second_training_and_a_resume_on_a_live_run_are_refused_then_a_stale_lock_is_taken_over(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=4, n_val=1, size=24)
    opts = [*small_opts("deraining", tmp_path, epochs=50, batch=1), "TRAIN.PRINT_EVERY", "1"]
    first = subprocess.Popen([PYTHON, str(train_py("deraining")), "--opts", *opts], cwd=tmp_path,
                             env=env_one_thread(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    run = tmp_path / "checkpoints" / "DGUNet"
    try:
        log = _read_until(first, "epoch 1 step 1/")
        assert "epoch 1 step 1/" in log, log[-2000:]
        holder = json.loads((run / LOCK).read_text())
        assert holder["pid"] == first.pid and holder["host"]

        second = run_train("deraining", tmp_path, ["--opts", *opts])
        line = one_error_line(second.stderr)
        assert second.returncode == 2 and f"PID {first.pid}" in line and "in use by another training" in line
        resumed = run_train("deraining", tmp_path, ["--resume", "--opts", *opts])
        assert resumed.returncode == 2 and f"PID {first.pid}" in one_error_line(resumed.stderr)
    finally:
        first.kill()  # SIGKILL: the lock file stays, its flock goes with the process
        first.wait(timeout=60)
    assert (run / LOCK).is_file()

    after = run_train("deraining", tmp_path, ["--resume", "--opts", *opts, "TRAIN.STOP_AT_EPOCH", "1"])
    assert after.returncode == 0, after.stderr[-3000:]
    assert f"took over the stale lock {run / LOCK} of PID {first.pid}" in after.stderr
    assert not (run / LOCK).exists(), "a training that ends removes its lock file"
    epochs = [r["epoch"] for r in metrics(run)]
    assert epochs == sorted(set(epochs)), "no epoch may be logged twice"


def test_the_lock_refuses_a_second_holder_in_the_same_process_and_frees_on_release(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(ConfigError, match=f"PID {os.getpid()} on "):
        second.acquire()
    first.release()
    assert not (tmp_path / LOCK).exists()
    second.acquire()  # free again: no stale warning, the file was removed
    assert second.held
    second.release()


# ---------------------------------------------------------------- write failures

@pytest.mark.slow
def test_training_that_hits_a_file_size_limit_ends_in_one_line_naming_the_file(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=2, n_val=1, size=24)
    cmd = [PYTHON, str(train_py("deraining")), "--opts", *small_opts("deraining", tmp_path, epochs=1)]
    proc = run_limited(cmd, tmp_path, file_size_limit=64 * 1024)  # config.yml fits, the checkpoint not
    line = one_error_line(proc.stderr)
    run = tmp_path / "checkpoints" / "DGUNet"
    assert proc.returncode == 2 and f"cannot write {run / 'model_latest.pth'}" in line
    assert "file-size limit" in line
    assert not temporaries(run) and not (run / "model_latest.pth").exists()
    assert not (run / LOCK).exists()


@pytest.mark.slow
def test_test_py_that_hits_a_file_size_limit_leaves_no_half_written_png(tmp_path):
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    make_paired(tmp_path / "Datasets" / "GoPro", [(40, 48)])
    cmd = [str(REPO / "Deblurring" / "test.py"), "--weights", str(weights), "--input_dir", "Datasets",
           "--result_dir", "results"]
    proc = run_limited([PYTHON, *cmd], tmp_path, file_size_limit=512)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "cannot write results/GoPro/img_000.png" in line
    assert not temporaries(tmp_path / "results") and not list((tmp_path / "results").rglob("*.png"))


def test_a_full_device_reports_the_free_space():
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    with pytest.raises(StorageError) as err, writing("/dev/full"), open("/dev/full", "w") as f:
        f.write("x" * 10)
        f.flush()
    want = (r"cannot write /dev/full: the disk is full \([\d.]+ \w+ free on the file system of /dev/full\); "
            r"free some space or write elsewhere\. Nothing was half-written")
    assert re.fullmatch(want, str(err.value)), str(err.value)


def test_evaluate_json_where_a_file_blocks_the_folder_is_one_line(tmp_path):
    folder = tmp_path / "pred"
    write_image(folder / "a.png", photo(16, 16))
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = run_module(["evaluate", "--protocol", "gopro", "--pred", str(folder), "--gt", str(folder),
                       "--json", str(tmp_path / "blocker" / "scores.json")], tmp_path)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and f"cannot write {tmp_path / 'blocker' / 'scores.json'}" in line


@pytest.mark.skipif(not refuses_writes(DENIED_DIR), reason=f"{DENIED_DIR} accepts files here")
@pytest.mark.parametrize("command", ["evaluate", "test", "train", "reproduce", "demo"])
def test_a_folder_that_refuses_files_is_one_line_in_every_command(tmp_path, command):
    denied = DENIED_DIR / "dgunet_results"
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    make_paired(tmp_path / "Datasets" / "GoPro", [(40, 48)])
    if command == "evaluate":
        gt = str(tmp_path / "Datasets" / "GoPro" / "target")
        proc = run_module(["evaluate", "--protocol", "gopro", "--pred", gt, "--gt", gt,
                           "--json", str(denied / "s.json")], tmp_path)
    elif command == "test":
        proc = run_script([str(REPO / "Deblurring" / "test.py"), "--weights", str(weights), "--input_dir",
                            "Datasets", "--result_dir", str(denied)], tmp_path)
    elif command == "reproduce":
        proc = run_module(["reproduce", "--task", "deblurring", "--weights", str(weights), "--data-root",
                           "Datasets", "--results", str(denied)], tmp_path)
    elif command == "demo":
        proc = run_module(["demo", "--out", str(denied)], tmp_path)
    else:
        make_task_data(tmp_path, "deraining", n_train=2, n_val=1, size=24)
        proc = run_train("deraining", tmp_path, ["--opts", *small_opts("deraining", tmp_path, epochs=1),
                                                 "OUTPUT.DIR", str(denied)])
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and f"cannot write {denied}" in line and "permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_a_folder_without_write_permission_is_one_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(StorageError, match=f"cannot write {folder / 'x.txt'}: permission denied"):
            from dgunet.atomic import write_text_atomic

            write_text_atomic(folder / "x.txt", "x")
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- resume under another setup

@pytest.mark.slow
def test_resume_at_an_epoch_boundary_refuses_another_data_folder_batch_width_or_degradation(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=4, n_val=1, size=24)
    first = train(task_config("deraining", tmp_path, ["TRAIN.STOP_AT_EPOCH", "1"], epochs=2))
    assert first.last_epoch == 1 and not (first.out_dir / SNAPSHOT).exists()
    (tmp_path / "Datasets" / "other").symlink_to(tmp_path / "Datasets" / "train")
    changes = {"DATA.TRAIN_DIR": ["DATA.TRAIN_DIR", "Datasets/other"],
               "OPTIM.BATCH_SIZE": ["OPTIM.BATCH_SIZE", "4"], "MODEL.N_FEAT": ["MODEL.N_FEAT", "12"],
               "DEGRADE.VAL_SIGMA": ["DEGRADE.VAL_SIGMA", "0.02"],
               "LOSS.STAGE_WEIGHTS": ["LOSS.STAGE_WEIGHTS", "[1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]"]}
    for key, change in changes.items():
        with pytest.raises(CheckpointError) as err:
            train(task_config("deraining", tmp_path, change, epochs=2, args=["--resume"]))
        message = str(err.value)
        assert re.search(re.escape(key) + r": .+ -> .+", message), message
        assert str(first.out_dir / "model_latest.pth") in message and "\n" not in message
    done = train(task_config("deraining", tmp_path, [], epochs=2, args=["--resume"]))
    assert done.last_epoch == 2 and [r["epoch"] for r in metrics(done.out_dir)] == [1, 2]


def test_a_finished_run_removes_its_snapshot(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=4, n_val=1, size=24)
    real_step, calls = trainer_module.train_step, []
    run = tmp_path / "checkpoints" / "DGUNet"

    def watching_step(*args, **kwargs):
        calls.append((run / SNAPSHOT).exists())
        return real_step(*args, **kwargs)

    trainer_module.train_step = watching_step
    try:
        result = train(task_config("deraining", tmp_path, ["TRAIN.SNAPSHOT_EVERY_STEPS", "1"], epochs=1))
    finally:
        trainer_module.train_step = real_step
    assert calls[-1], "the run wrote snapshots while it trained"
    assert result.last_epoch == 1 and not (run / SNAPSHOT).exists() and not (run / LOCK).exists()


# ---------------------------------------------------------------- command-line values

@pytest.mark.parametrize("flags, expected", [
    (["--tile", "30", "--overlap", "4"], "--tile 30 --overlap 4: tile=30 must be a positive multiple of 8"),
    (["--tile", "8", "--overlap", "4"], "smaller than 16"),
    (["--tile", "64", "--overlap", "64"], "--overlap 64 must be at least 0 and less than --tile 64"),
    (["--device", "nonsense"], "--device nonsense: not a device name"),
])
def test_bad_cli_values_are_one_line_errors(tmp_path, flags, expected):
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    make_paired(tmp_path / "Datasets" / "GoPro", [(40, 48)])
    proc = run_script([str(REPO / "Deblurring" / "test.py"), "--weights", str(weights), "--input_dir",
                        "Datasets", "--result_dir", "results", *flags], tmp_path)
    assert proc.returncode == 2 and expected in one_error_line(proc.stderr)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("flags", [["--overlap", "-1"], ["--workers", "-2"], ["--cs-ratio", "0"],
                                   ["--cs-ratio", "250"]])
def test_out_of_range_numbers_are_refused_by_the_parser(tmp_path, flags):
    script = "Compressive_Sensing" if flags[0] == "--cs-ratio" else "Deblurring"
    proc = run_script([str(REPO / script / "test.py"), "--weights", "w.pth", *flags], tmp_path)
    assert proc.returncode == 2 and f"argument {flags[0]}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_device_this_machine_lacks_is_one_line():
    from dgunet.testrun.options import pick_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"--device cuda:{count}: "):  # one past the last GPU, or none
        pick_device(f"cuda:{count}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="no usable mps device"):
            pick_device("mps")


# ---------------------------------------------------------------- test sets checked up front

def _bad_sets(root):
    make_paired(root / "GoPro", [(40, 48), (40, 44), (32, 36)])
    (root / "GoPro" / "target" / "img_001.png").unlink()  # an input without its target
    write_image(root / "GoPro" / "target" / "orphan.png", photo(40, 40))  # a target without input
    write_image(root / "GoPro" / "target" / "img_002.png", photo(32, 36, gray=True))  # gray vs RGB
    make_paired(root / "HIDE", [(40, 48)])
    (root / "HIDE" / "input" / "broken.png").write_bytes(b"\x89PNG not really")
    write_image(root / "HIDE" / "target" / "broken.png", photo(40, 48))


def test_bad_test_sets_are_reported_before_restoring_then_skip_bad_lists_them(tmp_path):
    weights = tiny_checkpoint(tmp_path / "w.pth", "deblurring")
    _bad_sets(tmp_path / "Datasets")
    cmd = [str(REPO / "Deblurring" / "test.py"), "--weights", str(weights), "--input_dir", "Datasets",
           "--result_dir", "results", "--dataset", "GoPro", "HIDE"]
    proc = run_script(cmd, tmp_path)
    assert proc.returncode == 2 and "4 file(s) of the test sets cannot be tested" in one_error_line(proc.stderr)
    for name in ("img_001.png has no target", "orphan.png has no input", "img_002.png has 1 channel(s)",
                 "broken.png cannot be read"):
        assert name in proc.stdout, proc.stdout
    assert not (tmp_path / "results").exists(), "nothing is restored before the report"

    proc = run_script([*cmd, "--skip-bad"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gopro = json.loads((tmp_path / "results" / "GoPro" / "scores.json").read_text())
    assert [i["name"] for i in gopro["images"]] == ["img_000"]
    assert sorted(s["name"] for s in gopro["skipped"]) == ["img_001", "img_002", "orphan"]
    assert "GoPro: 1 image in" in proc.stdout  # the log counts what was scored
    hide = json.loads((tmp_path / "results" / "HIDE" / "scores.json").read_text())
    assert [i["name"] for i in hide["images"]] == ["img_000"] and hide["skipped"][0]["name"] == "broken"


def test_an_unreadable_clean_image_of_a_known_operator_set_stops_before_any_case(tmp_path):
    write_image(tmp_path / "Datasets" / "Kodak24" / "fine.png", photo(64, 64))
    (tmp_path / "Datasets" / "Kodak24" / "junk.png").write_bytes(b"not an image")
    cmd = [str(REPO / "Denoising" / "test.py"), "--protocol", "gaussian", "--method", "wiener", "--input_dir",
           "Datasets", "--dataset", "Kodak24", "--result_dir", "results"]
    for extra in ([], ["--skip-bad"]):  # that runner takes no skip list: --skip-bad stops too, saying so
        proc = run_script([*cmd, *extra], tmp_path)
        assert proc.returncode == 2 and "junk.png cannot be read" in proc.stdout
        assert ("--skip-bad cannot leave files out" in one_error_line(proc.stderr)) == bool(extra)
        assert not (tmp_path / "results").exists()


def test_images_smaller_than_the_protocols_ssim_window_are_named_up_front(tmp_path):
    from dgunet.testrun.precheck import check_paired, smallest_side

    assert smallest_side("deraining") == 11 and smallest_side("cs") == 7  # the metrics' own limits
    make_paired(tmp_path / "Rain100L", [(10, 30), (24, 24)])
    bad = check_paired(tmp_path / "Rain100L", "deraining")
    assert [(b.stem, "smaller than the 11x11 pixels" in b.problem) for b in bad] == [("img_000", True)]


# ---------------------------------------------------------------- messages

class _Runs:
    def __reduce__(self):
        return (os.getpid, ())


def test_a_pickle_with_code_is_refused_saying_nothing_was_run(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Runs()}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "holds pickled code" in message and "refused, nothing was run" in message
    assert "torch.save(model.state_dict()" in message and "download" not in message


@pytest.mark.slow
def test_log_lines_and_errors_never_land_on_the_progress_bar_line(tmp_path):
    """stdout and stderr into one pipe, as a terminal shows them. The step lines go through
    tqdm.write (which clears the bar first); the error comes mid-epoch, while the bar is drawn
    (model_best.pth, with Adam's moments, passes the file-size limit that model_latest.pth of
    epoch 0 fits under), and the bar is closed before it is printed."""
    make_task_data(tmp_path, "deblurring", n_train=4, n_val=1, size=24)
    model = build_model("deblurring", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    weights_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    opts = [*small_opts("deblurring", tmp_path, epochs=1, batch=1), "VAL.EVERY", "1", "VAL.PER_EPOCH", "2",
            "TRAIN.PRINT_EVERY", "1"]
    cmd = [PYTHON, str(train_py("deblurring")), "--opts", *opts]

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * weights_bytes, 2 * weights_bytes))

    proc = subprocess.run(cmd, cwd=tmp_path, env=env_one_thread(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=180, preexec_fn=limit)
    out = proc.stdout
    assert proc.returncode == 2 and "error: cannot write" in out and "model_best.pth" in out, out[-3000:]
    assert "%|" in out, "the bar was drawn"
    lines = list(re.finditer(r"error: |epoch \d+ step \d+/\d+ loss", out))
    assert len(lines) >= 3
    for match in lines:
        line_start = max(out.rfind("\n", 0, match.start()), out.rfind("\r", 0, match.start())) + 1
        assert out[line_start:match.start()] == "", repr(out[max(0, match.start() - 200):match.end() + 40])
