"""DGUNet: Deep Generalized Unfolding Networks for image restoration (CVPR 2022).

The names most scripts need are importable from the top level:
`build_model`, `load_weights`, `restore`, `read_image`, `save_png_atomic`.
They are resolved lazily so that `import dgunet` stays cheap.
"""

from __future__ import annotations

import importlib

from dgunet.errors import CheckpointError, ConfigError, DataError, DGUNetError

__version__ = "1.0.0"

_LAZY = {
    "build_model": "dgunet.models",
    "load_weights": "dgunet.checkpoint",
    "restore": "dgunet.inference",
    "read_image": "dgunet.data.io",
    "save_png_atomic": "dgunet.data.io",
}

_SUBMODULES = ("physics",)  # `dgunet.physics` without importing it up front

__all__ = ["CheckpointError", "ConfigError", "DataError", "DGUNetError", "__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"dgunet.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dgunet' has no attribute {name!r}")
