"""Blur kernels for synthetic degradations: Gaussian (isotropic, anisotropic) and camera motion.

Every kernel is a float64 (k, k) NumPy array, non-negative, summing to 1, with k odd and at
most MAX_KERNEL_SIZE. Random kernels draw from a `numpy.random.Generator` only, so a kernel is
a pure function of the generator's seed (the training data seeds it by (seed, epoch, index)).

Motion kernels (`motion_kernel`) follow the random camera-trajectory model of Boracchi and Foi
(2012) in spirit, written here from its description: a point moves in the plane for `steps`
time steps; its velocity changes each step by a small Gaussian perturbation, a pull back toward
the start (the hand steadies itself) and, with a small probability, an impulsive jerk. The path
is centred on its mean position, scaled to fit the kernel, splatted onto the grid with bilinear
weights (time spent at a position = light collected there) and normalised. Only NumPy arithmetic:
the same seed gives the same kernel on every platform up to the last bit of NumPy's vectorised
exp/sin/cos, which differs between CPUs (AVX2 vs AVX-512, ~1e-16). dgunet/benchmarks therefore
ships the kernels as files and benchmarks read those, never a regeneration.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from dgunet.errors import DataError

MAX_KERNEL_SIZE = 31  # Levin et al.'s largest motion kernel is 27x27
DEFAULT_KERNEL_SIZE = 25  # the training and benchmark kernels' size (unchanged by the maximum)
KERNEL_SUFFIXES = (".npy", ".png", ".mat")


def normalise(kernel: np.ndarray) -> np.ndarray:
    """kernel / kernel.sum() as float64; the sum must be positive."""
    kernel = np.asarray(kernel, dtype=np.float64)
    return kernel / kernel.sum()


def gaussian_blur_kernel(size: int, sigma_x: float, sigma_y: float | None = None,
                         angle: float = 0.0) -> np.ndarray:
    """(size, size) Gaussian, centred, with standard deviations sigma_x, sigma_y (pixels) along axes
    rotated by `angle` radians; sigma_y None: isotropic."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    half = (size - 1) / 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    return normalise(np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)))


def random_gaussian_kernel(rng: np.random.Generator, size: int, sigma_range: tuple[float, float],
                           isotropic: bool) -> np.ndarray:
    """A Gaussian with sigma(s) uniform in `sigma_range` and, when anisotropic, a uniform angle."""
    sx = float(rng.uniform(*sigma_range))
    if isotropic:
        return gaussian_blur_kernel(size, sx)
    sy = float(rng.uniform(*sigma_range))
    return gaussian_blur_kernel(size, sx, sy, float(rng.uniform(0, math.pi)))


def camera_trajectory(rng: np.random.Generator, steps: int = 256, jerk_prob: float = 0.01,
                      shake: float = 0.05, pull: float = 0.02) -> np.ndarray:
    """(steps, 2) positions (x, y) of a shaking camera's image point, starting at the origin."""
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity) + 1e-12
    pos = np.zeros(2)
    path = np.empty((steps, 2))
    for t in range(steps):
        kick = rng.normal(size=2) * shake * np.linalg.norm(velocity)
        jerk = rng.normal(size=2) * 0.7 if rng.random() < jerk_prob else 0.0
        velocity = velocity + kick - pull * pos + jerk
        pos = pos + velocity / steps * 8  # the whole path spans a few units before scaling
        path[t] = pos
    return path


def splat(path: np.ndarray, size: int) -> np.ndarray:
    """Accumulate (n, 2) positions (already in pixel units of a size x size grid) bilinearly."""
    grid = np.zeros((size, size))
    x0, y0 = np.floor(path[:, 0]).astype(int), np.floor(path[:, 1]).astype(int)
    fx, fy = path[:, 0] - x0, path[:, 1] - y0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    for dx, dy, w in corners:
        xs, ys = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
        np.add.at(grid, (ys, xs), w)
    return grid


def motion_kernel(rng: np.random.Generator, size: int = DEFAULT_KERNEL_SIZE,
                  length_range: tuple[float, float] = (0.4, 1.0)) -> np.ndarray:
    """A (size, size) motion-blur kernel from a random camera trajectory (module docstring).

    The path is centred on its mean position and scaled so that its farthest point lies
    `length * ((size - 1) / 2 - 1)` pixels from the centre, `length` uniform in `length_range`:
    nothing is clipped, and since bilinear splatting keeps the mean, the kernel's centre of mass
    is exactly the central pixel (no shift of the image by the blur).
    """
    check_size(size)
    path = camera_trajectory(rng)
    path = path - path.mean(axis=0)
    reach = max(float(np.abs(path).max()), 1e-9)
    length = float(rng.uniform(*length_range))
    path = path * (length * max((size - 1) / 2 - 1, 0) / reach) + (size - 1) / 2
    return normalise(splat(path, size))


def check_size(size: int) -> None:
    if not (isinstance(size, int) and size % 2 == 1 and 1 <= size <= MAX_KERNEL_SIZE):
        raise DataError(f"kernel size {size} must be odd and at most {MAX_KERNEL_SIZE}")


def pad_kernel(kernel: np.ndarray, size: int = DEFAULT_KERNEL_SIZE) -> np.ndarray:
    """Centre a (k, k) kernel, k odd and <= size, in a (size, size) array of zeros."""
    k = kernel.shape[0]
    off = (size - k) // 2
    out = np.zeros((size, size), dtype=kernel.dtype)
    out[off:off + k, off:off + k] = kernel
    return out


def random_kernel(rng: np.random.Generator, kinds: list[str], size: int,
                  sigma_range: tuple[float, float] = (0.5, 3.0)) -> np.ndarray:
    """One kernel of a kind chosen uniformly from `kinds` (motion | gaussian_iso | gaussian_aniso)."""
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "motion":
        return motion_kernel(rng, size)
    return random_gaussian_kernel(rng, size, sigma_range, isotropic=kind == "gaussian_iso")


KERNEL_KINDS = ("motion", "gaussian_iso", "gaussian_aniso")


# ---------------------------------------------------------------- user kernels
#
# Kernel files as the field ships them: .npy, gray .png, MATLAB .mat v5 (scipy) or v7.3 (HDF5,
# h5py). A .mat file may hold one kernel or a cell array of kernels (Levin et al.'s 8 kernels are
# a v7.3 cell array `kernels`, USRNet's 12 a v5 1x12 cell array `kernels`). In a v7.3 file a cell
# array is a dataset of object references to datasets under "#refs#", and every array is stored
# transposed (MATLAB is column-major, HDF5 row-major), so each one is read back with `.T`.

MAT_KERNEL_NAMES = ("kernels", "kernel")  # preferred when a .mat file holds several variables


def _kernel_or_cells(value) -> bool:
    """Whether a .mat variable could be a kernel (a 2-D numeric array) or a cell array."""
    value = np.asarray(value)
    return value.dtype == object or (value.ndim == 2 and np.issubdtype(value.dtype, np.number))


def _pick_variable(path: Path, variables: dict[str, object]) -> tuple[str, object]:
    """The one variable of a .mat file that holds the kernel(s)."""
    if len(variables) == 1:
        return next(iter(variables.items()))
    candidates = {k: v for k, v in variables.items() if _kernel_or_cells(v)}
    named = [k for k in MAT_KERNEL_NAMES if k in candidates]
    if named:
        return named[0], candidates[named[0]]
    if len(candidates) == 1:
        return next(iter(candidates.items()))
    listed = ", ".join(variables) or "none"
    raise DataError(f"kernel file {path} holds {len(candidates)} candidate kernel variables ({listed}); keep "
                    f"exactly one 2-D array (or a cell array named 'kernels') in it")


def _read_mat_v5(path: Path) -> dict[str, object]:
    import scipy.io  # SciPy only when a .mat kernel is given
    from scipy.io.matlab import MatReadError

    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError, TypeError, IndexError, MatReadError) as err:
        # a truncated header makes SciPy index past the end of the file (IndexError)
        raise DataError(f"kernel file {path} is not a readable MATLAB .mat file ({err}); save it with "
                        f"`save(file, 'kernel', '-v7')` or as .npy") from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _h5_value(file, dataset):
    """A v7.3 dataset -> ndarray (transposed back to MATLAB's layout), or a list for a cell array."""
    import h5py

    matlab_class = dataset.attrs.get("MATLAB_class", b"")
    matlab_class = matlab_class.decode() if isinstance(matlab_class, bytes) else str(matlab_class)
    if dataset.dtype == h5py.ref_dtype or matlab_class == "cell":
        refs = np.asarray(dataset[()]).T  # MATLAB's (row, column) order of the cells
        return [_h5_value(file, file[ref]) for ref in refs.flatten(order="F")]
    if matlab_class in ("char", "logical") or dataset.attrs.get("MATLAB_empty", 0):
        return np.array(f"<MATLAB {matlab_class or 'empty'}>")  # not a kernel: reported as such
    return np.asarray(dataset[()]).T


def _read_mat_v73(path: Path) -> dict[str, object]:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            return {k: _h5_value(file, v) for k, v in file.items()
                    if not k.startswith("#") and isinstance(v, h5py.Dataset)}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"kernel file {path} is an HDF5 (MATLAB v7.3) file that cannot be read ({err}); "
                        f"save it again with `save(file, 'kernels', '-v7.3')` or as .npy") from None


def _read_mat(path: Path) -> tuple[str, object]:
    """(variable name, its value: an ndarray, or a list / object array for a cell array)."""
    import h5py

    variables = _read_mat_v73(path) if h5py.is_hdf5(path) else _read_mat_v5(path)
    if not variables:
        raise DataError(f"kernel file {path} holds no variables; save the kernel in it as a 2-D array")
    return _pick_variable(path, variables)


def _cells(value) -> list | None:
    """The entries of a cell array (MATLAB's column-major order), None for a plain array."""
    if isinstance(value, list):
        return value
    value = np.asarray(value)
    if value.dtype == object:
        return list(value.flatten(order="F"))
    return None


def read_kernel_arrays(path: Path) -> list[tuple[str, np.ndarray]]:
    """(where, array) for each kernel a file holds; `where` names it in error messages."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return [(f"kernel file {path}", np.load(path, allow_pickle=False))]
        except (ValueError, OSError) as err:
            raise DataError(f"kernel file {path} is not a readable .npy array ({err}); save it with "
                            f"numpy.save") from None
    if suffix == ".png":
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"kernel file {path} is not a readable PNG; save the kernel as a gray PNG")
        if image.ndim == 3 and image.shape[2] in (3, 4):
            raise DataError(f"kernel file {path} is a colour PNG; save the kernel as a gray (1-channel) PNG")
        return [(f"kernel file {path}", image)]
    name, value = _read_mat(path)
    cells = _cells(value)
    if cells is None:
        return [(f"kernel file {path}", np.asarray(value))]
    if not cells:
        raise DataError(f"kernel file {path}: the cell array {name!r} is empty; put at least one 2-D kernel "
                        f"in it")
    return [(f"kernel file {path}, cell {i + 1} of {name!r}", cell) for i, cell in enumerate(cells)]


def check_kernel(array, where: str) -> np.ndarray:
    """A 2-D, finite, non-negative array with a positive sum and sides <= MAX_KERNEL_SIZE ->
    normalised (k, k) float64, padded with zeros (right, bottom) to the smallest odd square."""
    array = np.asarray(array)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{where} holds a {array.ndim}-D {array.dtype} array of shape {array.shape}; a kernel "
                        f"is a 2-D non-negative numeric array")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.sum() <= 0:
        raise DataError(f"{where} has negative, non-finite or all-zero entries; a blur kernel is non-negative "
                        f"with a positive sum")
    h, w = array.shape
    if max(h, w) > MAX_KERNEL_SIZE:
        raise DataError(f"{where} is {h}x{w}; kernels up to {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE} are supported: "
                        f"crop its zero border or resize it")
    side = max(h, w) | 1  # the smallest odd square holding it; zeros go after the data
    return normalise(np.pad(array, ((0, side - h), (0, side - w))))


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in KERNEL_SUFFIXES:
        raise DataError(f"kernel file {path}: unsupported type; use {', '.join(KERNEL_SUFFIXES)}")


def load_kernels(path: str | os.PathLike) -> list[np.ndarray]:
    """Every kernel of a file (.npy, gray .png, .mat v5/v7.3 with one 2-D array or a cell array of
    them), each normalised (k, k) float64 as `check_kernel` makes it."""
    path = Path(path)
    _check_suffix(path)
    return [check_kernel(array, where) for where, array in read_kernel_arrays(path)]


def load_kernel(path: str | os.PathLike) -> np.ndarray:
    """A user's kernel file holding one kernel -> normalised (k, k) float64.

    Raises DataError naming the file unless it holds a 2-D, finite, non-negative array with a
    positive sum and sides of at most MAX_KERNEL_SIZE. Even or non-square kernels are padded with
    zeros (right, bottom) to the smallest odd square.
    """
    kernels = load_kernels(path)
    if len(kernels) != 1:
        raise DataError(f"kernel file {path} holds {len(kernels)} kernels (a cell array); load it with "
                        f"load_kernels, or pass its folder as --kernels")
    return kernels[0]


def load_kernel_folder(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """name -> kernel for every .npy/.png/.mat file in `folder` (sorted by name). A file holding one
    kernel gives its stem; a cell array of n kernels gives <stem>_01 .. <stem>_n."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"kernel folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in KERNEL_SUFFIXES)
    if not files:
        raise DataError(f"kernel folder {folder} holds no kernel files ({', '.join(KERNEL_SUFFIXES)})")
    out: dict[str, np.ndarray] = {}
    for path in files:
        kernels = load_kernels(path)
        if len(kernels) == 1:
            out[path.stem] = kernels[0]
        else:
            out.update({f"{path.stem}_{i + 1:02d}": k for i, k in enumerate(kernels)})
    return out
