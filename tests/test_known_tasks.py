"""Known-operator tasks end to end: SR x2 train.py + test.py on tiny widths, resume, fixtures that
regenerate to the same values, the baselines against their mathematics, bad-input messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _engine_helpers import REPO, TINY_MODEL, crops, env_one_thread, write_rgb

from dgunet import physics
from dgunet.baselines import bicubic_upsample, transfer_function, wiener_deconvolve
from dgunet.benchmarks import BENCH_DIR, benchmark_kernels, cases
from dgunet.benchmarks.generate import generate
from dgunet.checkpoint import read_checkpoint
from dgunet.metrics.protocols import get_protocol


def run(script: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env_one_thread(),
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- fixtures and baselines

def test_regenerating_the_benchmark_fixtures_gives_the_same_values(tmp_path):
    # The kernels come from NumPy's vectorised exp/sin/cos, whose last bit differs between CPUs
    # (AVX2 vs AVX-512 code paths: up to 1.3e-16 seen). Benchmarks read the stored files, so results
    # never depend on the CPU; a regeneration must match them to within rounding, and the
    # protocol (plain text) byte for byte.
    written = generate(tmp_path)
    assert len(written) == 13
    for path in written:
        stored = BENCH_DIR / path.relative_to(tmp_path)
        if path.suffix == ".npy":
            a, b = np.load(stored, allow_pickle=False), np.load(path, allow_pickle=False)
            assert a.dtype == b.dtype == np.float64 and a.shape == b.shape, f"{stored}: dtype or shape"
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-14, err_msg=f"{stored} vs its regeneration")
            assert (a == 0).tolist() == (b == 0).tolist(), f"{stored}: support differs"
        else:
            assert stored.read_bytes() == path.read_bytes(), f"{stored} differs from its regeneration"


def test_benchmark_kernels_are_normalised_and_at_most_25():
    kernels = benchmark_kernels()
    assert sum(k.startswith("motion") for k in kernels) == 8
    assert sum(k.startswith("gauss") for k in kernels) == 4
    for k in kernels.values():
        assert k.min() >= 0 and abs(k.sum() - 1) < 1e-12 and k.shape[0] <= 25
    assert len(cases("nonblind")) == 24 and [c.scale for c in cases("sr")] == [2, 3, 4]


def image(size: int = 48) -> torch.Tensor:
    return torch.from_numpy(crops(1, size, seed=3)[0]).permute(2, 0, 1)[None].double() / 255


def test_wiener_inverts_a_noiseless_circular_blur_and_beats_the_noisy_input():
    x = image()
    kernel = torch.from_numpy(benchmark_kernels()["motion_03"])
    blur = physics.Blur(kernel[None, None], padding="circular")
    y = blur.A(x)
    # The transfer function is that of physics.Blur's circular convolution, exactly.
    by_fft = torch.fft.irfft2(transfer_function(kernel[None, None], 48, 48) * torch.fft.rfft2(x), s=(48, 48))
    assert torch.allclose(by_fft, y, atol=1e-12)
    assert float((wiener_deconvolve(y, kernel, 0.0) - x).abs().mean()) < 0.01
    noisy = y + 0.03 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    err_in = float((noisy - x).pow(2).mean())
    err_out = float((wiener_deconvolve(noisy, kernel, 0.03).clamp(0, 1) - x).pow(2).mean())
    assert err_out < err_in
    assert torch.allclose(wiener_deconvolve(noisy, kernel, 0.03).mean(), noisy.mean(), atol=1e-9)  # mean kept


def test_bicubic_baseline_is_the_operators_upsampling():
    y = torch.rand(1, 3, 8, 10)
    assert torch.equal(bicubic_upsample(y, 3), physics.Downsample(3).A_dagger(y))
    assert bicubic_upsample(y, 4).shape == (1, 3, 32, 40)


def test_sr_protocol_crops_a_border_of_scale_pixels():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    pred = gt.copy()
    pred[:3] = 0  # damage only the top 3 rows
    assert get_protocol("sr_x3").score(pred, gt)[0] == float("inf")
    assert get_protocol("sr_x2").score(pred, gt)[0] < 40


# ---------------------------------------------------------------- train.py + test.py

def sr_opts(root) -> list[str]:
    # noiseless, as the SR recipe's projection onto A x = y (MODEL.DATA_CONSISTENCY) needs
    return ["TASK_DIR", str(root), *TINY_MODEL, "TRAIN.PATCH_SIZE", "16", "OPTIM.BATCH_SIZE", "2",
            "TRAIN.WORKERS", "0", "OPTIM.NUM_EPOCHS", "2", "OPTIM.SCHEDULE", "constant",
            "OUTPUT.TENSORBOARD", "false", "DATA.LENGTH_MULTIPLIER", "1", "DATA.VAL_DIR", "Datasets/val",
            "VAL.EVERY", "1", "DEGRADE.SIGMA_RANGE", "[0.0, 0.0]"]


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """Super_Resolution/train.py x2, 2 epochs of 4 tiny images; also 1 epoch + --resume (in this
    process, through the same entry point, to spare two interpreter starts)."""
    from dgunet.engine import main as train_main

    root = tmp_path_factory.mktemp("sr")
    for i, img in enumerate(crops(4, 40, seed=5)):
        write_rgb(root / "Datasets" / "train" / f"img{i}.png", img)
        write_rgb(root / "Datasets" / "val" / f"img{i}.png", img)
    opts = sr_opts(root)
    straight = run("Super_Resolution/train.py", ["--opts", *opts, "OUTPUT.NAME", "straight"], root)
    assert straight.returncode == 0, straight.stderr[-2000:]
    yml = REPO / "Super_Resolution" / "training.yml"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chunk = ["OUTPUT.NAME", "chunked", "TRAIN.STOP_AT_EPOCH", "1"]
        assert train_main("sr", yml, ["--opts", *opts, *chunk]) == 0
        assert train_main("sr", yml, ["--resume", "--opts", *opts, "OUTPUT.NAME", "chunked"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.mark.slow
def test_sr_training_resumes_exactly(sr_run):
    runs = sr_run / "checkpoints"
    a = read_checkpoint(runs / "straight" / "model_latest.pth")["state_dict"]
    b = read_checkpoint(runs / "chunked" / "model_latest.pth")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (runs / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["val_psnr"] > 10 for r in rows)


def test_a_stages_run_starts_from_a_file_of_the_published_layout(sr_run, capsys, one_thread):
    """TRAIN.INIT_FROM a file without the readout keys (a published checkpoint's layout): the run
    starts from its weights, says the readout keeps its initialisation, and trains."""
    from dgunet.engine import main as train_main

    trained = read_checkpoint(sr_run / "checkpoints" / "straight" / "model_latest.pth")["state_dict"]
    published = {k: v for k, v in trained.items() if not k.startswith("readout.")}
    torch.save({"state_dict": published}, sr_run / "published_layout.pth")
    opts = [*sr_opts(sr_run), "OUTPUT.NAME", "from_published", "OPTIM.NUM_EPOCHS", "1",
            "TRAIN.INIT_FROM", str(sr_run / "published_layout.pth")]
    yml = REPO / "Super_Resolution" / "training.yml"
    assert train_main("sr", yml, ["--opts", *opts]) == 0
    assert "(readout: not in the file, left at their initialisation)" in capsys.readouterr().out
    # the same start and samples with LOSS.CORRECTION_WEIGHT: the trainer adds the refined output's term
    weighted = [*opts, "OUTPUT.NAME", "from_published_cw", "LOSS.CORRECTION_WEIGHT", "1.0"]
    assert train_main("sr", yml, ["--opts", *weighted]) == 0
    a, b = (read_checkpoint(sr_run / "checkpoints" / name / "model_latest.pth")["state_dict"]
            for name in ("from_published", "from_published_cw"))
    assert not torch.equal(a["tail.weight"], b["tail.weight"])
    assert "CORRECTION_WEIGHT: 1.0" in read_checkpoint(sr_run / "checkpoints" / "from_published_cw"
                                                            / "model_latest.pth")["config"]


@pytest.mark.slow
def test_sr_test_py_scores_the_builtin_photos_and_refuses_another_scale(sr_run, tmp_path, capsys, one_thread):
    from dgunet.testrun import main as test_main

    weights = sr_run / "checkpoints" / "straight" / "model_best.pth"
    assert test_main("sr", ["--weights", str(weights), "--input_dir", str(tmp_path), "--result_dir",
                            str(tmp_path / "out"), "--dataset", "Photos", "--device", "cpu"]) == 0
    scores = json.loads((tmp_path / "out" / "Photos" / "scores.json").read_text())
    assert scores["protocol"] == "sr_x2" and len(scores["images"]) == 4 and scores["psnr"] > 15
    assert json.loads((tmp_path / "out" / "Photos" / "cases.json").read_text())["cases"].keys() == {"x2"}
    assert len(list((tmp_path / "out" / "Photos" / "x2").glob("*.png"))) == 4
    capsys.readouterr()
    assert test_main("sr", ["--weights", str(weights), "--input_dir", str(tmp_path), "--dataset", "Photos",
                            "--scale", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: weights {weights} were trained for x2 (DEGRADE.SCALE in the checkpoint's config), not x3; "
        f"pass --scale 2 or weights trained for x3"]


@pytest.mark.slow
def test_baselines_run_as_methods_with_user_kernels(tmp_path, one_thread):
    from dgunet.testrun import main as test_main

    kernels = tmp_path / "kernels"
    kernels.mkdir()
    np.save(kernels / "box.npy", np.ones((3, 5)))
    clean = tmp_path / "data" / "Kodak24"
    for i, img in enumerate(crops(2, 48, seed=6)):
        write_rgb(clean / f"k{i}.png", img)
    assert test_main("deblurring", ["--protocol", "nonblind", "--method", "wiener", "--kernels", str(kernels),
                                    "--input_dir", str(tmp_path / "data"), "--dataset", "Kodak24",
                                    "--result_dir", str(tmp_path / "out")]) == 0
    per_case = json.loads((tmp_path / "out" / "Kodak24" / "cases.json").read_text())["cases"]
    assert list(per_case) == ["box_noise1", "box_noise3"]
    assert per_case["box_noise1"]["nonblind"]["psnr"] > per_case["box_noise3"]["nonblind"]["psnr"]
    assert set(per_case["box_noise1"]) == {"nonblind", "nonblind_y"}
    assert test_main("sr", ["--method", "bicubic", "--input_dir", str(tmp_path / "data"),
                            "--result_dir", str(tmp_path / "sr"), "--dataset", "Photos", "--scale", "4"]) == 0
    assert json.loads((tmp_path / "sr" / "Photos" / "scores.json").read_text())["protocol"] == "sr_x4"


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, monkeypatch):
    from dgunet.engine import main as train_main
    from dgunet.testrun import main as test_main

    bad = tmp_path / "kernels"
    bad.mkdir()
    np.save(bad / "k.npy", -np.ones((3, 3)))
    assert test_main("deblurring", ["--protocol", "nonblind", "--method", "wiener", "--kernels", str(bad),
                                    "--input_dir", str(tmp_path), "--dataset", "Photos"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad / "k.npy") in err and "non-negative" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = train_main("sr", REPO / "Super_Resolution" / "training.yml",
                      ["--opts", "DATA.TRAIN_DIR", str(empty), "DATA.VAL_DIR", ""])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and f"folder {empty} holds no readable images" in err
    monkeypatch.setenv("DGUNET_PRETRAINED", str(tmp_path / "nothing_shipped"))
    assert test_main("sr", ["--input_dir", str(tmp_path), "--dataset", "Photos"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no shipped model for sr" in err and "pass --weights W" in err
