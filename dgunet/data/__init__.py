"""Data sets, image I/O and augmentation for DGUNet training and testing."""

from dgunet.data.augment import adjust_saturation, center_crop, dihedral, pad_to, random_crop
from dgunet.data.check import FolderReport, check_dataset
from dgunet.data.cs import CSCropDataset, load_y_image, studio_y
from dgunet.data.io import list_images, read_image, save_png_atomic, to_uint8
from dgunet.data.paired import PairedImageDataset, paired_files
from dgunet.data.seeding import seed_everything, seed_worker
from dgunet.data.sidd import generate_sidd_patches

__all__ = [
    "CSCropDataset",
    "FolderReport",
    "PairedImageDataset",
    "adjust_saturation",
    "center_crop",
    "check_dataset",
    "dihedral",
    "generate_sidd_patches",
    "list_images",
    "load_y_image",
    "pad_to",
    "paired_files",
    "random_crop",
    "read_image",
    "save_png_atomic",
    "seed_everything",
    "seed_worker",
    "studio_y",
    "to_uint8",
]
