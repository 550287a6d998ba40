"""The shipped-model pipeline: scripts/train_pretrained.py in its 3-step plumbing mode trains with
the real train.py, exports, lists (sha256, size, CPU, time) and scores; shipped files reproduce
the scores their manifest states."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from _engine_helpers import REPO, env_one_thread
from conftest import SCRIPT_TIMEOUT_S

from dgunet.pretrained import MAX_BYTES, load_pretrained, pretrained_dir, read_manifest

SCRIPT = REPO / "scripts" / "train_pretrained.py"
SHIPPED = read_manifest(pretrained_dir())
CHECKED_CASE = {"deblurring": "motion_03_noise1"}  # else the first case the manifest lists


def script():
    spec = importlib.util.spec_from_file_location("train_pretrained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path, *models: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "runs"), "--ship",
                           str(tmp_path / "ship"), "--plumbing", *extra, "--models", *models],
                          env=env_one_thread(), capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT_S)


@pytest.mark.slow
def test_plumbing_mode_trains_ships_and_scores_a_model(tmp_path):
    out = run_script(tmp_path, "denoising", extra=("--tune-head",))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    row = json.loads((tmp_path / "ship" / "manifest.json").read_text())["models"]["denoising"]
    assert 0 < row["bytes"] <= MAX_BYTES and len(row["sha256"]) == 64
    assert row["training"]["seconds"] > 0 and "flags" in row["training"]["cpu"]
    assert len(row["scores"]) == 1 and 10 < next(iter(row["scores"].values())) < 60
    assert not load_pretrained("denoising", folder=tmp_path / "ship").training
    assert row["head_tuning"]["batches"] == 2 and row["head_tuning"]["loss_last_pass"] > 0  # --tune-head
    assert (tmp_path / "runs" / "runs" / "denoising" / "model_head_tuned.pth").exists()
    # Rerunning is safe: a finished run is not trained again, only exported and scored again (untuned now).
    log = (tmp_path / "runs" / "denoising.log").read_text()
    again = run_script(tmp_path, "denoising")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "runs" / "denoising.log").read_text() == log
    # The learning curve of the run: the output, the stages and the baselines per noise level.
    curves = subprocess.run([sys.executable, str(REPO / "scripts" / "learning_curves.py"), "--runs",
                             str(tmp_path / "runs"), "--out", str(tmp_path / "curves"), "--figure",
                             str(tmp_path / "curves.png"), "--tune-head", "--tune-batches", "4"],
                            env=env_one_thread(),
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert curves.returncode == 0, curves.stderr[-2000:]
    curve = json.loads((tmp_path / "curves" / "curves.json").read_text())["denoising"]
    assert [p["epoch"] for p in curve["points"]] == [1]
    groups = ["sigma 15", "sigma 25", "sigma 50"]
    assert list(curve["points"][0]["final"]) == groups
    assert set(curve["baselines"]) == {"adagger", "hyperlaplacian", "nlm"}
    assert curve["start"] == "nlm"  # the recipe's MODEL.START, read back from the checkpoint
    assert load_pretrained("denoising", folder=tmp_path / "ship").start == "nlm"
    assert load_pretrained("denoising", folder=tmp_path / "ship").head == "stages"  # the recipe's MODEL.HEAD
    assert all(len(v) == 7 for v in curve["points"][0]["stages"].values())
    assert list(curve["points"][0]["margin"]) == groups  # output minus the best stage, with its error
    assert curve["points"][0]["stages"]["sigma 25"][-1] == curve["points"][0]["final"]["sigma 25"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    tuned = curve["points"][0]["tuned"]  # --tune-head: the same budget scored with its head tuned
    assert list(tuned["final"]) == groups and tuned["head_tuning"]["batches"] == 4
    assert "| DGUNet, head tuned, " in (tmp_path / "curves" / "curves.md").read_text()
    assert "| nlm (the model's start) |" in (tmp_path / "curves" / "curves.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED, reason="no model ships in pretrained/ yet")
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_load_strictly_and_reproduce_their_manifest_score(name):
    entry = SHIPPED[name]
    case = CHECKED_CASE.get(name, next(iter(entry.info["scores"])))
    module = script()
    model = load_pretrained(name)  # strict load, sha256 checked
    got = module.score(model, module.RECIPES[name], case_names=[case])[case]
    assert abs(got - entry.info["scores"][case]) <= 0.05, (name, case, got)


@pytest.mark.skipif("denoising" not in SHIPPED, reason="no denoising model ships in pretrained/ yet")
def test_known_test_protocol_without_weights_uses_the_shipped_model(tmp_path, capsys):
    from dgunet.data.io import save_png_atomic
    from dgunet.testrun import main as test_main

    photos = tmp_path / "in" / "Photos"
    photos.mkdir(parents=True)
    save_png_atomic(photos / "a.png", (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8))
    code = test_main("denoising", ["--protocol", "gaussian", "--input_dir", str(tmp_path / "in"),
                                   "--result_dir", str(tmp_path / "out"), "--dataset", "Photos"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"the shipped model {pretrained_dir() / SHIPPED['denoising'].file}" in out.out
    assert list((tmp_path / "out").rglob("*.png"))


def test_several_shipped_sr_models_ask_for_the_scale(tmp_path):
    from dgunet.errors import ConfigError
    from dgunet.shipped import find

    rows = {f"sr-x{s}": {"file": f"sr{s}.pth", "task": "sr", "scale": s} for s in (2, 4)}
    (tmp_path / "manifest.json").write_text(json.dumps({"models": rows}))
    assert find("sr", 4, tmp_path).name == "sr-x4"
    several = r"several shipped models for sr \(sr-x2, sr-x4\); pass --scale 2 or 4"
    with pytest.raises(ConfigError, match=several):
        find("sr", None, tmp_path)
    with pytest.raises(ConfigError, match="no shipped model for sr x3"):
        find("sr", 3, tmp_path)
