"""Compressive-sensing data (random Y crops; Y test images); implemented in dgunet.data."""

from dgunet.data.cs import CSCropDataset, load_y_image, studio_y  # noqa: F401
