"""Synthetic known-operator data: reproducible per (seed, epoch, index), y = A(x) + noise exactly,
operators rebuilt from a batch, and one-line errors for bad folders and configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _engine_helpers import crops, write_rgb
from torch.utils.data import default_collate

from dgunet.config import load_config
from dgunet.data.synthetic import DegradeSpec, SyntheticDataset, build_operator
from dgunet.engine.data import split_batch, train_set, val_set
from dgunet.errors import ConfigError, DataError

SPECS = {
    "blur": DegradeSpec("blur", kernel_size=15),
    "sr_bicubic": DegradeSpec("sr", scale=2, sigma_range=(0.0, 0.0)),
    "sr_blur": DegradeSpec("sr", scale=3, sr_kernel="blur", kernel_size=9, kernels=("gaussian_aniso",)),
    "noise": DegradeSpec("noise", sigma_range=(0.05, 0.1)),
}


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    for i, img in enumerate(crops(3, 52, seed=4)):
        write_rgb(root / f"img{i}.png", img)
    return root


def patch_for(spec: DegradeSpec) -> int:
    return 24 if spec.scale == 3 else 32


@pytest.mark.parametrize("name", list(SPECS))
def test_same_seed_epoch_index_gives_the_same_sample(clean_dir, name):
    spec = SPECS[name]
    first, second = (SyntheticDataset(clean_dir, spec, patch_for(spec), seed=7) for _ in range(2))
    first.set_epoch(5)
    second.set_epoch(5)
    a, b = first[2], second[2]  # two instances, as a resumed run or another rank would build them
    for x, y in zip(a[:2], b[:2], strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a[3]["kernel"], b[3]["kernel"]) and torch.equal(a[3]["sigma"], b[3]["sigma"])
    second.set_epoch(6)
    assert not torch.equal(second[2][1], a[1])


@pytest.mark.parametrize("name", list(SPECS))
def test_measurement_is_the_operator_applied_to_the_target_plus_noise_of_sigma(clean_dir, name):
    spec = SPECS[name]
    ds = SyntheticDataset(clean_dir, spec, patch_for(spec), seed=1)
    target, y, _name, params = ds[0]
    assert target.shape == (3, patch_for(spec), patch_for(spec))
    assert y.shape[-1] == patch_for(spec) // spec.scale
    assert abs(float(params["kernel"].sum()) - 1) < 1e-5 and float(params["kernel"].min()) >= 0
    op = build_operator(spec, params["kernel"][None], params["sigma"][None])
    residual = y - op.A(target[None])[0]
    sigma = float(params["sigma"])
    if sigma == 0:
        assert torch.equal(residual, torch.zeros_like(residual))
    else:
        assert abs(float(residual.std()) / sigma - 1) < 0.2
    assert torch.equal(op.noise_model.sigma, params["sigma"][None])


def test_validation_items_are_fixed_and_whole_images_fit_the_scale(clean_dir):
    spec = SPECS["sr_blur"]
    val = SyntheticDataset(clean_dir, spec, 0, mode="val", seed=1)
    target, y, _, params = val[1]
    assert target.shape[-2:] == (48, 48)  # 52 cut to a multiple of lcm(8, 3) = 24
    assert y.shape[-2:] == (16, 16)
    val.set_epoch(9)
    assert torch.equal(val[1][1], y)
    assert float(params["sigma"]) == pytest.approx(spec.val_sigma)


def test_split_batch_builds_the_batch_operator_from_its_kernels(clean_dir):
    spec = DegradeSpec("blur", kernel_size=15, sigma_range=(0.0, 0.0))
    ds = SyntheticDataset(clean_dir, spec, 32, seed=3)
    batch = default_collate([ds[i] for i in range(3)])
    inp, target, op = split_batch(batch, "deblurring", lambda x: x, spec)
    assert torch.allclose(op.A(target), inp, atol=1e-6)  # one kernel per sample
    assert not torch.allclose(op.A(target[[1, 0, 2]]), inp[[1, 0, 2]], atol=1e-3)
    published = split_batch(batch[:3], "deblurring")
    assert published[2] is None and published[0] is batch[1]


def tiny_cfg(clean_dir, *opts):
    return load_config(None, opts=["MODEL.TASK", "sr", "DEGRADE.KIND", "sr", "TRAIN.PATCH_SIZE", "32",
                                   "VAL.CROP", "0", "DATA.TRAIN_DIR", str(clean_dir),
                                   "DATA.VAL_DIR", str(clean_dir), *opts])


def test_engine_data_sets_follow_the_degrade_section(clean_dir):
    cfg = tiny_cfg(clean_dir)
    train, val = train_set(cfg), val_set(cfg)
    assert isinstance(train, SyntheticDataset) and train.spec.scale == 2
    assert val.mode == "val" and val[0][0].shape[-1] % 8 == 0


def test_folder_without_images_names_it(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no readable images") as err:
        SyntheticDataset(tmp_path, SPECS["noise"], 32)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("opts, message", [
    (["DEGRADE.SCALE", "5"], "DEGRADE.SCALE = 5"),
    (["DEGRADE.SCALE", "3"], "TRAIN.PATCH_SIZE = 32 must be a multiple of 24"),
    (["DEGRADE.KERNELS", "[zigzag]"], "DEGRADE.KERNELS"),
    (["DEGRADE.SIGMA_RANGE", "[0.1, 0.0]"], "DEGRADE.SIGMA_RANGE"),
    (["DEGRADE.KIND", "blur"], "set DEGRADE.KIND sr"),
    (["DEGRADE.KIND", ""], "set DEGRADE.KIND sr"),
    (["DATA.MIXUP_FROM_EPOCH", "3"], "MixUp"),
])
def test_bad_degrade_configs_name_the_key(clean_dir, opts, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        tiny_cfg(clean_dir, *opts)


def test_known_gradient_without_an_operator_is_refused():
    with pytest.raises(ConfigError, match="needs a known operator"):
        load_config(None, opts=["MODEL.GRADIENT", "known"])


def test_noise_draws_cover_the_range(clean_dir):
    ds = SyntheticDataset(clean_dir, SPECS["noise"], 32, seed=2, length_multiplier=10)
    sigmas = np.array([float(ds[i][3]["sigma"]) for i in range(30)])
    assert sigmas.min() >= 0.05 and sigmas.max() <= 0.1 and np.ptp(sigmas) > 0.02
