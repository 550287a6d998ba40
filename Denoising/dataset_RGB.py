"""This task's paired data (input/ + target/ matched by name); implemented in dgunet.data."""

from dgunet.data.paired import PairedImageDataset, paired_files  # noqa: F401
