"""`dgunet evaluate` end to end on tiny folders built from skimage's astronaut photo."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from dgunet.cli import main
from dgunet.errors import DataError
from dgunet.evaluate import (
    evaluate_arrays,
    evaluate_folders,
    images_by_stem,
    load_image,
    match_pairs,
    write_json_atomic,
)


def _save(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB (or gray) uint8 image with OpenCV, which expects BGR."""
    img = rgb[:, :, ::-1] if rgb.ndim == 3 else rgb
    assert cv2.imwrite(str(path), np.ascontiguousarray(img))


def _crops() -> dict[str, np.ndarray]:
    img = astronaut()
    return {f"im{i}": img[40 * i:40 * i + 48, 100:148].copy() for i in range(3)}


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict]:
    """pred/*.png (noisy, except im0 identical) and gt/*.tif; returns the arrays too."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    rng = np.random.default_rng(1)
    arrays = {}
    for name, gt in _crops().items():
        pred = gt if name == "im0" else np.clip(gt + rng.normal(0, 6, gt.shape), 0, 255)
        pred = pred.astype(np.uint8)
        _save(pred_dir / f"{name}.png", pred)
        _save(gt_dir / f"{name}.tif", gt)
        arrays[name] = (pred, gt)
    return pred_dir, gt_dir, arrays


def _cli(*args: str) -> int:
    return main(["evaluate", *args])


def test_cli_end_to_end_json_schema(folders, tmp_path, capsys):
    pred_dir, gt_dir, arrays = folders
    out = tmp_path / "res" / "scores.json"
    rc = _cli("--protocol", "gopro", "--pred", str(pred_dir), "--gt", str(gt_dir),
              "--json", str(out))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "im1" in printed and "mean" in printed and "inf" in printed

    doc = json.loads(out.read_text())
    assert set(doc) == {"protocol", "images", "psnr", "ssim"}
    assert doc["protocol"] == "gopro"
    assert [set(e) for e in doc["images"]] == [{"name", "psnr", "ssim"}] * 3
    assert [e["name"] for e in doc["images"]] == ["im0", "im1", "im2"]
    # Identical pair: PSNR inf is written as the string "inf", and so is the mean.
    assert doc["images"][0]["psnr"] == "inf" and doc["psnr"] == "inf"
    assert doc["images"][0]["ssim"] == pytest.approx(1.0, abs=1e-6)

    direct = evaluate_arrays("gopro", [(n, p, g) for n, (p, g) in arrays.items()])
    assert [e["psnr"] for e in doc["images"][1:]] == [s.psnr for s in direct.images[1:]]
    assert doc["ssim"] == pytest.approx(direct.ssim)
    assert not [p for p in out.parent.iterdir() if p.suffix == ".tmp"]


def test_finite_mean_and_workers_match(folders):
    pred_dir, gt_dir, arrays = folders
    _save(pred_dir / "im0.png", arrays["im1"][0][::-1].copy())  # no longer identical
    serial = evaluate_folders("deraining", pred_dir, gt_dir)
    assert math.isfinite(serial.psnr)
    assert serial.psnr == pytest.approx(np.mean([s.psnr for s in serial.images]))
    pooled = evaluate_folders("deraining", pred_dir, gt_dir, workers=2)
    assert pooled.images == serial.images
    assert serial.to_json()["psnr"] == serial.psnr


def test_missing_and_extra_files_are_listed(folders, capsys):
    pred_dir, gt_dir, _ = folders
    (pred_dir / "im2.png").unlink()
    _save(pred_dir / "zz_extra.png", np.zeros((48, 48, 3), np.uint8))
    rc = _cli("--protocol", "gopro", "--pred", str(pred_dir), "--gt", str(gt_dir))
    assert rc == 2
    err = capsys.readouterr().err
    assert "1 ground-truth image(s)" in err and "im2" in err
    assert "1 prediction(s)" in err and "zz_extra" in err
    # --allow-missing ignores the extra prediction but not the missing one.
    with pytest.raises(DataError, match="im2") as info:
        match_pairs(pred_dir, gt_dir, allow_missing=True)
    assert "zz_extra" not in str(info.value)
    _save(pred_dir / "im2.png", np.zeros((48, 48, 3), np.uint8))
    assert [p[0] for p in match_pairs(pred_dir, gt_dir, allow_missing=True)] == [
        "im0", "im1", "im2"
    ]


def test_many_missing_names_are_shortened(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    for i in range(8):
        _save(tmp_path / "g" / f"f{i}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"f0, f1, f2, f3, f4, \.\.\. \(3 more\)"):
        match_pairs(tmp_path / "p", tmp_path / "g")


def test_size_mismatch_names_both_files_and_keeps_old_json(folders, tmp_path, capsys):
    pred_dir, gt_dir, arrays = folders
    _save(pred_dir / "im1.png", arrays["im1"][0][:40])
    out = tmp_path / "scores.json"
    out.write_text("old\n")
    rc = _cli("--protocol", "realblur", "--pred", str(pred_dir), "--gt", str(gt_dir),
              "--json", str(out))
    assert rc == 2
    err = capsys.readouterr().err
    assert str(pred_dir / "im1.png") in err and str(gt_dir / "im1.tif") in err
    assert "40x48" in err and "48x48" in err
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "pred", "scores.json"]


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    out = tmp_path / "scores.json"
    out.write_text("old\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(out, {"psnr": 1.0})
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_load_image_rgb_gray_and_16bit(tmp_path):
    rgb = _crops()["im0"]
    _save(tmp_path / "c.bmp", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "c.bmp"), rgb)
    _save(tmp_path / "g.tiff", rgb[:, :, 0])
    assert load_image(tmp_path / "g.tiff").shape == (48, 48)
    cv2.imwrite(str(tmp_path / "d.png"), np.zeros((4, 4), np.uint16))
    with pytest.raises(DataError, match=r"d\.png: expected an 8-bit image, got uint16"):
        load_image(tmp_path / "d.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.jpg: cannot be read"):
        load_image(tmp_path / "bad.jpg")


def test_listing_suffixes_and_duplicate_stems(tmp_path):
    for name in ("a.PNG", "b.jpeg", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(images_by_stem(tmp_path)) == ["a", "b"]
    (tmp_path / "a.tif").write_bytes(b"")
    with pytest.raises(DataError, match="same name"):
        images_by_stem(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        images_by_stem(tmp_path / "nope")


def test_cs_protocol_on_gray_tif(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    gray = cv2.cvtColor(_crops()["im1"], cv2.COLOR_RGB2GRAY) // 2  # room for +5 without clipping
    _save(tmp_path / "g" / "barbara.tif", gray)
    _save(tmp_path / "p" / "barbara.png", gray + 5)
    result = evaluate_folders("cs", tmp_path / "p", tmp_path / "g")
    assert result.images[0].name == "barbara"
    assert result.psnr == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_unknown_protocol_for_api():
    with pytest.raises(DataError, match="unknown evaluation protocol"):
        evaluate_arrays("nope", [])
