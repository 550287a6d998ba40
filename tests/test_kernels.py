"""Blur kernels: normalised, non-negative, sized as asked, reproducible; user kernel files checked."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from dgunet.data.kernels import (
    MAX_KERNEL_SIZE,
    gaussian_blur_kernel,
    load_kernel,
    load_kernel_folder,
    load_kernels,
    motion_kernel,
    pad_kernel,
    random_kernel,
)
from dgunet.errors import DataError


def centre_of_mass(kernel: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[0:kernel.shape[0], 0:kernel.shape[1]]
    return float((kernel * yy).sum()), float((kernel * xx).sum())


@pytest.mark.parametrize("size", [7, 15, 25])
def test_motion_kernels_sum_to_one_are_non_negative_and_centred(size):
    rng = np.random.default_rng(size)
    for _ in range(20):
        k = motion_kernel(rng, size)
        assert k.shape == (size, size)
        assert k.min() >= 0 and abs(k.sum() - 1) < 1e-12
        cy, cx = centre_of_mass(k)
        assert abs(cy - (size - 1) / 2) < 1e-9 and abs(cx - (size - 1) / 2) < 1e-9  # no image shift
        assert (k > 0).sum() > 3  # a path, not a point
        assert k[0].sum() == k[-1].sum() == k[:, 0].sum() == k[:, -1].sum() == 0  # nothing clipped


def test_motion_kernels_are_a_function_of_the_seed_and_differ_between_seeds():
    a = motion_kernel(np.random.default_rng([1, 2, 3]))
    b = motion_kernel(np.random.default_rng([1, 2, 3]))
    c = motion_kernel(np.random.default_rng([1, 2, 4]))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_motion_kernel_rejects_even_or_too_large_sizes():
    for size in (24, MAX_KERNEL_SIZE + 2):
        with pytest.raises(DataError, match=f"odd and at most {MAX_KERNEL_SIZE}"):
            motion_kernel(np.random.default_rng(0), size)


def test_gaussian_blur_kernel_matches_its_formula_and_anisotropy_rotates():
    k = gaussian_blur_kernel(9, 1.5)
    t = np.arange(9) - 4
    g = np.exp(-t**2 / (2 * 1.5**2))
    assert np.allclose(k, np.outer(g, g) / np.outer(g, g).sum())
    wide_x = gaussian_blur_kernel(15, 3.0, 0.7, angle=0.0)
    wide_y = gaussian_blur_kernel(15, 3.0, 0.7, angle=np.pi / 2)
    assert np.allclose(wide_x, wide_y.T)
    assert wide_x[7].sum() > wide_x[:, 7].sum()  # spread along x (columns)


def test_random_kernel_kinds_and_padding():
    rng = np.random.default_rng(0)
    for kind in ("motion", "gaussian_iso", "gaussian_aniso"):
        k = random_kernel(rng, [kind], 13)
        assert k.shape == (13, 13) and abs(k.sum() - 1) < 1e-12 and k.min() >= 0
    iso = random_kernel(rng, ["gaussian_iso"], 13)
    assert np.allclose(iso, iso.T)
    padded = pad_kernel(iso, 25)
    assert padded.shape == (25, 25) and np.array_equal(padded[6:19, 6:19], iso)


def test_user_kernel_files_load_normalised(tmp_path):
    raw = np.zeros((4, 6))
    raw[1, 2:5] = [1, 2, 1]
    np.save(tmp_path / "a.npy", raw)
    scipy.io.savemat(tmp_path / "b.mat", {"kernel": raw * 3})
    import cv2

    cv2.imwrite(str(tmp_path / "c.png"), (raw * 60).astype(np.uint8))
    kernels = load_kernel_folder(tmp_path)
    assert list(kernels) == ["a", "b", "c"]
    for k in kernels.values():
        assert k.shape == (7, 7)  # padded to the smallest odd square
        assert abs(k.sum() - 1) < 1e-12
        assert np.allclose(k[:4, :6], raw / raw.sum())


@pytest.mark.parametrize("array, message", [
    (np.ones((3, 3, 3)), "3-D"),
    (-np.ones((3, 3)), "negative"),
    (np.zeros((3, 3)), "all-zero"),
    (np.ones((MAX_KERNEL_SIZE + 2, MAX_KERNEL_SIZE + 2)), f"up to {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE}"),
])
def test_bad_kernel_files_name_the_file_and_the_fix(tmp_path, array, message):
    path = tmp_path / "k.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message) as err:
        load_kernel(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_kernel_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_kernel_folder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no kernel files"):
        load_kernel_folder(tmp_path)
    (tmp_path / "k.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="k.npy is not a readable .npy"):
        load_kernel_folder(tmp_path)


# ---------------------------------------------------------------- kernel files as the field ships them

def levin_like_kernels() -> list[np.ndarray]:
    """Kernels of Levin et al.'s sizes (one 27x27), non-square-free, with a distinct sum each."""
    rng = np.random.default_rng(7)
    return [rng.random((k, k)) * (i + 1) for i, k in enumerate((19, 27, 13))]


def write_v73_cell_array(path, name: str, cells: list[np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes a 1xN cell array: a dataset of object references to
    datasets under "#refs#", every array stored transposed (MATLAB is column-major)."""
    import h5py

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        handles = []
        for i, cell in enumerate(cells):
            data = refs.create_dataset(f"c{i}", data=cell.T)
            data.attrs["MATLAB_class"] = np.bytes_("double")
            handles.append(data.ref)
        index = f.create_dataset(name, (len(cells), 1), dtype=h5py.ref_dtype)  # 1xN, transposed
        for i, ref in enumerate(handles):
            index[i, 0] = ref
        index.attrs["MATLAB_class"] = np.bytes_("cell")


def test_v73_cell_array_kernel_file_loads_in_order_and_untransposed(tmp_path):
    cells = levin_like_kernels()
    cells[0][0, 1:] = 0  # an asymmetric kernel: a transposed read would not match
    write_v73_cell_array(tmp_path / "levin.mat", "kernels", cells)
    kernels = load_kernels(tmp_path / "levin.mat")
    assert [k.shape for k in kernels] == [(19, 19), (27, 27), (13, 13)]
    for got, raw in zip(kernels, cells, strict=True):
        np.testing.assert_allclose(got, raw / raw.sum(), rtol=0, atol=1e-15)
    folder = load_kernel_folder(tmp_path)
    assert list(folder) == ["levin_01", "levin_02", "levin_03"]


def test_v73_single_kernel_and_v5_cell_array(tmp_path):
    import h5py

    raw = levin_like_kernels()[1]
    raw[:3] = 0
    with h5py.File(tmp_path / "one.mat", "w") as f:
        f.create_dataset("k", data=raw.T).attrs["MATLAB_class"] = np.bytes_("double")
    np.testing.assert_allclose(load_kernel(tmp_path / "one.mat"), raw / raw.sum(), atol=1e-15)
    cells = np.empty((1, 3), dtype=object)
    for i, k in enumerate(levin_like_kernels()):
        cells[0, i] = k
    scipy.io.savemat(tmp_path / "usrnet.mat", {"kernels": cells, "note": "twelve kernels"})
    kernels = load_kernels(tmp_path / "usrnet.mat")  # the variable named kernels wins over `note`
    assert [k.shape for k in kernels] == [(19, 19), (27, 27), (13, 13)]
    with pytest.raises(DataError, match="holds 3 kernels"):
        load_kernel(tmp_path / "usrnet.mat")


def test_a_27x27_kernel_blurs_through_the_operator(tmp_path):
    import torch

    from dgunet import physics

    raw = levin_like_kernels()[1]
    np.save(tmp_path / "k27.npy", raw)
    kernel = torch.from_numpy(load_kernel(tmp_path / "k27.npy"))
    delta = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    delta[..., 20, 20] = 1
    out = physics.Blur(kernel[None, None]).A(delta)  # a centred delta becomes the kernel itself
    np.testing.assert_allclose(out[0, 0, 7:34, 7:34].numpy(), raw / raw.sum(), atol=1e-12)


def test_bad_cell_entries_and_files_without_a_kernel_name_the_file_and_the_fix(tmp_path):
    cells = levin_like_kernels()
    cells[1] = np.ones((3, 3, 2))
    write_v73_cell_array(tmp_path / "bad.mat", "kernels", cells)
    with pytest.raises(DataError) as err:
        load_kernels(tmp_path / "bad.mat")
    message = str(err.value)
    assert str(tmp_path / "bad.mat") in message and "cell 2 of 'kernels'" in message
    assert "3-D" in message and "2-D non-negative" in message and "\n" not in message
    scipy.io.savemat(tmp_path / "text.mat", {"title": "no kernel here"})
    with pytest.raises(DataError, match="2-D non-negative") as err:
        load_kernels(tmp_path / "text.mat")
    assert str(tmp_path / "text.mat") in str(err.value)
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file, but nothing else")
    with pytest.raises(DataError, match="not a readable MATLAB .mat file"):
        load_kernels(tmp_path / "junk.mat")
