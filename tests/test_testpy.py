"""Every task's test.py end to end on tiny synthetic data laid out like the real test sets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from _testpy_data import (
    make_cs,
    make_dnd,
    make_paired,
    make_sidd,
    run_script,
    tiny_checkpoint,
    write_mat,
)
from skimage.metrics import structural_similarity

from dgunet.evaluate import evaluate_folders
from dgunet.models import build_model
from dgunet.testrun import main
from dgunet.testrun.cs import merge_tiles, pad_for_tiles, split_tiles
from dgunet.testrun.matfiles import load_mat_variable, savemat_atomic

DND_BOXES = [np.array([[1, 1, 32, 32], [5, 9, 36, 48]]), np.array([[10, 20, 41, 51], [39, 59, 70, 90]])]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {
        "deblurring": tiny_checkpoint(root / "deblur.pth", "deblurring"),
        "deraining_plus": tiny_checkpoint(root / "derain_plus.pth", "deraining", "DGUNet_plus"),
        "denoising": tiny_checkpoint(root / "denoise.pth", "denoising"),
        "cs25": tiny_checkpoint(root / "cs25.pkl", "cs", cs_ratio=25, wrap=False),
    }


def _no_temp_files(folder: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in folder.rglob("*"))


def _png_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.dtype == np.uint8, path
    return img.shape[:2]


def identity_restore(model, images, options):
    """Stands in for the network where a test checks where data goes, not what the model does."""
    return images.to(torch.float32)


# ---------------------------------------------------------------- image folders

@pytest.mark.slow
def test_deblurring_test_py_restores_scores_and_names_like_inputs(tmp_path, weights):
    data, out = tmp_path / "Datasets", tmp_path / "results"
    gopro = make_paired(data / "GoPro", [(45, 61), (40, 52)])
    make_paired(data / "test" / "RealBlur_J", [(64, 72)])  # the `data check` layout works too
    proc = run_script(["Deblurring/test.py", "--weights", str(weights["deblurring"]),
                       "--input_dir", str(data), "--result_dir", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "widths inferred from the checkpoint" in proc.stdout
    assert "HIDE: not found" in proc.stdout
    for stem, img in gopro.items():
        assert _png_size(out / "GoPro" / f"{stem}.png") == img.shape[:2]
    scores = json.loads((out / "GoPro" / "scores.json").read_text())
    again = evaluate_folders("gopro", out / "GoPro", data / "GoPro" / "target")
    assert scores["protocol"] == "gopro" and math.isclose(scores["psnr"], again.psnr)
    assert f"mean PSNR {again.psnr:.4f} dB" in proc.stdout
    assert json.loads((out / "RealBlur_J" / "scores.json").read_text())["protocol"] == "realblur"
    assert _no_temp_files(out)


@pytest.mark.slow
def test_deraining_test_py_infers_the_plus_arch_and_runs_one_dataset(tmp_path, weights):
    data, out = tmp_path / "Datasets", tmp_path / "results"
    make_paired(data / "Rain100L", [(45, 61)])
    make_paired(data / "Test100", [(33, 41)], target=False)
    proc = run_script(["Deraining/test.py", "--weights", str(weights["deraining_plus"]),
                       "--input_dir", str(data), "--result_dir", str(out), "--dataset", "rain100l"])
    assert proc.returncode == 0, proc.stderr
    assert "DGUNet+ for deraining" in proc.stdout
    assert (out / "Rain100L" / "img_000.png").is_file() and not (out / "Test100").exists()
    assert json.loads((out / "Rain100L" / "scores.json").read_text())["protocol"] == "deraining"


# ---------------------------------------------------------------- denoising

@pytest.mark.slow
def test_denoising_test_py_sidd_v73_with_self_ensemble_and_dnd(tmp_path, weights):
    data, out = tmp_path / "Datasets", tmp_path / "results"
    noisy, _ = make_sidd(data / "SIDD", "v73")
    make_dnd(data / "DND", DND_BOXES)
    proc = run_script(["Denoising/test.py", "--weights", str(weights["denoising"]),
                       "--input_dir", str(data), "--result_dir", str(out)])  # x8 on by default
    assert proc.returncode == 0, proc.stderr
    denoised = scipy.io.loadmat(out / "SIDD" / "Idenoised.mat")["Idenoised"]
    assert denoised.shape == noisy.shape and denoised.dtype == np.float32
    assert 0 <= denoised.min() and denoised.max() <= 1
    png = cv2.imread(str(out / "SIDD" / "0002_01.png"))[:, :, ::-1]
    np.testing.assert_array_equal(png, np.rint(denoised[1, 0] * np.float32(255)).astype(np.uint8))
    names = [s["name"] for s in json.loads((out / "SIDD" / "scores.json").read_text())["images"]]
    assert names == ["0001_01", "0001_02", "0002_01", "0002_02"]
    assert "submit" in proc.stdout and (out / "DND" / "bundled" / "0002.mat").is_file()


@pytest.mark.parametrize("fmt", ["v73", "v5"])
def test_sidd_blocks_keep_their_place_in_both_mat_formats(tmp_path, weights, monkeypatch, fmt):
    monkeypatch.setattr("dgunet.testrun.sidd.restore_images", identity_restore)
    data, out = tmp_path / "data", tmp_path / "out"
    noisy, gt = make_sidd(data / "SIDD", fmt)
    dtype = "uint8" if fmt == "v5" else "float32"
    argv = ["--weights", str(weights["denoising"]), "--input_dir", str(data), "--result_dir", str(out),
            "--dataset", "SIDD", "--no-self-ensemble", "--sidd-mat-dtype", dtype]
    assert main("denoising", argv) == 0
    denoised = scipy.io.loadmat(out / "SIDD" / "Idenoised.mat")["Idenoised"]
    expected = noisy if dtype == "uint8" else noisy.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(denoised, expected)  # identity model: output = input, same axes
    png = cv2.imread(str(out / "SIDD" / "0001_02.png"))[:, :, ::-1]
    np.testing.assert_array_equal(png, noisy[0, 1])
    block = json.loads((out / "SIDD" / "scores.json").read_text())["images"][2]
    diff = noisy[1, 0].astype(np.float64) - gt[1, 0]
    assert block["name"] == "0002_01"
    assert math.isclose(block["psnr"], 10 * math.log10(255**2 / np.mean(diff**2)), rel_tol=1e-12)


def test_dnd_submission_holds_the_boxed_crops(tmp_path, weights, monkeypatch):
    monkeypatch.setattr("dgunet.testrun.dnd.restore_images", identity_restore)
    data, out = tmp_path / "data", tmp_path / "out"
    images = make_dnd(data / "DND", DND_BOXES)
    argv = ["--weights", str(weights["denoising"]), "--input_dir", str(data), "--result_dir", str(out),
            "--no-self-ensemble"]
    assert main("denoising", argv) == 0  # SIDD absent: skipped
    for i, (image, boxes) in enumerate(zip(images, DND_BOXES, strict=True)):
        bundle = scipy.io.loadmat(out / "DND" / "bundled" / f"{i + 1:04d}.mat")
        assert bundle["Idenoised"].shape == (1, len(boxes))
        assert not bundle["israw"].item() and bundle["eval_version"].item() == "1.0"
        for k, (r1, c1, r2, c2) in enumerate(boxes):
            crop = bundle["Idenoised"][0, k]
            assert crop.dtype == np.float32
            np.testing.assert_array_equal(crop, image[r1 - 1:r2, c1 - 1:c2])
            single = scipy.io.loadmat(out / "DND" / "mat" / f"{i + 1:04d}_{k + 1:02d}.mat")
            np.testing.assert_array_equal(single["Idenoised_crop"], crop)
            assert _png_size(out / "DND" / f"{i + 1:04d}_{k + 1:02d}.png") == crop.shape[:2]


def test_mat_variables_read_the_same_from_hdf5_and_v5(tmp_path):
    array = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    for fmt in ("v73", "v5"):
        path = write_mat(tmp_path / f"{fmt}.mat", "A", array, fmt)
        np.testing.assert_array_equal(load_mat_variable(path, "A"), array)


# ---------------------------------------------------------------- compressive sensing

def test_cs_tiles_pad_by_a_full_tile_when_the_side_is_a_multiple():
    assert pad_for_tiles(np.ones((128, 128))).shape == (256, 256)
    assert pad_for_tiles(np.ones((33, 47))).shape == (128, 128)
    padded = pad_for_tiles(np.arange(33 * 300, dtype=float).reshape(33, 300))
    assert padded.shape == (128, 384) and padded[33:].sum() == 0 and padded[:, 300:].sum() == 0
    tiles = split_tiles(padded)
    assert tiles.shape == (3, 128, 128)
    np.testing.assert_array_equal(tiles[1], padded[:, 128:256])
    np.testing.assert_array_equal(merge_tiles(tiles, padded.shape), padded)


def _direct_cs_scores(model, path: Path) -> tuple[float, float]:
    """The published protocol written out with loops: Y, zero pad, 128-tiles, crop, clip, score."""
    y = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2YCrCb)[:, :, 0].astype(np.float64)
    h, w = y.shape
    padded = np.zeros((h + 128 - h % 128, w + 128 - w % 128))
    padded[:h, :w] = y
    out = np.zeros_like(padded)
    with torch.no_grad():
        for r in range(0, padded.shape[0], 128):
            for c in range(0, padded.shape[1], 128):
                tile = torch.from_numpy(padded[r:r + 128, c:c + 128] / 255.0).float()[None, None]
                out[r:r + 128, c:c + 128] = model(tile)[0][0, 0].numpy()
    rec = np.clip(out[:h, :w], 0, 1) * 255
    rmse = math.sqrt(np.mean((rec - y) ** 2))
    return 20 * math.log10(255 / rmse), structural_similarity(rec, y, data_range=255)


@pytest.mark.slow
def test_cs_test_py_follows_the_tile_protocol(tmp_path, weights):
    data, out = tmp_path / "Datasets", tmp_path / "results"
    make_cs(data / "Set11")
    proc = run_script(["Compressive_Sensing/test.py", "--weights", str(weights["cs25"]),
                       "--input_dir", str(data), "--result_dir", str(out), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr
    assert "cs_ratio=25" in proc.stdout
    model = build_model("cs", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, cs_ratio=25)
    model.load_state_dict(torch.load(weights["cs25"], weights_only=True))
    model.eval()
    scores = {s["name"]: s for s in json.loads((out / "Set11" / "scores.json").read_text())["images"]}
    for stem, suffix in (("odd", ".tif"), ("exact", ".png")):
        psnr, ssim = _direct_cs_scores(model, data / "Set11" / f"{stem}{suffix}")
        assert scores[stem]["psnr"] == pytest.approx(psnr, abs=1e-4)
        assert scores[stem]["ssim"] == pytest.approx(ssim, abs=1e-6)
    assert _png_size(out / "Set11" / "odd.png") == (33, 47)


# ---------------------------------------------------------------- bad input

def test_missing_dataset_names_the_path_and_layout(tmp_path, weights, capsys):
    make_paired(tmp_path / "GoPro", [(24, 24)])
    argv = ["--weights", str(weights["deblurring"]), "--input_dir", str(tmp_path),
            "--result_dir", str(tmp_path / "out"), "--dataset", "HIDE"]
    assert main("deblurring", argv) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "HIDE") in err and "input/" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_no_test_set_at_all_is_an_error(tmp_path, weights, capsys):
    argv = ["--weights", str(weights["deraining_plus"]), "--input_dir", str(tmp_path)]
    assert main("deraining", argv) == 2
    err = capsys.readouterr().err
    assert "no test set found" in err and "Rain100H" in err


def test_mat_without_the_variable_names_file_and_variable(tmp_path, weights, capsys):
    make_sidd(tmp_path / "SIDD", "v5", noisy_name="noisy")
    argv = ["--weights", str(weights["denoising"]), "--input_dir", str(tmp_path),
            "--result_dir", str(tmp_path / "out"), "--dataset", "SIDD", "--no-self-ensemble"]
    assert main("denoising", argv) == 2
    err = capsys.readouterr().err
    assert "ValidationNoisyBlocksSrgb.mat" in err and "'ValidationNoisyBlocksSrgb'" in err and "noisy" in err
    assert not (tmp_path / "out" / "SIDD" / "Idenoised.mat").exists()


def test_hdf5_mat_without_the_variable(tmp_path):
    path = write_mat(tmp_path / "x.mat", "other", np.zeros((2, 2)), "v73")
    with pytest.raises(Exception, match=r"x\.mat has no variable 'InoisySRGB'"):
        load_mat_variable(path, "InoisySRGB")


@pytest.mark.parametrize("which", ["cs", "deraining_published"])
def test_checkpoint_of_another_task_is_explained(tmp_path, weights, capsys, which):
    make_paired(tmp_path / "GoPro", [(24, 24)])
    if which == "cs":
        ckpt, expect = weights["cs25"], "compressive sensing"
    else:  # published deraining widths must not be taken for a custom deblurring model
        ckpt, expect = tmp_path / "derain.pth", "deraining"
        torch.save({"state_dict": build_model("deraining", "DGUNet").state_dict()}, ckpt)
    argv = ["--weights", str(ckpt), "--input_dir", str(tmp_path), "--result_dir", str(tmp_path / "out")]
    assert main("deblurring", argv) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and expect in err and "deblurring" in err
    assert not (tmp_path / "out").exists()


def test_cs_ratio_that_does_not_match_the_checkpoint(tmp_path, weights, capsys):
    make_cs(tmp_path / "Set11")
    argv = ["--weights", str(weights["cs25"]), "--input_dir", str(tmp_path), "--cs-ratio", "10"]
    assert main("cs", argv) == 2
    err = capsys.readouterr().err
    assert str(weights["cs25"]) in err and "25%" in err


def test_savemat_atomic_leaves_nothing_half_written(tmp_path, monkeypatch):
    def broken_savemat(file, variables):
        file.write(b"MATLAB 5.0 MAT-file, half")
        raise OSError("disk full")

    monkeypatch.setattr("dgunet.testrun.matfiles.scipy.io.savemat", broken_savemat)
    with pytest.raises(OSError):
        savemat_atomic(tmp_path / "Idenoised.mat", {"Idenoised": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_fast_flag_reaches_restore_and_keeps_results():
    from dgunet.testrun import options as options_module
    from dgunet.testrun.restoring import restore_images
    from dgunet.testrun.runner import build_parser

    args = build_parser("deraining").parse_args(["--weights", "w.pth", "--fast"])
    options = options_module.restore_options(args, "deraining")
    assert options.kwargs() == {"fast": True}
    torch.manual_seed(0)
    model = build_model("deraining", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4).eval()
    x = torch.rand(1, 3, 24, 40)
    faithful = restore_images(model, x, type(options)())
    torch.testing.assert_close(restore_images(model, x, options), faithful, atol=1e-4, rtol=0)
