"""Reading MATLAB .mat variables in either format, and writing .mat files atomically.

MATLAB v7.3 files are HDF5. MATLAB stores arrays column-major and HDF5 row-major, so an
M1 x M2 x ... x Mn MATLAB array appears in h5py with its axes reversed (Mn x ... x M1). Reversing
the axes once (a full transpose) gives exactly the array scipy.io.loadmat returns for the older
formats, so every caller here sees MATLAB's axis order whatever the file format.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from dgunet.atomic import atomic_open
from dgunet.errors import DataError


def _hdf5_variable(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if name not in f:
            names = ", ".join(k for k in f if not k.startswith("#")) or "none"
            raise DataError(f"{path} has no variable {name!r} (it holds: {names})")
        node = f[name]
        if not isinstance(node, h5py.Dataset):
            raise DataError(f"{path}: {name!r} is a MATLAB struct or cell, expected a numeric array")
        return np.transpose(node[()])


def _v5_variable(path: Path, name: str) -> np.ndarray:
    try:
        names = [entry[0] for entry in scipy.io.whosmat(str(path))]
    except (ValueError, TypeError, OSError) as err:
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {err}") from None
    if name not in names:
        raise DataError(f"{path} has no variable {name!r} (it holds: {', '.join(names) or 'none'})")
    return scipy.io.loadmat(str(path), variable_names=[name])[name]


def load_mat_variable(path: str | Path, name: str) -> np.ndarray:
    """Variable `name` of a .mat file (v7.3/HDF5 or older) in MATLAB's axis order.

    Raises DataError naming the file when it is missing, unreadable or lacks the variable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if h5py.is_hdf5(str(path)):
        return _hdf5_variable(path, name)
    return _v5_variable(path, name)


def savemat_atomic(path: str | Path, variables: dict) -> Path:
    """scipy.io.savemat (MATLAB v5 format) into a temporary file, then rename it into place.

    A crash leaves either the old file or none, never a truncated .mat that MATLAB or the
    benchmark server would choke on.
    """
    with atomic_open(path, "wb") as f:
        scipy.io.savemat(f, variables)
    return Path(path)
