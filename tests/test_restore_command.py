"""`python -m dgunet restore`: known-operator and blind models on files and folders of any size,
gray inputs, a bad file among good ones, and one-line errors for impossible options."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from _engine_helpers import REPO, crops, env_one_thread, write_rgb

from dgunet import physics
from dgunet.config import load_config
from dgunet.data.io import read_image
from dgunet.models import build_model
from dgunet.restore_command import Degradation, operator

WIDTHS = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


CONFIGS = {"deblurring": "Deblurring/training_nonblind.yml", "sr": "Super_Resolution/training.yml",
           "denoising": "Denoising/training_gaussian.yml", "deraining": "Deraining/training.yml"}


def save_checkpoint(path, task: str, gradient: str, opts: list[str] = ()) -> torch.nn.Module:
    """A random-weight checkpoint in the engine's format (state dict + the task's training config)."""
    torch.manual_seed(0)
    extra = {"gradient": gradient} if gradient != "learned" else {}
    model = build_model(task, "DGUNet", **WIDTHS, **extra).eval()
    cfg = load_config(REPO / CONFIGS[task], ["MODEL.GRADIENT", gradient, *opts])
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, path)
    return model


def restore(args: list[str], cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgunet", "restore", *args], cwd=cwd,
                          env={**env_one_thread(), **env}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def blur_case(tmp_path):
    kernel = np.zeros((9, 9))
    kernel[4, 1:8] = 1 / 7  # a horizontal motion
    np.save(tmp_path / "k.npy", kernel)
    img = crops(1, 45, seed=4)[0][:, :37]  # 45x37: no multiple of 8
    write_rgb(tmp_path / "in" / "photo.png", img)
    return tmp_path, kernel


def test_known_deblurring_restores_any_size_with_the_model_given_the_operator(blur_case):
    tmp, kernel = blur_case
    model = save_checkpoint(tmp / "w.pth", "deblurring", "known")
    out = restore([str(tmp / "in"), "--out", str(tmp / "out"), "--task", "deblurring", "--kernel",
                   str(tmp / "k.npy"), "--sigma", "0.01", "--weights", str(tmp / "w.pth")], tmp)
    assert out.returncode == 0, out.stderr
    restored = read_image(tmp / "out" / "photo.png")
    assert restored.shape == (3, 45, 37)
    # At a size the network takes as it is, the output is the model's, given the circular Blur.
    write_rgb(tmp / "even" / "photo.png", crops(1, 48, seed=4)[0][:, :40])
    out = restore([str(tmp / "even"), "--out", str(tmp / "out_even"), "--task", "deblurring", "--kernel",
                   str(tmp / "k.npy"), "--sigma", "0.01", "--weights", str(tmp / "w.pth")], tmp)
    assert out.returncode == 0, out.stderr
    y = read_image(tmp / "even" / "photo.png")[None]
    op = operator(Degradation("deblurring", kernel, 0.01, None), None)
    with torch.no_grad():
        expected = model(y, physics=op)[0].clamp(0, 1)
    assert (read_image(tmp / "out_even" / "photo.png") - expected[0]).abs().max() <= 1 / 255 + 1e-6


def test_sr_output_is_scale_times_the_input_and_the_scale_must_match_the_weights(tmp_path):
    save_checkpoint(tmp_path / "sr.pth", "sr", "known", ["DEGRADE.SCALE", "3", "TRAIN.PATCH_SIZE", "48",
                                                          "VAL.CROP", "48"])
    write_rgb(tmp_path / "lr.png", crops(1, 13, seed=5)[0])
    ok = restore([str(tmp_path / "lr.png"), "--out", str(tmp_path / "o"), "--task", "sr",
                  "--weights", str(tmp_path / "sr.pth")], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert cv2.imread(str(tmp_path / "o" / "lr.png")).shape == (39, 39, 3)
    # The SR recipe projects onto A x = y; noisy inputs turn that off (with a note), not fail.
    noisy = restore([str(tmp_path / "lr.png"), "--out", str(tmp_path / "n"), "--task", "sr", "--sigma", "0.01",
                     "--weights", str(tmp_path / "sr.pth")], tmp_path)
    assert noisy.returncode == 0 and "not projected onto A x = y" in noisy.stderr, noisy.stderr
    assert cv2.imread(str(tmp_path / "n" / "lr.png")).shape == (39, 39, 3)
    bad = restore([str(tmp_path / "lr.png"), "--out", str(tmp_path / "o"), "--task", "sr", "--scale", "2",
                   "--weights", str(tmp_path / "sr.pth")], tmp_path)
    assert bad.returncode == 2 and "trained for x3" in bad.stderr and "not x2" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_folder_with_an_unreadable_file_restores_the_others_and_names_it(tmp_path):
    save_checkpoint(tmp_path / "w.pth", "denoising", "known")
    for i, img in enumerate(crops(2, 24, seed=6)):
        write_rgb(tmp_path / "in" / f"good{i}.png", img)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    gray = cv2.cvtColor(crops(1, 20, seed=7)[0], cv2.COLOR_RGB2GRAY)
    assert cv2.imwrite(str(tmp_path / "in" / "gray.png"), gray)
    out = restore([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--task", "denoising", "--sigma",
                   "0.05", "--weights", str(tmp_path / "w.pth"), "--tile", "16", "--overlap", "4"], tmp_path)
    assert out.returncode == 1
    assert "broken.png" in out.stderr and "restored 3 of 4" in out.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good0.png", "good1.png", "gray.png"]
    assert cv2.imread(str(tmp_path / "o" / "gray.png"), cv2.IMREAD_UNCHANGED).shape == (20, 20)


def test_out_names_the_png_for_one_input_file_and_a_folder_otherwise(tmp_path):
    save_checkpoint(tmp_path / "w.pth", "denoising", "known")
    write_rgb(tmp_path / "noisy.png", crops(1, 24, seed=9)[0])
    common = ["--task", "denoising", "--sigma", "0.05", "--weights", str(tmp_path / "w.pth")]
    out = restore([str(tmp_path / "noisy.png"), "--out", str(tmp_path / "restored.png"), *common], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "restored.png").is_file()
    assert cv2.imread(str(tmp_path / "restored.png")).shape == (24, 24, 3)
    # A file name takes one image, and a PNG only; the refusal comes before anything is written.
    write_rgb(tmp_path / "two" / "a.png", crops(1, 16, seed=1)[0])
    write_rgb(tmp_path / "two" / "b.png", crops(1, 16, seed=2)[0])
    for inputs, name, message in [([str(tmp_path / "two")], "both.png", "give a folder for --out"),
                                  ([str(tmp_path / "noisy.png")], "restored.jpg", "written as PNG")]:
        bad = restore([*inputs, "--out", str(tmp_path / name), *common], tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / name).exists()


def test_blind_model_restores_with_tiles(tmp_path):
    save_checkpoint(tmp_path / "w.pth", "deraining", "learned")
    write_rgb(tmp_path / "rain.png", crops(1, 40, seed=8)[0])
    out = restore([str(tmp_path / "rain.png"), "--out", str(tmp_path / "o"), "--task", "deraining",
                   "--weights", str(tmp_path / "w.pth"), "--tile", "24", "--overlap", "8"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert cv2.imread(str(tmp_path / "o" / "rain.png")).shape == (40, 40, 3)


@pytest.mark.parametrize("args, message", [
    (["--task", "deblurring", "--kernel", "KERNEL_NOT_A_KERNEL"], "kernel file"),
    (["--task", "sr", "--scale", "5"], "supports 2, 3, 4"),
    (["--task", "denoising", "--sigma", "3"], "noise std on [0, 1]"),
    (["--task", "deraining", "--tile", "30"], "multiple of 8"),
    (["--task", "deblurring", "--kernel", "KERNEL", "--tile", "64"], "acts on the whole image"),
    (["--task", "deraining", "--device", "cuda:7"], "--device cuda:7"),
    (["--task", "deraining"], "pass --weights"),
    (["--task", "sr", "--scale", "2"], "no shipped model for sr x2"),
    (["--task", "deraining", "--tile", "32", "--overlap", "32"], "overlap < tile"),
    (["--task", "deblurring", "--kernel", "KERNEL", "--weights", "MISSING.pth"], "MISSING.pth"),
])
def test_impossible_options_are_one_line_errors(tmp_path, args, message):
    write_rgb(tmp_path / "a.png", crops(1, 24)[0])
    np.save(tmp_path / "k.npy", np.ones((3, 3)) / 9)
    np.save(tmp_path / "bad.npy", np.ones((3, 3, 3)))
    names = {"KERNEL_NOT_A_KERNEL": str(tmp_path / "bad.npy"), "KERNEL": str(tmp_path / "k.npy")}
    args = [names.get(a, a) for a in args]
    out = restore([str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), *args], tmp_path,
                  DGUNET_PRETRAINED=str(tmp_path / "nothing_shipped"))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "o").exists()


def test_the_operator_carries_sigma_for_the_model():
    op = operator(Degradation("denoising", None, 0.1, None), None)
    assert isinstance(op, physics.Identity) and float(op.noise_model.sigma) == pytest.approx(0.1)


def test_shipped_models_are_found_by_task_checked_by_sha256_and_used_without_weights(tmp_path):
    from dgunet.pretrained import export, find, load_pretrained, read_manifest, write_manifest

    shipped = tmp_path / "pretrained"
    model = save_checkpoint(tmp_path / "run.pth", "denoising", "known")
    export(tmp_path / "run.pth", shipped / "denoising_gaussian.pth")
    write_manifest({"denoising-gaussian": {"file": "denoising_gaussian.pth", "task": "denoising"}}, shipped)
    assert read_manifest(shipped)["denoising-gaussian"].info["bytes"] < 10 * 2**20
    loaded = load_pretrained("denoising", folder=shipped)
    pairs = zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert find("denoising-gaussian", folder=shipped).task == "denoising"
    write_rgb(tmp_path / "n.png", crops(1, 24, seed=9)[0])
    args = [str(tmp_path / "n.png"), "--out", str(tmp_path / "o"), "--task", "denoising", "--sigma", "0.1"]
    out = restore(args, tmp_path, DGUNET_PRETRAINED=str(shipped))
    assert out.returncode == 0, out.stderr
    with open(shipped / "denoising_gaussian.pth", "ab") as f:  # a changed file is refused, not used
        f.write(b"0")
    args = [str(tmp_path / "n.png"), "--out", str(tmp_path / "o"), "--task", "denoising", "--sigma", "0.1"]
    out = restore(args, tmp_path, DGUNET_PRETRAINED=str(shipped))
    assert out.returncode == 2 and "sha256" in out.stderr
