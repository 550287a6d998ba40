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

MAX_KERNEL_SIZE = 25
KERNEL_SUFFIXES = (".npy", ".png", ".mat")


def normalise(kernel: np.ndarray) -> np.ndarray:
    """kernel / kernel.sum() as float64; the sum must be positive."""
    kernel = np.asarray(kernel, dtype=np.float64)
    return kernel / kernel.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0) -> np.ndarray:
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
        return gaussian_kernel(size, sx)
    sy = float(rng.uniform(*sigma_range))
    return gaussian_kernel(size, sx, sy, float(rng.uniform(0, math.pi)))


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


def motion_kernel(rng: np.random.Generator, size: int = MAX_KERNEL_SIZE,
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


def pad_kernel(kernel: np.ndarray, size: int = MAX_KERNEL_SIZE) -> np.ndarray:
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

def _read_mat(path: Path) -> np.ndarray:
    import scipy.io  # SciPy only when a .mat kernel is given

    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError) as err:
        raise DataError(f"kernel file {path} is not a readable MATLAB .mat file ({err}); save it with "
                        f"`save(file, 'kernel', '-v7')` or as .npy") from None
    arrays = [v for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)]
    if len(arrays) != 1:
        raise DataError(f"kernel file {path} holds {len(arrays)} variables; keep exactly one 2-D array in it")
    return arrays[0]


def read_kernel_array(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"kernel file {path} is not a readable .npy array ({err}); save it with "
                            f"numpy.save") from None
    if path.suffix.lower() == ".png":
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"kernel file {path} is not a readable PNG; save the kernel as a gray PNG")
        return image
    return _read_mat(path)


def load_kernel(path: str | os.PathLike) -> np.ndarray:
    """A user's kernel file (.npy, .png gray, .mat with one variable) -> normalised (k, k) float64.

    Raises DataError naming the file unless it holds a 2-D, finite, non-negative array with a
    positive sum and sides of at most MAX_KERNEL_SIZE. Even or non-square kernels are padded with
    zeros (right, bottom) to the smallest odd square.
    """
    path = Path(path)
    if path.suffix.lower() not in KERNEL_SUFFIXES:
        raise DataError(f"kernel file {path}: unsupported type; use {', '.join(KERNEL_SUFFIXES)}")
    array = np.asarray(read_kernel_array(path))
    if array.ndim == 3 and path.suffix.lower() == ".png" and array.shape[2] in (3, 4):
        raise DataError(f"kernel file {path} is a colour PNG; save the kernel as a gray (1-channel) PNG")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"kernel file {path} holds a {array.ndim}-D {array.dtype} array of shape "
                        f"{array.shape}; a kernel is a 2-D numeric array")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.sum() <= 0:
        raise DataError(f"kernel file {path} has negative, non-finite or all-zero entries; a blur kernel "
                        f"is non-negative with a positive sum")
    h, w = array.shape
    if max(h, w) > MAX_KERNEL_SIZE:
        raise DataError(f"kernel file {path} is {h}x{w}; kernels up to {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE} are "
                        f"supported: crop its zero border or resize it")
    side = max(h, w) | 1  # the smallest odd square holding it; zeros go after the data
    return normalise(np.pad(array, ((0, side - h), (0, side - w))))


def load_kernel_folder(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """stem -> kernel for every .npy/.png/.mat file in `folder` (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"kernel folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in KERNEL_SUFFIXES)
    if not files:
        raise DataError(f"kernel folder {folder} holds no kernel files ({', '.join(KERNEL_SUFFIXES)})")
    return {p.stem: load_kernel(p) for p in files}
