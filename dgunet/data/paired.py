"""Paired (degraded input, clean target) image folders for deblurring, deraining, denoising.

Layout: `root/input/NAME.ext` and `root/target/NAME.ext`; files pair by NAME (the stem),
so the two sides may use different extensions and need not sort alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dgunet.data.augment import (
    DIHEDRAL_MODES,
    adjust_saturation,
    center_crop,
    dihedral,
    pad_to,
    random_crop,
    random_saturation_factor,
)
from dgunet.data.decode_cache import read_image_cached
from dgunet.data.io import list_images, read_image
from dgunet.errors import ConfigError, DataError

_SHOWN = 5  # unmatched names listed in an error message


def by_stem(files: list[Path]) -> dict[str, Path]:
    """Map stem -> file; two files with one stem (a.png, a.jpg) make pairing ambiguous."""
    mapping: dict[str, Path] = {}
    for path in files:
        if path.stem in mapping:
            raise DataError(
                f"{path.parent} holds both {mapping[path.stem].name} and {path.name}; keep one file per name"
            )
        mapping[path.stem] = path
    return mapping


def match_stems(
    inputs: list[Path], targets: list[Path]
) -> tuple[list[tuple[Path, Path]], list[str], list[str]]:
    """(pairs sorted by name, stems only among inputs, stems only among targets)."""
    ins, tgts = by_stem(inputs), by_stem(targets)
    pairs = [(ins[stem], tgts[stem]) for stem in sorted(ins.keys() & tgts.keys())]
    return pairs, sorted(ins.keys() - tgts.keys()), sorted(tgts.keys() - ins.keys())


def _examples(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def paired_files(
    root: str | os.PathLike, in_dir: str = "input", tgt_dir: str = "target"
) -> list[tuple[Path, Path]]:
    """All (input, target) pairs under `root`; DataError for anything missing or unmatched."""
    root = Path(root)
    folders = (root / in_dir, root / tgt_dir)
    for folder in folders:
        if not folder.is_dir():
            raise DataError(
                f"folder {folder} is missing; a paired data set needs {root}/{in_dir}/ "
                f"and {root}/{tgt_dir}/ (run `python -m dgunet data check` for the layout)"
            )
    inputs, targets = (list_images(folder) for folder in folders)
    if not inputs or not targets:
        empty = folders[0] if not inputs else folders[1]
        raise DataError(f"folder {empty} holds no images (png, jpg, jpeg, bmp, tif, tiff)")
    pairs, only_in, only_tgt = match_stems(inputs, targets)
    if only_in or only_tgt:
        raise DataError(
            f"files in {folders[0]} and {folders[1]} do not pair by name (extension ignored): "
            f"{len(only_in)} input(s) without target [{_examples(only_in)}], "
            f"{len(only_tgt)} target(s) without input [{_examples(only_tgt)}]; "
            "rename or remove them"
        )
    return pairs


class PairedImageDataset(Dataset):
    """Items are `(target, input, name)`: two (3, P, P) float tensors and the file stem.

    mode="train": reflect-pad to the patch, random crop, optional saturation (deblurring),
    one of the 9 published dihedral outcomes. mode="val": center crop to `patch_size`,
    or the full image when it is None or 0.

    Randomness: item `i` of epoch `e` draws from a generator seeded by (seed, e, i), so a
    run is the same for any number of workers. Call `set_epoch(e)` before each epoch
    (it reaches the workers because DataLoader copies the dataset when an epoch's
    iterator starts; do not combine it with persistent_workers=True).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        patch_size: int | None,
        mode: str = "train",
        saturation_aug: bool = False,
        length_multiplier: int = 1,
        in_dir: str = "input",
        tgt_dir: str = "target",
        seed: int = 1234,
        decode_cache: str | os.PathLike | None = None,
    ) -> None:
        if mode not in ("train", "val"):
            raise ConfigError(f"dataset mode must be 'train' or 'val', got {mode!r}")
        if mode == "train" and not patch_size:
            raise ConfigError("training needs a patch size (e.g. 256)")
        if length_multiplier < 1:
            raise ConfigError(f"length_multiplier must be >= 1, got {length_multiplier}")
        self.pairs = paired_files(root, in_dir, tgt_dir)
        self.patch_size = patch_size
        self.mode = mode
        self.saturation_aug = saturation_aug
        self.length_multiplier = length_multiplier
        self.seed = seed
        self.decode_cache = Path(decode_cache) if decode_cache else None  # dgunet.data.decode_cache
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs) * self.length_multiplier

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        inp_path, tgt_path = self.pairs[index % len(self.pairs)]
        if self.decode_cache is None:
            inp, tgt = read_image(inp_path), read_image(tgt_path)
        else:
            inp, tgt = (read_image_cached(p, self.decode_cache) for p in (inp_path, tgt_path))
        if inp.shape != tgt.shape:
            raise DataError(
                f"{inp_path} is {inp.shape[2]}x{inp.shape[1]} but {tgt_path} is "
                f"{tgt.shape[2]}x{tgt.shape[1]}; a pair must have one size"
            )
        return inp, tgt, tgt_path.stem

    def _train_view(
        self, inp: torch.Tensor, tgt: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inp, tgt = pad_to(inp, self.patch_size), pad_to(tgt, self.patch_size)
        factor = random_saturation_factor(rng) if self.saturation_aug else None
        inp, tgt = random_crop(inp, tgt, self.patch_size, rng)
        if factor is not None:
            # Published code adjusts the whole image before cropping; the operation is
            # per pixel, so adjusting only the crop gives the same patch, cheaper.
            inp, tgt = adjust_saturation(inp, factor), adjust_saturation(tgt, factor)
        mode = int(rng.integers(0, DIHEDRAL_MODES))
        return dihedral(inp, mode).contiguous(), dihedral(tgt, mode).contiguous()

    def _val_view(self, inp: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.patch_size:
            return inp, tgt
        inp, tgt = pad_to(inp, self.patch_size), pad_to(tgt, self.patch_size)
        return center_crop(inp, self.patch_size), center_crop(tgt, self.patch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        inp, tgt, name = self._load(index)
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, self.epoch, index])
            inp, tgt = self._train_view(inp, tgt, rng)
        else:
            inp, tgt = self._val_view(inp, tgt)
        return tgt, inp, name
