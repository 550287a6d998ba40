"""Image I/O, augmentation, data sets, SIDD patches and `dgunet data check`, on tiny built data."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.util import img_as_ubyte
from torch.utils.data import DataLoader, Dataset

from dgunet.cli import main as cli_main
from dgunet.data import (
    CSCropDataset,
    PairedImageDataset,
    adjust_saturation,
    check_dataset,
    dihedral,
    generate_sidd_patches,
    list_images,
    load_y_image,
    pad_to,
    random_crop,
    read_image,
    save_png_atomic,
    seed_worker,
    to_uint8,
)
from dgunet.errors import DataError


def photo(h: int = 40, w: int = 48, top: int = 150, left: int = 200) -> np.ndarray:
    """(h, w, 3) uint8 RGB crop of the astronaut photo."""
    return np.ascontiguousarray(data.astronaut()[top : top + h, left : left + w])


def write(path: Path, rgb: np.ndarray) -> Path:
    """Write RGB (or gray) uint8/uint16 with OpenCV, which expects BGR."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rgb[:, :, ::-1] if rgb.ndim == 3 else rgb
    assert cv2.imwrite(str(path), np.ascontiguousarray(array))
    return path


# ---------------------------------------------------------------- io


def test_read_image_rgb_order_range_and_gray(tmp_path):
    rgb = photo()
    img = read_image(write(tmp_path / "a.png", rgb))
    assert img.shape == (3, 40, 48) and img.dtype == torch.float32
    assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    luma = read_image(tmp_path / "a.png", channels=1)
    want = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
    assert luma.shape == (1, 40, 48)
    assert np.allclose(luma[0].numpy(), want, atol=1e-6)

    gray = data.camera()[:20, :30]
    as_rgb = read_image(write(tmp_path / "g.bmp", gray))
    assert as_rgb.shape == (3, 20, 30)
    assert torch.equal(as_rgb[0], as_rgb[2])
    assert torch.equal(read_image(tmp_path / "g.bmp", channels=1)[0], as_rgb[0])


def test_read_image_16_bit(tmp_path):
    deep = (photo().astype(np.uint16) * 257)[:, :, :]
    deep[0, 0] = (65535, 0, 1)
    img = read_image(write(tmp_path / "d.png", deep))
    assert img[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 1 / 65535])


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_list_images_filters_and_sorts(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.TIFF", "notes.txt", "d.jpeg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.TIFF", "d.jpeg"]
    with pytest.raises(DataError, match="missing"):
        list_images(tmp_path / "missing")


def test_to_uint8_matches_img_as_ubyte():
    values = np.concatenate([np.arange(256) / 255, (np.arange(255) + 0.5) / 255, [-0.2, 1.3]])
    for dtype in (np.float32, np.float64):
        tensor = torch.from_numpy(values.astype(dtype)).view(1, -1)
        want = img_as_ubyte(np.clip(values.astype(dtype), 0, 1))
        assert np.array_equal(to_uint8(tensor)[0], want)


def test_save_png_atomic_round_trip(tmp_path):
    img = read_image(write(tmp_path / "src.png", photo()))
    out = save_png_atomic(tmp_path / "out" / "r.png", img)
    assert torch.equal(read_image(out), img)
    save_png_atomic(tmp_path / "out" / "u.png", photo())
    assert torch.equal(read_image(tmp_path / "out" / "u.png"), img)
    save_png_atomic(tmp_path / "out" / "gray.png", img[:1])
    assert cv2.imread(str(tmp_path / "out" / "gray.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gray.png", "r.png", "u.png"]


# ---------------------------------------------------------------- augment


def test_pad_to_reflects_and_falls_back_to_replicate():
    img = torch.arange(20.0).view(1, 4, 5)
    padded = pad_to(img, 6)
    assert padded.shape == (1, 6, 6)
    assert torch.equal(padded[:, :4, :5], img)
    assert torch.equal(padded[0, 4, :5], img[0, 2])  # reflect: row 4 mirrors row 2
    assert torch.equal(padded[0, 5, :5], img[0, 1])
    assert torch.equal(padded[0, :4, 5], img[0, :, 3])
    # Reflection cannot pad a side by its own length or more: replicate instead.
    assert torch.equal(pad_to(img, (8, 5))[0, 7], img[0, 3])
    tiny = pad_to(torch.ones(3, 2, 2), 8)
    assert tiny.shape == (3, 8, 8) and torch.all(tiny == 1)
    assert pad_to(img, 2) is img


def test_random_crop_takes_the_same_window():
    inp = torch.rand(3, 20, 30)
    out_in, out_tgt = random_crop(inp, inp * 2, 8, np.random.default_rng(0))
    assert out_in.shape == (3, 8, 8)
    assert torch.equal(out_tgt, out_in * 2)
    with pytest.raises(ValueError):
        random_crop(inp, inp, 25, np.random.default_rng(0))


def test_dihedral_outcomes():
    img = torch.rand(2, 6, 6)
    outs = [dihedral(img, m) for m in range(9)]
    assert torch.equal(outs[0], img) and torch.equal(outs[8], img)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(outs[i], outs[j]), (i, j)
    a = img.numpy()
    assert np.array_equal(outs[1].numpy(), a[:, ::-1, :])
    assert np.array_equal(outs[2].numpy(), a[:, :, ::-1])
    assert np.array_equal(outs[3].numpy(), np.rot90(a, 1, axes=(1, 2)))
    assert np.array_equal(outs[5].numpy(), np.rot90(a, 3, axes=(1, 2)))
    # 6 and 7 are the two diagonal reflections.
    transposes = {a.transpose(0, 2, 1).tobytes(), a[:, ::-1, ::-1].transpose(0, 2, 1).tobytes()}
    assert {outs[6].numpy().tobytes(), outs[7].numpy().tobytes()} == transposes
    assert dihedral(torch.rand(3, 4, 6), 3).shape == (3, 6, 4)
    with pytest.raises(ValueError):
        dihedral(img, 9)


def test_adjust_saturation():
    img = torch.from_numpy(photo()).permute(2, 0, 1).float() / 255
    gray = adjust_saturation(img, 0.0)
    luma = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    assert torch.allclose(gray, luma.expand(3, -1, -1), atol=1e-6)
    assert torch.allclose(adjust_saturation(img, 1.0), img, atol=1e-6)
    strong = adjust_saturation(img, 3.0)
    assert strong.min() >= 0 and strong.max() <= 1
    flat = luma.expand(3, -1, -1).clone()
    assert torch.allclose(adjust_saturation(flat, 1.2), flat, atol=1e-6)


# ---------------------------------------------------------------- paired data set


def make_pairs(root: Path, names=("b", "a", "c"), size=(40, 48)) -> None:
    """input = 255 - target, so alignment survives every augmentation exactly."""
    for k, name in enumerate(names):
        tgt = photo(*size, top=60 * k, left=40 * k)
        write(root / "target" / f"{name}.png", tgt)
        write(root / "input" / f"{name}.{'bmp' if k % 2 else 'png'}", 255 - tgt)


def test_paired_train_items_are_aligned_and_deterministic(tmp_path):
    make_pairs(tmp_path)
    ds = PairedImageDataset(tmp_path, 32, "train", saturation_aug=True, length_multiplier=2)
    assert len(ds) == 6
    names = [ds[i][2] for i in range(6)]
    assert names == ["a", "b", "c"] * 2
    for i in range(6):
        tgt, inp, _ = ds[i]
        assert tgt.shape == inp.shape == (3, 32, 32)
        assert torch.allclose(inp, 1 - tgt, atol=1e-6)
    again = PairedImageDataset(tmp_path, 32, "train", saturation_aug=True)
    assert torch.equal(again[1][0], ds[1][0])
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], again[1][0])


def test_paired_pads_small_images_and_val_crops(tmp_path):
    make_pairs(tmp_path, names=("x",), size=(20, 24))
    tgt, inp, _ = PairedImageDataset(tmp_path, 32)[0]
    assert tgt.shape == (3, 32, 32)
    make_pairs(tmp_path / "v", names=("y",))
    tgt, inp, name = PairedImageDataset(tmp_path / "v", 16, "val")[0]
    full = read_image(tmp_path / "v" / "target" / "y.png")
    assert name == "y" and torch.equal(tgt, full[:, 12:28, 16:32])
    tgt, _, _ = PairedImageDataset(tmp_path / "v", None, "val")[0]
    assert torch.equal(tgt, full)


def test_paired_same_batches_for_any_worker_count(tmp_path):
    make_pairs(tmp_path)
    ds = PairedImageDataset(tmp_path, 16, "train", length_multiplier=2)
    ds.set_epoch(3)

    def batches(workers):
        loader = DataLoader(ds, batch_size=3, num_workers=workers, worker_init_fn=seed_worker)
        return torch.cat([b[0] for b in loader])

    assert torch.equal(batches(0), batches(2))


def test_paired_errors(tmp_path):
    with pytest.raises(DataError, match="input"):
        PairedImageDataset(tmp_path, 16)
    (tmp_path / "input").mkdir()
    (tmp_path / "target").mkdir()
    with pytest.raises(DataError, match="no images"):
        PairedImageDataset(tmp_path, 16)
    make_pairs(tmp_path, names=("a", "b"))
    write(tmp_path / "input" / "only_in.png", photo())
    write(tmp_path / "target" / "only_tgt.jpg", photo())
    with pytest.raises(DataError, match="only_in.*only_tgt"):
        PairedImageDataset(tmp_path, 16)
    (tmp_path / "input" / "only_in.png").unlink()
    (tmp_path / "target" / "only_tgt.jpg").unlink()
    write(tmp_path / "input" / "a.jpg", photo())
    with pytest.raises(DataError, match="a.jpg"):
        PairedImageDataset(tmp_path, 16)
    (tmp_path / "input" / "a.jpg").unlink()
    (tmp_path / "input" / "b.bmp").write_bytes(b"garbage")
    ds = PairedImageDataset(tmp_path, 16)
    with pytest.raises(DataError, match="b.bmp"):
        ds[1]
    write(tmp_path / "input" / "b.bmp", photo(30, 30))
    with pytest.raises(DataError, match="one size"):
        ds[1]


class _NumpyDraw(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return float(np.random.rand()), random.random()


def test_seed_worker_gives_workers_different_streams():
    loader = DataLoader(_NumpyDraw(), batch_size=1, num_workers=2, worker_init_fn=seed_worker)
    draws = [tuple(x.item() for x in b) for b in loader]
    # Items 0 and 1 are the first draw of worker 0 and worker 1.
    assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]


# ---------------------------------------------------------------- compressive sensing


def test_cs_dataset_length_shape_and_y(tmp_path):
    colour = np.empty((40, 50, 3), np.uint8)
    colour[:] = (200, 100, 30)
    write(tmp_path / "flat.png", colour)
    write(tmp_path / "small.png", photo(20, 24))
    write(tmp_path / "cam.tif", data.camera()[:64, :64])
    ds = CSCropDataset(tmp_path, crop=32, crops_per_image=5)
    assert len(ds) == 15
    y_flat = (16 + (65.481 * 200 + 128.553 * 100 + 24.966 * 30) / 255) / 255
    for i in range(15):
        item = ds[i]
        assert item.shape == (1, 32, 32) and item.dtype == torch.float32
    # Files sort as cam.tif, flat.png, small.png: items 5..9 come from the flat image.
    assert torch.allclose(ds[7], torch.full((1, 32, 32), y_flat), atol=1e-6)
    assert 16 / 255 - 1e-6 <= ds[12].min() and ds[12].max() <= 235 / 255 + 1e-6
    assert torch.equal(ds[3], CSCropDataset(tmp_path, 32, 5)[3])
    ds8 = CSCropDataset(tmp_path, 32, 5, cache_dtype="uint8")
    assert torch.allclose(ds8[3], ds[3], atol=0.5 / 255 + 1e-6)


def test_cs_flips_cover_the_dihedral_group(tmp_path):
    write(tmp_path / "a.png", photo(8, 8))
    ds = CSCropDataset(tmp_path, crop=8, crops_per_image=64)
    distinct = {ds[i].numpy().tobytes() for i in range(64)}
    assert len(distinct) == 8  # 2^3 flip combinations of the one full-size crop


def test_load_y_image(tmp_path):
    gray = data.camera()[:16, :16]
    assert np.array_equal(load_y_image(write(tmp_path / "g.tif", gray)), gray.astype(np.float64))
    rgb = photo(8, 8)
    y = load_y_image(write(tmp_path / "c.png", rgb))
    want = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert y.dtype == np.float64 and np.abs(y - want).max() <= 0.5 + 1e-6
    with pytest.raises(DataError, match="none.png"):
        load_y_image(tmp_path / "none.png")


# ---------------------------------------------------------------- SIDD


def make_sidd(src: Path) -> None:
    for k, scene in enumerate(["0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N"]):
        clean = photo(40, 50, top=50 * k)
        for part in ("010", "011"):
            write(src / scene / f"000{k + 1}_GT_SRGB_{part}.PNG", clean)
            write(src / scene / f"000{k + 1}_NOISY_SRGB_{part}.PNG", 255 - clean)


def test_sidd_patches_pair_up(tmp_path):
    make_sidd(tmp_path / "src")
    count = generate_sidd_patches(tmp_path / "src", tmp_path / "dst", patch=16, per_image=3)
    assert count == 12
    inputs = sorted(p.name for p in (tmp_path / "dst" / "input").iterdir())
    targets = sorted(p.name for p in (tmp_path / "dst" / "target").iterdir())
    assert inputs == targets and len(inputs) == 12
    assert "0001_010_1.png" in inputs and "0002_011_3.png" in inputs
    for name in inputs[:4]:
        noisy = read_image(tmp_path / "dst" / "input" / name)
        clean = read_image(tmp_path / "dst" / "target" / name)
        assert noisy.shape == (3, 16, 16)
        assert torch.allclose(noisy, 1 - clean, atol=1e-6)
    ds = PairedImageDataset(tmp_path / "dst", 8)
    assert len(ds) == 12
    # Worker processes cut the same patches: each scene seeds its own generator.
    generate_sidd_patches(tmp_path / "src", tmp_path / "par", patch=16, per_image=3, workers=2)
    for name in ("0001_011_2.png", "0002_010_3.png"):
        first = (tmp_path / "dst" / "target" / name).read_bytes()
        assert (tmp_path / "par" / "target" / name).read_bytes() == first


def test_sidd_flat_folder_and_errors(tmp_path):
    clean = photo(30, 30)
    write(tmp_path / "flat" / "0005_GT_SRGB_010.PNG", clean)
    write(tmp_path / "flat" / "0005_NOISY_SRGB_010.PNG", clean)
    assert generate_sidd_patches(tmp_path / "flat", tmp_path / "out", patch=8, per_image=2) == 2
    with pytest.raises(DataError, match="smaller"):
        generate_sidd_patches(tmp_path / "flat", tmp_path / "out", patch=64, per_image=1)
    (tmp_path / "flat" / "0005_NOISY_SRGB_010.PNG").unlink()
    with pytest.raises(DataError, match="NOISY_SRGB"):
        generate_sidd_patches(tmp_path / "flat", tmp_path / "out")
    with pytest.raises(DataError, match="GT_SRGB"):
        generate_sidd_patches(tmp_path / "out", tmp_path / "out2")


# ---------------------------------------------------------------- data check


def make_deraining_tree(root: Path) -> None:
    for folder in ["train", "test/Rain100L", "test/Rain100H"]:
        make_pairs(root / folder, names=("1", "2"), size=(8, 8))


def test_data_check_good_tree(tmp_path, capsys):
    make_deraining_tree(tmp_path)
    code = cli_main(["data", "check", "--task", "deraining", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "count differs" in out and "absent (optional)" in out
    reports = {r.path: r for r in check_dataset("deraining", tmp_path)}
    assert reports["train"].count == 2 and reports["train"].expected == 13712
    assert reports["test/Rain100L"].ok and not reports["test/Test2800"].present


def test_data_check_broken_tree(tmp_path, capsys):
    make_deraining_tree(tmp_path)
    write(tmp_path / "train" / "input" / "stray.png", photo(8, 8))
    (tmp_path / "test" / "Rain100L" / "target" / "1.png").unlink()
    (tmp_path / "test" / "Rain100L" / "target" / "2.png").unlink()
    (tmp_path / "test" / "Rain100L" / "target").rmdir()
    code = cli_main(["data", "check", "--task", "deraining", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "input/stray" in out and "no target/ folder" in out
    assert cli_main(["data", "check", "--task", "cs", "--root", str(tmp_path / "nope")]) == 2


def test_data_check_denoising_and_cs_layouts(tmp_path):
    make_pairs(tmp_path / "train", names=("1",), size=(8, 8))
    make_pairs(tmp_path / "val", names=("1",), size=(8, 8))
    (tmp_path / "test" / "DND" / "images_srgb").mkdir(parents=True)
    (tmp_path / "test" / "DND" / "info.mat").write_bytes(b"")
    reports = {r.path: r for r in check_dataset("denoising", tmp_path)}
    assert reports["test/DND/info.mat"].present and reports["test/DND/info.mat"].ok
    assert not reports["test/SIDD/ValidationGtBlocksSrgb.mat"].present
    assert reports["test/SIDD/ValidationGtBlocksSrgb.mat"].ok  # optional
    # Present but empty is a failure even for an optional entry.
    assert reports["test/DND/images_srgb"].broken == "no .mat files"
    assert [p for p, r in reports.items() if not r.ok] == ["test/DND/images_srgb"]
    write(tmp_path / "cs" / "train" / "a.png", photo(8, 8))
    cs = {r.path: r for r in check_dataset("cs", tmp_path / "cs")}
    assert cs["train"].ok and not cs["test/Set11"].ok
