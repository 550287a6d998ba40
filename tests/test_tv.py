"""FISTA-TV (dgunet.baselines.tv), the classical compressive-sensing solver: the difference operators
against their definition, the ROF proximal map against scikit-image's independent implementation,
FISTA against the optimality of its problem, and the tuned solver against its start Phi^T y."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgunet import physics
from dgunet.baselines import tv_compressed_sensing
from dgunet.baselines.tv import div, grad, total_variation, tv_prox, tv_reconstruct
from dgunet.errors import ConfigError


def camera_crop(size: int = 64) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(skimage.data.camera()[200:200 + size, 200:200 + size] / 255.0)[None, None]


def test_div_is_minus_the_adjoint_of_grad_and_tv_is_its_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    p = torch.randn(2, 3, 2, 9, 11, generator=g, dtype=torch.float64)
    assert torch.allclose((grad(x) * p).sum(), -(x * div(p)).sum())
    d_down = np.diff(x.numpy(), axis=2, append=x.numpy()[:, :, -1:])  # 0 on the last row
    d_across = np.diff(x.numpy(), axis=3, append=x.numpy()[:, :, :, -1:])
    expected = np.sqrt(d_down**2 + d_across**2).reshape(2, -1).sum(axis=1)
    assert np.allclose(total_variation(x).numpy(), expected)


def test_tv_prox_equals_scikit_image_chambolle():
    from skimage.restoration import denoise_tv_chambolle

    clean = camera_crop()
    g = torch.Generator().manual_seed(1)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    ours, _dual = tv_prox(noisy, 0.1, steps=2000)
    theirs = denoise_tv_chambolle(noisy[0, 0].numpy(), weight=0.1, eps=1e-9, max_num_iter=4000)
    assert np.abs(ours[0, 0].numpy() - theirs).max() < 1e-3


def test_fista_solves_its_problem():
    """The result has a lower objective than its start and than small perturbations of itself."""
    clean = camera_crop(32)
    op = physics.CompressedSensing(0.25)
    y = op.A(clean)
    lam = 3e-3
    objective = lambda x: 0.5 * (op.A(x) - y).pow(2).sum() + lam * total_variation(x).sum()  # noqa: E731
    x = tv_reconstruct(y, op, lam, steps=300)
    assert objective(x) < objective(op.A_adjoint(y))
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        assert objective(x) <= objective(x + 1e-3 * torch.randn(x.shape, generator=g, dtype=x.dtype)) + 1e-9


def test_tuned_tv_recovers_far_more_than_the_start_and_names_untuned_ratios():
    clean = camera_crop(64).float()
    op = physics.CompressedSensing(0.25)
    y = op.A(clean)
    psnr = lambda x: float(-10 * torch.log10((x.clamp(0, 1) - clean).pow(2).mean()))  # noqa: E731
    assert psnr(tv_compressed_sensing(y, op)) > psnr(op.A_adjoint(y)) + 10
    assert tv_compressed_sensing(y, op).dtype == y.dtype
    with pytest.raises(ConfigError, match="tuned for CS ratios"):
        tv_compressed_sensing(physics.CompressedSensing(0.04).A(clean), physics.CompressedSensing(0.04))
