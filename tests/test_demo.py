"""The demo end to end on a shrunken recipe: data, real train.py, test path, metrics, pictures."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from _engine_helpers import REPO

from dgunet import demo
from dgunet.errors import ConfigError

DEMO_FILES = {"train_script": str(REPO / "Denoising" / "train.py"),
              "config": str(REPO / "Denoising" / "demo.yml")}  # what `make demo` passes


def test_noise_is_seeded_and_has_the_requested_sigma():
    clean = np.full((64, 64, 3), 128, np.uint8)
    a = demo.add_noise(clean, np.random.default_rng(0))
    b = demo.add_noise(clean, np.random.default_rng(0))
    assert np.array_equal(a, b)
    assert abs(a.astype(float).std() - demo.NOISE_SIGMA) < 1.0


def test_dataset_has_disjoint_train_and_held_out_photos(tmp_path):
    folders = demo.build_dataset(tmp_path)
    train = {p.stem.rsplit("_", 1)[0] for p in (folders["train"] / "input").glob("*.png")}
    held = {p.stem for p in (folders["heldout"] / "target").glob("*.png")}
    assert train == set(demo.TRAIN_PHOTOS)
    assert held == {name for name, *_ in demo.HELD_OUT} and not (train & held)
    assert len(list((folders["val"] / "input").glob("*.png"))) == len(demo.TRAIN_PHOTOS)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_its_pictures(tmp_path, capsys):
    args = types.SimpleNamespace(out=str(tmp_path), epochs=2, opts=[
        "MODEL.N_FEAT", "4", "MODEL.SCALE_UNETFEATS", "2", "MODEL.SCALE_ORSNETFEATS", "2",
        "TRAIN.PATCH_SIZE", "32"], **DEMO_FILES)
    assert demo.run(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"psnr_in", "psnr_out", "ssim_in", "ssim_out", "seconds"}
    assert 19 < summary["psnr_in"] < 22  # sigma 25 on 8-bit images
    pictures = [f"side_by_side_{n}.png" for n, *_ in demo.HELD_OUT]
    for name in ["stages.png", "curves.png", "metrics.jsonl", *pictures]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert "mean" in capsys.readouterr().out
    assert demo.run(args) == 0  # a second run into the same folder starts afresh


def test_the_shipped_deblurring_picture_shows_y_start_output_and_clean(tmp_path, monkeypatch):
    import torch

    from dgunet.config import load_config
    from dgunet.data.io import read_image
    from dgunet.models import build_model
    from dgunet.pretrained import export, write_manifest

    ship = tmp_path / "ship"
    cfg = load_config(REPO / "Deblurring" / "training_nonblind.yml",
                      ["MODEL.N_FEAT", "8", "MODEL.SCALE_UNETFEATS", "4", "MODEL.SCALE_ORSNETFEATS", "4"])
    model = build_model("deblurring", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4,
                        gradient="known", noise_aware=True)
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, tmp_path / "run.pth")
    export(tmp_path / "run.pth", ship / "d.pth")
    write_manifest({"deblurring": {"file": "d.pth", "task": "deblurring"}}, ship)
    monkeypatch.setenv("DGUNET_PRETRAINED", str(ship))
    scores = demo.shipped_deblurring_picture(tmp_path)
    assert set(scores) == {"y", "start", "output"} and scores["start"] > scores["y"]
    assert read_image(tmp_path / "shipped_deblurring.png").shape == (3, 192, 4 * 192 + 3 * 4)
    monkeypatch.setenv("DGUNET_PRETRAINED", str(tmp_path / "nothing"))
    assert demo.shipped_deblurring_picture(tmp_path / "other") is None


def test_the_demo_is_told_its_training_script_and_recipe(tmp_path):
    """The package never looks for the checkout: without --train-script/--config the demo stops
    with one line naming both (what `make demo` passes), before writing any data."""
    args = types.SimpleNamespace(out=str(tmp_path / "out"), epochs=None, opts=[], train_script=None,
                                 config=DEMO_FILES["config"])
    with pytest.raises(ConfigError, match="--train-script .not given.*make demo") as err:
        demo.run(args)
    assert "\n" not in str(err.value) and not (tmp_path / "out" / "data").exists()
    assert demo.training_files(types.SimpleNamespace(**DEMO_FILES)) == (REPO / "Denoising" / "train.py",
                                                                       REPO / "Denoising" / "demo.yml")
