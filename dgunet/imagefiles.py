"""Which files are images: one list of extensions for training, testing and scoring.

Kept free of torch and OpenCV so that `evaluate` (which scores in worker processes) can use it
without importing the data package.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    """True when `path` ends in one of IMAGE_EXTENSIONS, in any case (a.PNG is an image)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS
