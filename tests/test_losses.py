"""Losses and MixUp of the published training scripts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from dgunet.errors import ConfigError
from dgunet.losses import (
    CharbonnierLoss,
    EdgeLoss,
    edge_loss_kernel,
    laplacian,
    mixup,
    stage_loss,
)


def astronaut_crop(size: int = 32) -> torch.Tensor:
    """(1, 3, size, size) float crop of a real photo."""
    img = data.astronaut()[100 : 100 + size, 180 : 180 + size]
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_charbonnier_known_values():
    x = torch.tensor([0.0, 0.0, 1.0, 0.5])
    y = torch.tensor([0.0, 3e-3, 0.0, 0.5])
    eps = 1e-3
    want = (eps + math.sqrt(9e-6 + 1e-6) + math.sqrt(1 + 1e-6) + eps) / 4
    assert CharbonnierLoss(eps)(x, y).item() == pytest.approx(want, rel=1e-6)
    assert CharbonnierLoss(eps=0.1)(x, x).item() == pytest.approx(0.1)


def test_edge_loss_kernel_is_the_published_outer_product():
    k = edge_loss_kernel(torch.float64)
    assert k.shape == (5, 5)
    assert k.sum().item() == pytest.approx(1.0)
    assert k[2, 2].item() == pytest.approx(0.16)
    assert k[0, 1].item() == pytest.approx(0.05 * 0.25)


def test_edge_loss_zero_for_identical_positive_otherwise():
    x = astronaut_crop()
    loss = EdgeLoss()
    # Identical images leave only the eps floor of the Charbonnier.
    assert loss(x, x).item() == pytest.approx(1e-3, rel=1e-5)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert loss(x, noisy).item() > 1e-2
    # A brightness offset has no band-pass content away from the border, so it costs
    # much less than noise of the same size.
    assert loss(x, x + 0.05).item() < loss(x, noisy).item()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_laplacian_of_constant_vanishes_away_from_border(channels):
    const = torch.full((2, channels, 13, 12), 0.7, dtype=torch.float64)
    band = laplacian(const)
    assert band.shape == const.shape
    assert band[..., 2:-2, 2:-2].abs().max().item() < 1e-12
    # Replicate padding copies the zeros of `up` outwards: the rim is not zero.
    assert band[..., 0, :].abs().min().item() > 1e-3
    assert band[..., :, -1].abs().min().item() > 1e-3


def test_laplacian_works_per_channel():
    x = astronaut_crop()
    together = laplacian(x)
    for c in range(3):
        alone = laplacian(x[:, c : c + 1])
        assert torch.allclose(together[:, c : c + 1], alone, atol=1e-6)


def test_mixup_reproducible_and_consistent():
    gen = torch.Generator().manual_seed(7)
    inp = torch.rand(6, 3, 4, 4, generator=gen)
    tgt = inp * 0.5 + 0.25  # an affine relation that a shared lam/perm must keep
    a_in, a_tgt = mixup(inp, tgt, torch.Generator().manual_seed(3))
    b_in, b_tgt = mixup(inp, tgt, torch.Generator().manual_seed(3))
    assert torch.equal(a_in, b_in) and torch.equal(a_tgt, b_tgt)
    assert torch.allclose(a_tgt, a_in * 0.5 + 0.25, atol=1e-6)
    assert not torch.allclose(a_in, inp)
    c_in, _ = mixup(inp, tgt, torch.Generator().manual_seed(4))
    assert not torch.allclose(a_in, c_in)


def test_mixup_is_a_convex_combination_with_one_permutation():
    batch = 5
    # Sample i is the constant image i: each output is lam*i + (1-lam)*perm[i].
    inp = torch.arange(batch, dtype=torch.float64).view(-1, 1, 1, 1).expand(batch, 1, 2, 2)
    out, _ = mixup(inp.clone(), inp.clone(), torch.Generator().manual_seed(11))
    assert torch.all(out >= 0) and torch.all(out <= batch - 1)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))
    # Replaying the generator gives the same lam and permutation that mixup used.
    gen = torch.Generator().manual_seed(11)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
    lam = np.random.default_rng(seed).beta(0.6, 0.6, size=batch)
    perm = torch.randperm(batch, generator=gen).numpy()
    want = lam * np.arange(batch) + (1 - lam) * perm
    assert np.allclose(out[:, 0, 0, 0].numpy(), want)


def test_stage_loss_per_task():
    target = astronaut_crop(16)
    outs = [target + 0.1 * k for k in range(7)]
    char = sum(CharbonnierLoss()(o, target) for o in outs)
    edge = sum(EdgeLoss()(o, target) for o in outs)
    assert stage_loss(outs, target, "deblurring").item() == pytest.approx((char + 0.05 * edge).item(), rel=1e-6)
    assert stage_loss(outs, target, "deraining", edge_weight=0.0).item() == pytest.approx(char.item(), rel=1e-6)
    clamped = sum(CharbonnierLoss()(o.clamp(0, 1), target) for o in outs)
    assert stage_loss(outs, target, "denoising").item() == pytest.approx(clamped.item(), rel=1e-6)
    assert stage_loss(outs, target, "denoising").item() < char.item()
    gray = target[:, :1]
    mse = sum(((o[:, :1].clamp(0, 1) - gray) ** 2).mean() for o in outs)
    got = stage_loss([o[:, :1] for o in outs], gray, "cs").item()
    assert got == pytest.approx(mse.item(), rel=1e-6)


def test_stage_loss_backpropagates_and_rejects_unknown_task():
    target = astronaut_crop(8)
    out = torch.zeros_like(target, requires_grad=True)
    stage_loss([out, out * 2], target, "deraining").backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="deblurring"):
        stage_loss([out], target, "superres")
