"""Data consistency: `project(z, y)`, the nearest image to z with A x = y, and the model option that
ends the forward with it (MODEL.DATA_CONSISTENCY, dgunet.models.image.DATA_CONSISTENCY)."""

from __future__ import annotations

import pytest
import torch

from dgunet import physics
from dgunet.config import defaults, model_arguments, validate
from dgunet.errors import ConfigError, PhysicsError
from dgunet.models import build_model
from dgunet.physics.base import project
from dgunet.testrun.known import PaddedOperator
from dgunet.testrun.loading import load_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def dense(op, shape) -> torch.Tensor:
    """A as a dense (m, n) float64 matrix, column j = A(e_j): independent of how A is implemented."""
    n = int(torch.tensor(shape).prod())
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:])
    return torch.stack([op.A(basis[j:j + 1].float()).double().reshape(-1) for j in range(n)], dim=1)


@pytest.mark.parametrize("factor,size", [(2, (10, 6)), (3, (9, 12)), (4, (8, 12))])
def test_bicubic_projection_is_the_least_squares_formula(factor, size):
    """z + A^+(y - A z) with A^+ from torch.linalg.pinv of the dense matrix of A."""
    op = physics.Downsample(factor)
    shape = (1, 1, *size)
    matrix = dense(op, shape)
    gen = torch.Generator().manual_seed(factor)
    z, x = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    y = op.A(x)
    z64, y64 = z.double().reshape(-1), y.double().reshape(-1)
    want = z64 + torch.linalg.pinv(matrix) @ (y64 - matrix @ z64)
    got = op.project(z, y)
    assert torch.allclose(got.double().reshape(-1), want, atol=1e-5)
    assert (op.A(got) - y).abs().max() < 1e-5  # consistent
    assert (op.project(got, y) - got).abs().max() < 1e-5  # idempotent


def test_the_projection_is_never_farther_from_a_consistent_image():
    """Pythagoras: for any z and any x with A x = y, ||P z - x|| <= ||z - x||, in every sample."""
    op = physics.Downsample(4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 24, generator=gen)
    y = op.A(x)
    for spread in (0.01, 0.1, 1.0):
        z = x + spread * torch.randn(x.shape, generator=gen)
        err_before = (z - x).flatten(1).norm(dim=1)
        err_after = (op.project(z, y) - x).flatten(1).norm(dim=1)
        assert bool((err_after <= err_before + 1e-5).all())
        assert bool((err_after < err_before).all())  # strictly: z's range part was wrong


def test_identity_and_inpainting_projections():
    gen = torch.Generator().manual_seed(1)
    z, x = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
    assert torch.equal(physics.Identity().project(z, x), x)
    draw = torch.rand(1, 1, 8, 8, generator=gen)
    mask = (draw > 0.3).float() * 0.5 + (draw > 0.7).float() * 0.5  # missing, soft (0.5) and kept pixels
    op = physics.Inpainting(mask)
    got = op.project(z, op.A(x))
    assert torch.allclose(op.A(got), op.A(x), atol=1e-6)
    assert torch.equal(got[:, :, mask[0, 0] == 0], z[:, :, mask[0, 0] == 0])  # missing pixels stay z


def test_a_padded_operator_projects_the_crop_and_keeps_the_padding():
    op = physics.Downsample(3)
    x = torch.rand(1, 3, 27, 33)
    padded = PaddedOperator(op, (27, 33), 8)
    z = torch.rand(1, 3, 32, 40)
    got = padded.project(z, op.A(x))
    assert got.shape == z.shape
    assert (padded.A(got) - op.A(x)).abs().max() < 1e-5
    assert torch.equal(got[..., 27:, :], z[..., 27:, :]) and torch.equal(got[..., :, 33:], z[..., :, 33:])


@pytest.mark.parametrize("op", [physics.Blur(torch.ones(3, 3) / 9), physics.Downsample(2, kernel="gaussian")])
def test_operators_without_an_exact_projection_say_so_in_one_line(op):
    z = torch.rand(1, 3, 16, 16)
    with pytest.raises(PhysicsError) as err:
        project(op, z, op.A(z))
    assert "\n" not in str(err.value) and "DATA_CONSISTENCY" in str(err.value)


def test_the_model_output_is_projected_and_the_stages_are_not():
    torch.manual_seed(0)
    options = {"gradient": "known", "head": "stages", **SMALL}
    plain = build_model("sr", "DGUNet", **options).eval()
    consistent = build_model("sr", "DGUNet", data_consistency=True, **options).eval()
    consistent.load_state_dict(plain.state_dict())  # no new keys
    assert set(plain.state_dict()) == set(consistent.state_dict())
    op = physics.Downsample(4)
    y = op.A(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        before, after = plain(y, physics=op), consistent(y, physics=op)
    for a, b in zip(before[1:], after[1:], strict=True):
        assert torch.equal(a, b)
    assert torch.allclose(after[0], op.project(before[0], y), atol=1e-6)
    assert (op.A(after[0]) - y).abs().max() < 1e-5
    assert (op.A(before[0]) - y).abs().max() > 1e-3  # so the test above could fail
    consistent.train()  # training never goes through it (measured: a run trained so ended lower)
    with torch.no_grad():
        assert torch.equal(consistent(y, physics=op)[0], plain.train()(y, physics=op)[0])


def test_noisy_operators_and_blind_models_are_refused():
    model = build_model("sr", "DGUNet", gradient="known", data_consistency=True, **SMALL)
    op = physics.Downsample(2, noise_model=physics.GaussianNoise(0.01))
    model.eval()
    with pytest.raises(PhysicsError, match="noiseless"):
        model(op.A(torch.rand(1, 3, 16, 16)), physics=op)
    with pytest.raises(ConfigError, match="known"):
        build_model("sr", "DGUNet", data_consistency=True, **SMALL)


def sr_config(**changes):
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.GRADIENT, cfg.DEGRADE.KIND = "sr", "known", "sr"
    cfg.MODEL.DATA_CONSISTENCY, cfg.DEGRADE.SIGMA_RANGE = True, [0.0, 0.0]
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


@pytest.mark.parametrize("changes,needle", [
    ({"DEGRADE__SIGMA_RANGE": [0.0, 0.01]}, "noiseless"),
    ({"DEGRADE__SR_KERNEL": "blur"}, "bicubic"),
    ({"MODEL__GRADIENT": "learned"}, "MODEL.GRADIENT known"),
])
def test_the_config_refuses_what_cannot_be_projected(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(sr_config(**changes))


def test_a_checkpoint_config_turns_it_on_for_every_loader(tmp_path):
    cfg = sr_config()
    validate(cfg)
    assert model_arguments(cfg)["data_consistency"] is True
    model = build_model("sr", "DGUNet", **model_arguments(cfg), **SMALL)
    path = tmp_path / "sr.pth"
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, path)
    assert load_model("sr", path).model.data_consistency
    cfg.MODEL.DATA_CONSISTENCY = False
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, path)
    assert not load_model("sr", path).model.data_consistency
