"""DGUNet models: image (deblurring, deraining, denoising) and compressive-sensing variants."""

from dgunet.models.cs import CS_RATIOS, CSDGUNet, CSDGUNetPlus, num_measurements
from dgunet.models.image import DGUNet, DGUNetPlus
from dgunet.models.registry import (
    ARCHS,
    TASKS,
    VARIANTS,
    Variant,
    build_model,
    get_variant,
    normalize_arch,
    task_model,
)

__all__ = [
    "ARCHS", "CS_RATIOS", "CSDGUNet", "CSDGUNetPlus", "DGUNet", "DGUNetPlus", "TASKS", "VARIANTS",
    "Variant", "build_model", "get_variant", "normalize_arch", "num_measurements", "task_model",
]
