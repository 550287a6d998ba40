"""DGUNet: Deep Generalized Unfolding Networks for image restoration (CVPR 2022)."""

from dgunet.errors import CheckpointError, ConfigError, DataError, DGUNetError

__version__ = "1.0.0"
__all__ = ["CheckpointError", "ConfigError", "DataError", "DGUNetError", "__version__"]
