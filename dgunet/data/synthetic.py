"""Synthetic known-operator training data: clean images degraded on the fly (docs/known_tasks.md).

Kinds (config section DEGRADE):
  blur   y = k * x + n      k: motion / Gaussian kernel per sample, circular or reflect boundary
  sr     y = D_s(x) + n     D_s: MATLAB-bicubic downsampling by s, or blur by a drawn k then keep
                            every s-th pixel ("blur" SR kernel, the classical degradation)
  noise  y = x + n          n ~ N(0, sigma^2), sigma drawn per sample (known to the model)

An item is `(target (3,P,P), y, name, params)`, params = {"kernel": (K,K) float32 (a centred delta
when the kind has none), "sigma": () float32}. The engine rebuilds each batch's operator on its
device from `params` with `build_operator` (a batched operator, one kernel and sigma per sample), so
the model sees exactly the operator that made y.

Randomness: item i of epoch e draws crop, flip/rotation, kernel, sigma and noise from a generator
seeded by (seed, e, i): resume and DDP see the same samples. Validation items use the epoch
slot VAL_EPOCH, so every validation sees the same degraded images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dgunet.data.augment import DIHEDRAL_MODES, center_crop, dihedral, pad_to, random_crop
from dgunet.data.io import list_images, read_image
from dgunet.data.kernels import pad_kernel, random_kernel
from dgunet.errors import ConfigError, DataError
from dgunet.tasks import patch_multiple

VAL_EPOCH = 2**31 - 1  # the generator slot of validation items: no training epoch reaches it


@dataclass(frozen=True)
class DegradeSpec:
    """The DEGRADE config section as plain values."""

    kind: str  # blur | sr | noise
    kernels: tuple[str, ...] = ("motion", "gaussian_iso", "gaussian_aniso")
    kernel_size: int = 25
    kernel_sigma_range: tuple[float, float] = (0.5, 3.0)
    padding: str = "circular"
    sigma_range: tuple[float, float] = (0.0, 0.03)
    val_sigma: float = 0.01
    scale: int = 1
    sr_kernel: str = "bicubic"

    @classmethod
    def from_cfg(cls, cfg) -> DegradeSpec | None:
        """None for the published paired tasks (DEGRADE.KIND empty)."""
        g = cfg.DEGRADE
        if not g.KIND:
            return None
        return cls(g.KIND, tuple(g.KERNELS), g.KERNEL_SIZE, tuple(g.KERNEL_SIGMA_RANGE), g.PADDING,
                   tuple(g.SIGMA_RANGE), g.VAL_SIGMA, g.SCALE if g.KIND == "sr" else 1, g.SR_KERNEL)

    @property
    def uses_kernel(self) -> bool:
        return self.kind == "blur" or (self.kind == "sr" and self.sr_kernel == "blur")

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this: the U-Net's 8 and the scale (dgunet.tasks.patch_multiple)."""
        return patch_multiple(self.scale)


def delta_kernel(size: int) -> np.ndarray:
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    return kernel


def draw_params(spec: DegradeSpec, rng: np.random.Generator,
                sigma: float | None = None) -> tuple[np.ndarray, float]:
    """(kernel (K,K), sigma) of one sample; `sigma` fixes the noise level instead of drawing it."""
    if spec.uses_kernel:
        kernel = pad_kernel(random_kernel(rng, list(spec.kernels), spec.kernel_size, spec.kernel_sigma_range),
                            spec.kernel_size)
    else:
        kernel = delta_kernel(spec.kernel_size)
    if sigma is None:
        sigma = rng.uniform(*spec.sigma_range)
    return kernel, float(np.float32(sigma))  # the float32 value the operator will hold


def build_operator(spec: DegradeSpec, kernels: Tensor, sigma: Tensor, validate: bool = False):
    """The batched known operator: kernels (B,K,K) or (B,1,K,K), sigma (B,), both on the target device.

    Its noise model is GaussianNoise(sigma), so a model that uses sigma finds it at op.noise_model.sigma.
    validate=False (the engine's per-batch call): the kernels and sigmas were drawn here and checked on
    the CPU when `degrade` made y, so their values are not read again (on a GPU each read is a host sync).
    """
    from dgunet import physics  # imported on use: the published tasks never need the operators

    if kernels.dim() == 3:
        kernels = kernels[:, None]
    noise = physics.GaussianNoise(sigma, validate=validate)
    if spec.kind == "blur":
        return physics.Blur(kernels, padding=spec.padding, noise_model=noise, validate=validate)
    if spec.kind == "sr":
        if spec.sr_kernel == "bicubic":
            return physics.Downsample(spec.scale, kernel="bicubic", noise_model=noise)
        return physics.Downsample(spec.scale, kernel=kernels, padding=spec.padding, noise_model=noise,
                                  validate=validate)
    return physics.Identity(noise_model=noise)


def degrade(spec: DegradeSpec, clean: Tensor, kernel: np.ndarray, sigma: float,
            rng: np.random.Generator) -> Tensor:
    """One clean (C,H,W) image -> y = A(clean) + sigma * n, n drawn from `rng` (float32)."""
    op = build_operator(spec, torch.from_numpy(kernel).float()[None], torch.tensor([sigma]), validate=True)
    with torch.no_grad():
        y = op.A(clean[None].float())[0]
    if sigma > 0:
        y = y + sigma * torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32))
    return y.contiguous()


def clean_images(root: str | os.PathLike) -> list[Path]:
    """The clean images of a folder (directly in it, or in its target/ when it is a paired set)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"clean-image folder {root} does not exist; DEGRADE.KIND trains on a folder of clean "
                        f"images (any size, any count)")
    files = list_images(root) or (list_images(root / "target") if (root / "target").is_dir() else [])
    if not files:
        raise DataError(f"folder {root} holds no readable images (png, jpg, jpeg, bmp, tif, tiff); put the "
                        f"clean images directly in it (or in {root}/target/)")
    return files


def crop_to_multiple(img: Tensor, multiple: int) -> Tensor:
    """Centre crop (C,H,W) so that both sides are multiples of `multiple` (no padding: it would
    change the operator)."""
    h, w = img.shape[-2:]
    if h < multiple or w < multiple:
        raise DataError(f"an image of {h}x{w} is smaller than {multiple}x{multiple}, the smallest side this "
                        f"degradation allows")
    return center_crop(img, (h - h % multiple, w - w % multiple))


class SyntheticDataset(Dataset):
    """Clean images degraded per `spec`. Items: (target (3,P,P), y, name, {"kernel", "sigma"}).

    mode "train": reflect-pad to the patch, random crop, one of the 9 published dihedral outcomes,
    then a drawn degradation. mode "val": centre crop to `patch_size` (padding first when smaller),
    or the whole image cut to a multiple of `spec.multiple` when patch_size is 0/None; the noise
    level is `spec.val_sigma`. Call `set_epoch(e)` before each epoch (see PairedImageDataset).
    """

    def __init__(self, root: str | os.PathLike, spec: DegradeSpec, patch_size: int | None, mode: str = "train",
                 seed: int = 1234, length_multiplier: int = 1) -> None:
        if mode not in ("train", "val"):
            raise ConfigError(f"dataset mode must be 'train' or 'val', got {mode!r}")
        if mode == "train" and not patch_size:
            raise ConfigError("training needs a patch size (e.g. 128)")
        if patch_size and patch_size % spec.multiple:
            raise ConfigError(f"patch size {patch_size} must be a multiple of {spec.multiple}")
        self.files = clean_images(root)
        self.spec, self.patch_size, self.mode = spec, patch_size, mode
        self.seed, self.length_multiplier, self.epoch = seed, length_multiplier, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files) * self.length_multiplier

    def _view(self, clean: Tensor, rng: np.random.Generator) -> Tensor:
        if self.mode == "val":
            if not self.patch_size:
                return crop_to_multiple(clean, self.spec.multiple)
            return center_crop(pad_to(clean, self.patch_size), self.patch_size)
        clean = pad_to(clean, self.patch_size)
        clean, _ = random_crop(clean, clean, self.patch_size, rng)
        return dihedral(clean, int(rng.integers(0, DIHEDRAL_MODES))).contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str, dict[str, Tensor]]:
        path = self.files[index % len(self.files)]
        epoch = self.epoch if self.mode == "train" else VAL_EPOCH
        rng = np.random.default_rng([self.seed, epoch, index])
        clean = self._view(read_image(path), rng)
        kernel, sigma = draw_params(self.spec, rng, None if self.mode == "train" else self.spec.val_sigma)
        y = degrade(self.spec, clean, kernel, sigma, rng)
        params = {"kernel": torch.from_numpy(kernel).float(), "sigma": torch.tensor(sigma, dtype=torch.float32)}
        return clean, y, path.stem, params
