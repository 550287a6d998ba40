"""Training engine: every task trains through its real train.py, the published per-epoch lr,
exact resume after SIGTERM, checkpoints, records, bad input and non-finite losses.

Runs use the published training.yml of each task with tiny widths, 16-32 px patches and a few
photo crops (tests/_engine_helpers.py); they never touch the repository's Datasets folders.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess

import pytest
import torch
import yaml
from _engine_helpers import (
    PYTHON,
    REPO,
    env_one_thread,
    make_paired,
    make_task_data,
    metrics,
    run_train,
    small_opts,
    task_config,
    train_py,
)

from dgunet.checkpoint import load_weights, read_checkpoint
from dgunet.config import load_config
from dgunet.engine import main, train
from dgunet.engine import steps as steps_module
from dgunet.engine import trainer as trainer_module
from dgunet.errors import ConfigError
from dgunet.models import build_model

# PROTOCOLS.md: (lr, epochs, extra T_max epochs) of the three image recipes.
PUBLISHED = {"deblurring": (1e-4, 3000, 0), "deraining": (2e-4, 250, 0), "denoising": (1e-4, 80, 40)}
TINY_WIDTHS = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def published_lr(task: str, epoch: int) -> float:
    """PROTOCOLS.md: lr*e/3 for e = 1..3, then lr_min + (lr - lr_min)(1 + cos(pi (e-4) / T_max)) / 2."""
    lr, epochs, extra = PUBLISHED[task]
    if epoch <= 3:
        return lr * epoch / 3
    return 1e-6 + (lr - 1e-6) * (1 + math.cos(math.pi * (epoch - 4) / (epochs - 3 + extra))) / 2


def tiny_model(task: str):
    return build_model(task, "DGUNet", **TINY_WIDTHS, **({"cs_ratio": 10} if task == "cs" else {}))


# ---------------------------------------------------------------- recipes

def test_training_ymls_hold_the_published_recipes():
    expect = {  # task: batch, epochs, patch, lr, weight decay, val crop, T_max extra
        "Deblurring": (16, 3000, 256, 1e-4, 0.0, 256, 0),
        "Deraining": (16, 250, 256, 2e-4, 0.0, 128, 0),
        "Denoising": (16, 80, 128, 1e-4, 1e-8, 256, 40),
    }
    for folder, (batch, epochs, patch, lr, wd, crop, extra) in expect.items():
        c = load_config(REPO / folder / "training.yml")
        got = (c.OPTIM.BATCH_SIZE, c.OPTIM.NUM_EPOCHS, c.TRAIN.PATCH_SIZE, c.OPTIM.LR_INITIAL,
               c.OPTIM.WEIGHT_DECAY, c.VAL.CROP, c.OPTIM.T_MAX_EXTRA)
        assert got == (batch, epochs, patch, lr, wd, crop, extra), folder
        adam = (c.OPTIM.LR_MIN, c.OPTIM.WARMUP_EPOCHS, list(c.OPTIM.BETAS), c.OPTIM.EPS)
        assert adam == (1e-6, 3, [0.9, 0.999], 1e-8)
        assert (c.TRAIN.SEED, c.TRAIN.ACCUM_STEPS, c.LOSS.CHARBONNIER_EPS) == (1234, 1, 1e-3)
    deblur, derain, denoise = (load_config(REPO / f / "training.yml") for f in expect)
    assert deblur.DATA.SATURATION_AUG and not derain.DATA.SATURATION_AUG and not denoise.DATA.SATURATION_AUG
    assert deblur.LOSS.EDGE_WEIGHT == derain.LOSS.EDGE_WEIGHT == 0.05 and denoise.LOSS.CLAMP
    assert (deblur.VAL.EVERY, derain.VAL.EVERY) == (10, 5)
    val = denoise.VAL
    assert (list(val.EPOCHS), val.EVERY_EPOCH_FROM, val.PER_EPOCH) == ([1, 25, 45], 61, 3)
    assert denoise.DATA.MIXUP_FROM_EPOCH == 6 and deblur.DATA.MIXUP_FROM_EPOCH == 0
    cs1 = load_config(REPO / "Compressive_Sensing" / "training.yml")
    cs2 = load_config(REPO / "Compressive_Sensing" / "training_deblock.yml")
    assert (cs1.OPTIM.BATCH_SIZE, cs1.OPTIM.NUM_EPOCHS, cs1.TRAIN.PATCH_SIZE) == (32, 400, 32)
    assert (cs1.OPTIM.SCHEDULE, cs1.OPTIM.LR_INITIAL, cs1.DATA.CROPS_PER_IMAGE) == ("constant", 1e-4, 200)
    assert (cs2.OPTIM.BATCH_SIZE, cs2.OPTIM.NUM_EPOCHS, cs2.TRAIN.PATCH_SIZE) == (32, 100, 128)
    assert (cs2.TRAIN.PHASE, cs2.TRAIN.INIT_FROM) == (2, "")
    assert (list(cs2.OPTIM.MILESTONES), cs2.OPTIM.GAMMA) == ([60, 120, 180, 240], 0.5)


@pytest.mark.parametrize("folder", ["Deblurring", "Deraining", "Denoising"])
def test_scheduler_of_the_real_yml_gives_the_published_lr_for_every_epoch(folder):
    cfg = load_config(REPO / folder / "training.yml")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR_INITIAL)
    sched = steps_module.build_scheduler(cfg, opt)
    steps_module.initial_step(cfg, sched)
    for epoch in range(1, cfg.OPTIM.NUM_EPOCHS + 1):
        assert opt.param_groups[0]["lr"] == pytest.approx(published_lr(cfg.MODEL.TASK, epoch), rel=1e-9), epoch
        opt.step()
        sched.step()


def test_cs_deblock_schedule_is_multistep_from_epoch_one():
    cfg = load_config(REPO / "Compressive_Sensing" / "training_deblock.yml")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR_INITIAL)
    sched = steps_module.build_scheduler(cfg, opt)
    steps_module.initial_step(cfg, sched)
    lrs = []
    for _ in range(cfg.OPTIM.NUM_EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:60] == pytest.approx([1e-4] * 60) and lrs[60:] == pytest.approx([5e-5] * 40)


# ---------------------------------------------------------------- end to end through train.py

@pytest.mark.slow
@pytest.mark.parametrize("task", ["deblurring", "deraining", "denoising"])
def test_train_py_runs_the_published_recipe_and_logs_its_lr(tmp_path, task):
    """Real train.py and yml (epochs not reduced: STOP_AT_EPOCH cuts the run after 6 epochs)."""
    # Denoising validates 3x in epoch 1: give it 3 steps per epoch.
    make_task_data(tmp_path, task, n_train=6 if task == "denoising" else 2, n_val=2, size=24)
    extra = ["TRAIN.STOP_AT_EPOCH", "6", "TRAIN.SAVE_EVERY", "1", "TRAIN.KEEP_LAST_K", "2"]
    if task == "deblurring":
        extra += ["VAL.EVERY", "2"]  # published 10: validate inside these 6 epochs too
    proc = run_train(task, tmp_path, ["--opts", *small_opts(task, tmp_path, epochs=None), *extra])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for words in ("device cpu", "world size 1", "effective batch 2", "micro-batch 2", "accumulation 1"):
        assert words in proc.stdout

    run = tmp_path / "checkpoints" / "DGUNet"
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert r["lr"] == pytest.approx(published_lr(task, r["epoch"]), rel=1e-12)
        assert {"train_loss", "val_psnr", "seconds", "images_per_s"} <= set(r)
        assert math.isfinite(r["train_loss"])
    validated = [r["epoch"] for r in rows if r["val_psnr"] is not None]
    assert validated == {"deblurring": [2, 4, 6], "deraining": [5], "denoising": [1]}[task]
    if task == "denoising":  # 3x per epoch in epoch 1
        assert len(rows[0]["val_psnrs"]) == 3

    assert {"config.yml", "curves.png", "metrics.jsonl", "model_latest.pth", "model_best.pth",
            "model_epoch_5.pth", "model_epoch_6.pth"} <= {p.name for p in run.iterdir()}
    assert not (run / "model_epoch_4.pth").exists()  # KEEP_LAST_K 2
    latest = read_checkpoint(run / "model_latest.pth")
    keys = {"epoch", "state_dict", "optimizer", "scheduler", "best_psnr", "best_epoch", "rng", "config"}
    assert keys <= set(latest)
    assert latest["epoch"] == 6 and not any(k.startswith("module.") for k in latest["state_dict"])
    assert yaml.safe_load(latest["config"])["MODEL"]["TASK"] == task
    load_weights(tiny_model(task), run / "model_latest.pth")
    best = read_checkpoint(run / "model_best.pth")
    all_psnrs = [p for r in rows for p in r.get("val_psnrs", [r["val_psnr"]]) if p is not None]
    assert best["best_psnr"] == pytest.approx(max(all_psnrs))
    assert best["best_epoch"] == latest["best_epoch"]
    load_weights(tiny_model(task), run / "model_best.pth")


@pytest.mark.slow
def test_cs_phase_1_then_phase_2_from_its_best_weights(tmp_path, capsys):
    make_task_data(tmp_path, "cs", n_train=4, n_val=2, size=40)
    opts = small_opts("cs", tmp_path, epochs=2)
    one = run_train("cs", tmp_path, ["--cs-ratio", "10", "--opts", *opts])
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    phase1 = tmp_path / "checkpoints" / "DGUNet_ratio10_phase1"
    for name in ("net_best.pkl", "net_last.pkl", "model_latest.pth"):
        load_weights(tiny_model("cs"), phase1 / name)
    assert [r["epoch"] for r in metrics(phase1)] == [1, 2]
    assert all(r["val_psnr"] is not None for r in metrics(phase1))  # Set11 after every epoch

    # Phase 2 in-process through the same entry point (saves a process start).
    code = main("cs", REPO / "Compressive_Sensing" / "training.yml",
                ["--cs-ratio", "10", "--phase", "2", "--opts", *opts, "OPTIM.NUM_EPOCHS", "1",
                 "TRAIN.PATCH_SIZE", "64"])
    assert code == 0
    assert f"initialised from {phase1 / 'net_best.pkl'}" in capsys.readouterr().out
    phase2 = tmp_path / "checkpoints" / "DGUNet_ratio10_phase2"
    assert metrics(phase2)[0]["lr"] == 1e-4
    load_weights(tiny_model("cs"), phase2 / "net_last.pkl")


def test_cs_phase_2_without_phase_1_says_what_to_do(tmp_path, capsys):
    make_task_data(tmp_path, "cs", n_train=2, n_val=1, size=40)
    code = main("cs", REPO / "Compressive_Sensing" / "training.yml",
                ["--phase", "2", "--opts", *small_opts("cs", tmp_path, epochs=1)])
    err = capsys.readouterr().err
    assert code == 2 and "phase 1" in err and "net_best.pkl" in err and "--init-from" in err


# ---------------------------------------------------------------- interruption and resume

@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_logs_every_epoch_once(tmp_path):
    make_task_data(tmp_path, "deraining", n_train=4, n_val=2, size=24)
    opts = [*small_opts("deraining", tmp_path, epochs=None, batch=1), "TRAIN.STOP_AT_EPOCH", "4",
            "VAL.EVERY", "1", "TRAIN.PRINT_EVERY", "1"]
    cmd = [PYTHON, str(train_py("deraining")), "--opts", *opts]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env_one_thread(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:  # each step prints "epoch E step S/4 ..."
        lines.append(line)
        if line.startswith("epoch 2 step 1/4"):
            proc.send_signal(signal.SIGTERM)  # three steps of epoch 2 remain
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=60) == 143, "".join(lines)[-2000:]
    out = "".join(lines)
    assert "stopped by signal 15 during epoch 2" in out
    run = tmp_path / "checkpoints" / "DGUNet"
    assert [r["epoch"] for r in metrics(run)] == [1]
    assert read_checkpoint(run / "model_latest.pth")["epoch"] == 1

    again = run_train("deraining", tmp_path, ["--resume", "--opts", *opts])
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    want = [published_lr("deraining", e) for e in (1, 2, 3, 4)]
    assert [r["lr"] for r in rows] == pytest.approx(want, rel=1e-12)
    best = read_checkpoint(run / "model_best.pth")
    psnrs = [r["val_psnr"] for r in rows]
    assert best["best_psnr"] == pytest.approx(max(psnrs)) and best["best_epoch"] == 1 + psnrs.index(max(psnrs))
    assert read_checkpoint(run / "model_latest.pth")["epoch"] == 4


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """Deterministic mid-epoch SIGTERM (sent from inside step 1 of epoch 2): the resumed run
    re-runs epoch 2 from its start and ends with bit-identical weights and the same log."""
    make_task_data(tmp_path, "deraining", n_train=4, n_val=1, size=24)

    def cfg(name: str, resume: bool = False):
        args = ["--resume"] if resume else []
        return task_config("deraining", tmp_path, ["OUTPUT.NAME", name, "VAL.EVERY", "1"], epochs=3, args=args)

    straight = train(cfg("straight"))
    real_step, calls = trainer_module.train_step, []

    def signalling_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 2, step 1 of 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", signalling_step)
    stopped = train(cfg("interrupted"))
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    assert (stopped.interrupted_by, stopped.exit_code, stopped.last_epoch) == (signal.SIGTERM, 143, 1)
    resumed = train(cfg("interrupted", resume=True))
    assert resumed.interrupted_by is None and resumed.last_epoch == 3

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    a, b = metrics(straight.out_dir), metrics(resumed.out_dir)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for field in ("lr", "train_loss", "val_psnr", "best_psnr", "best_epoch"):
        assert [r[field] for r in a] == [r[field] for r in b], field

    # Starting a fresh run over a finished one is refused instead of overwriting it.
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg("interrupted"))


# ---------------------------------------------------------------- failures

def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch, capsys):
    make_task_data(tmp_path, "deblurring", n_train=4, n_val=1, size=24)
    real_loss, calls = steps_module.compute_loss, []

    def loss_going_nan(outputs, target, cfg):
        calls.append(1)
        loss = real_loss(outputs, target, cfg)
        return loss * math.nan if len(calls) == 3 else loss  # epoch 2, step 1

    monkeypatch.setattr(steps_module, "compute_loss", loss_going_nan)
    code = main("deblurring", REPO / "Deblurring" / "training.yml",
                ["--opts", *small_opts("deblurring", tmp_path, epochs=3), "TRAIN.SAVE_EVERY", "1"])
    err = capsys.readouterr().err
    run = tmp_path / "checkpoints" / "DGUNet"
    assert code == 2 and "loss became nan at epoch 2, step 1" in err and str(run / "model_latest.pth") in err
    latest, epoch1 = read_checkpoint(run / "model_latest.pth"), read_checkpoint(run / "model_epoch_1.pth")
    assert latest["epoch"] == 1 and not (run / "model_epoch_2.pth").exists()
    for key, value in latest["state_dict"].items():
        assert torch.isfinite(value).all() and torch.equal(value, epoch1["state_dict"][key]), key
    assert [r["epoch"] for r in metrics(run)] == [1]


def _run_main(task, tmp_path, capsys, extra=()):
    code = main(task, REPO / "Deraining" / "training.yml",
                ["--opts", *small_opts(task, tmp_path, epochs=1), "OPTIM.BATCH_SIZE", "1", *extra])
    return code, capsys.readouterr().err


def test_missing_or_empty_dataset_folder_is_named(tmp_path, capsys):
    code, err = _run_main("deraining", tmp_path, capsys)
    assert code == 2 and str(tmp_path / "Datasets" / "train" / "input") in err
    (tmp_path / "Datasets" / "train" / "input").mkdir(parents=True)
    (tmp_path / "Datasets" / "train" / "target").mkdir(parents=True)
    code, err = _run_main("deraining", tmp_path, capsys)
    assert code == 2 and "holds no images" in err and str(tmp_path / "Datasets" / "train") in err


def test_unpaired_names_are_listed(tmp_path, capsys):
    make_task_data(tmp_path, "deraining", n_train=2, n_val=1, size=24)
    train_dir = tmp_path / "Datasets" / "train"
    (train_dir / "target" / "img01.png").rename(train_dir / "target" / "other.png")
    code, err = _run_main("deraining", tmp_path, capsys)
    assert code == 2 and "do not pair" in err and "img01" in err and "other" in err


def test_unreadable_image_is_named(tmp_path, capsys):
    make_task_data(tmp_path, "deraining", n_train=2, n_val=1, size=24)
    bad = tmp_path / "Datasets" / "train" / "input" / "img01.png"
    bad.write_bytes(b"not a png at all")
    code, err = _run_main("deraining", tmp_path, capsys)
    assert code == 2 and str(bad) in err


def test_patch_larger_than_the_images_is_reflect_padded(tmp_path, capsys):
    make_paired(tmp_path / "Datasets" / "train", "deraining", 2, 24)
    make_paired(tmp_path / "Datasets" / "test" / "Rain100L", "deraining", 1, 24)
    code, err = _run_main("deraining", tmp_path, capsys, ["TRAIN.PATCH_SIZE", "32", "VAL.CROP", "32",
                                                             "VAL.EVERY", "1"])
    assert code == 0, err
    assert metrics(tmp_path / "checkpoints" / "DGUNet")[0]["val_psnr"] is not None


def test_config_errors_name_the_key(tmp_path):
    yml = REPO / "Deraining" / "training.yml"
    with pytest.raises(ConfigError, match="OPTIM.LR_INITAL.*did you mean OPTIM.LR_INITIAL"):
        load_config(yml, ["OPTIM.LR_INITAL", "1e-4"])
    with pytest.raises(ConfigError, match="TRAIN.TRAIN_DIR.*did you mean DATA.TRAIN_DIR"):
        load_config(yml, ["TRAIN.TRAIN_DIR", "Datasets/train"])
    with pytest.raises(ConfigError, match="TRAIN.PATCH_SIZE = 'big'"):
        load_config(yml, ["TRAIN.PATCH_SIZE", "big"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(yml, ["TRAIN.PATCH_SIZE", "100"])
    with pytest.raises(ConfigError, match="TRAIN.AMP"):
        load_config(yml, ["TRAIN.AMP", "fp8"])
    with pytest.raises(ConfigError, match="odd number"):
        load_config(yml, ["OPTIM.NUM_EPOCHS"])
    assert load_config(yml, ["OPTIM.LR_INITIAL", "1", "OPTIM.NUM_EPOCHS", "7.0"]).OPTIM.LR_INITIAL == 1.0


def test_mixed_precision_and_channels_last_train(tmp_path):
    """fp16 autocast with the gradient scaler and channels_last: the same loop, finite losses."""
    make_task_data(tmp_path, "deblurring", n_train=2, n_val=1, size=24)
    cfg = task_config("deblurring", tmp_path, ["TRAIN.CHANNELS_LAST", "true"], epochs=1, args=["--amp", "fp16"])
    result = train(cfg)
    assert result.last_epoch == 1 and math.isfinite(metrics(result.out_dir)[0]["train_loss"])
    latest = read_checkpoint(result.out_dir / "model_latest.pth")
    assert latest["scaler"] and "scale" in latest["scaler"]
    load_weights(tiny_model("deblurring"), latest)
