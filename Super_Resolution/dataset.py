"""This task's data: clean images, degraded on the fly by a known operator; implemented in dgunet.data."""

from dgunet.data.synthetic import DegradeSpec, SyntheticDataset, build_operator, clean_images  # noqa: F401
