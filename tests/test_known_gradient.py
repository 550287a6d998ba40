"""The gradient step with a known operator: gradient="learned" | "known" | "known+learned"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgunet.errors import PhysicsError
from dgunet.models import build_model
from dgunet.models.gradient import Observation, gradient_step, observe

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


class MatrixOperator:
    """A dense random linear map on the flattened image: only A and A_adjoint (a user's own
    operator, the duck-typed contract). y: (B, m)."""

    def __init__(self, shape: tuple[int, int, int], m: int, seed: int = 0):
        self.shape = shape
        n = shape[0] * shape[1] * shape[2]
        self.M = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / n**0.5

    def A(self, x):
        return x.flatten(1) @ self.M.to(x.dtype).t()

    def A_adjoint(self, y):
        return (y @ self.M.to(y.dtype)).reshape(-1, *self.shape)


class AveragePool2x:
    """2x2 average-pool downsampling, written here from its definition: A and A_adjoint only."""

    def A(self, x):
        return F.avg_pool2d(x, 2)

    def A_adjoint(self, y):
        return F.interpolate(y, scale_factor=2, mode="nearest") / 4


class Same:
    """The identity, with A_dagger: y is already an image."""

    def A(self, x):
        return x

    def A_adjoint(self, y):
        return y

    def A_dagger(self, y):
        return y


class SmoothingDagger(Same):
    """A same-size operator whose A_dagger is not y (like Blur's regularised inverse)."""

    def A_dagger(self, y):
        return F.avg_pool2d(y, 3, stride=1, padding=1)


def _resblock_pair(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("deblurring", "DGUNet", **SMALL)
    return model.phi_0, model.phit_0


def test_identity_operator_known_step_is_x_minus_r_x_minus_y_exactly():
    phi, phit = _resblock_pair()
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    r = torch.tensor([0.37])
    v = gradient_step(x, Observation(y, y, Same(), "known"), r, phi, phit)
    assert torch.equal(v, x - r * (x - y))


def test_known_step_is_the_gradient_of_the_data_term():
    op = MatrixOperator((3, 8, 8), m=50)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 50, dtype=torch.float64)
    data_term = 0.5 * (op.A(x) - y).pow(2).sum()
    (autograd,) = torch.autograd.grad(data_term, x)
    r = torch.tensor([1.0], dtype=torch.float64)
    phi, phit = _resblock_pair()
    v = gradient_step(x.detach(), Observation(y, x.detach(), op, "known"), r, phi, phit)
    assert torch.allclose(x.detach() - v, autograd, rtol=1e-5, atol=1e-10)


def test_known_plus_learned_keeps_data_consistent_points_fixed():
    """P(0) = 0: when A x = y the step does not move x, whatever the learned weights."""
    phi, phit = _resblock_pair()
    op = AveragePool2x()
    x = torch.rand(2, 3, 16, 16)
    y = op.A(x)
    v = gradient_step(x, Observation(y, x, op, "known+learned"), torch.tensor([0.5]), phi, phit)
    assert torch.allclose(v, x, atol=1e-6)
    # ...and away from consistency it differs from the plain known step (the correction acts).
    y2 = y + 0.1 * torch.rand_like(y)
    known = gradient_step(x, Observation(y2, x, op, "known"), torch.tensor([0.5]), phi, phit)
    both = gradient_step(x, Observation(y2, x, op, "known+learned"), torch.tensor([0.5]), phi, phit)
    assert not torch.allclose(known, both, atol=1e-4)


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_every_mode_has_the_published_parameters(arch):
    keys = {mode: [(k, tuple(v.shape)) for k, v in build_model("deblurring", arch, gradient=mode, **SMALL)
                   .state_dict().items()] for mode in ("learned", "known", "known+learned")}
    assert keys["learned"] == keys["known"] == keys["known+learned"]


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_learned_mode_with_a_same_size_operator_is_the_published_forward(arch, one_thread):
    """A blind model ignores what a same-size operator knows (its A_dagger too): it sees y only."""
    torch.manual_seed(0)
    model = build_model("deblurring", arch, **SMALL).eval()
    y = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        blind = model(y)
        given = model(y, physics=SmoothingDagger())
    for a, b in zip(blind, given, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["known", "known+learned"])
@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_duck_typed_operator_drives_the_model(arch, mode, one_thread):
    """An object with only A and A_adjoint: measurement-space y (SR x2), image-size outputs."""
    torch.manual_seed(0)
    model = build_model("sr", arch, gradient=mode, **SMALL)
    op = AveragePool2x()
    x = torch.rand(2, 3, 32, 32)
    y = op.A(x)  # (2,3,16,16)
    outs = model(y, physics=op)
    assert len(outs) == 7 and all(o.shape == x.shape for o in outs)
    outs[0].mean().backward()
    assert model.r0.grad is not None and torch.isfinite(model.r0.grad).all()
    assert len(model.step_sizes()) == 7


def test_stage_one_starts_from_the_adjoint_without_a_dagger():
    op = AveragePool2x()
    y = torch.rand(1, 3, 16, 16)
    obs = observe(y, op, "known", min_size=16, multiple=8)
    assert torch.equal(obs.x0, op.A_adjoint(y))
    assert torch.equal(observe(y, SmoothingDagger(), "known", 16, 8).x0, SmoothingDagger().A_dagger(y))
    # A blind model given a measurement-space operator starts from A_dagger too (e.g. bicubic for SR).
    assert torch.equal(observe(y, op, "learned", 16, 8).x0, op.A_adjoint(y))


def test_known_needs_an_operator():
    model = build_model("deblurring", "DGUNet", gradient="known", **SMALL)
    with pytest.raises(PhysicsError, match="needs the degradation operator.*physics=op"):
        model(torch.rand(1, 3, 16, 16))


def test_operator_that_does_not_produce_y_is_named():
    model = build_model("sr", "DGUNet", gradient="known", **SMALL)
    y = torch.rand(1, 3, 16, 16)

    class Wrong(AveragePool2x):
        def A_dagger(self, y):  # a 4x upsampling where A only halves: A(x0) is 16x16, not 8x8
            return F.interpolate(y, scale_factor=4)

    with pytest.raises(PhysicsError, match=r"maps a 1x3x32x32 image to 1x3x16x16, but y is 1x3x8x8"):
        model(F.avg_pool2d(y, 2), physics=Wrong())


def test_operator_without_adjoint_is_refused():
    class NoAdjoint:
        def A(self, x):
            return x

    model = build_model("deblurring", "DGUNet", gradient="known", **SMALL)
    with pytest.raises(PhysicsError, match="has no A_adjoint"):
        model(torch.rand(1, 3, 16, 16), physics=NoAdjoint())


def test_image_estimate_of_the_wrong_size_is_refused():
    model = build_model("sr", "DGUNet", gradient="known", **SMALL)
    with pytest.raises(PhysicsError, match="multiples of 8.*crop the clean images"):
        model(torch.rand(1, 3, 10, 10), physics=AveragePool2x())  # x0 is 20x20


def test_unknown_gradient_mode_is_refused():
    with pytest.raises(ValueError, match="choose one of learned, known, known\\+learned"):
        build_model("deblurring", "DGUNet", gradient="exact")


def test_cs_fixed_sampling_is_the_physics_matrix_and_is_never_trained():
    from dgunet.models.cs import image_to_blocks
    from dgunet.physics import CompressedSensing

    learned = build_model("cs", "DGUNet", cs_ratio=10, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    fixed = build_model("cs", "DGUNet", cs_ratio=10, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4,
                        phi="fixed", phi_seed=3)
    op = CompressedSensing(0.10, block=32, seed=3)
    assert list(fixed.state_dict()) == list(learned.state_dict())  # published keys in both modes
    assert torch.equal(fixed.Phi.detach(), op.matrix) and not fixed.Phi.requires_grad
    # The model samples exactly as the operator does (rows of row-major 32x32 blocks).
    x = torch.rand(2, 1, 64, 32)
    rows = image_to_blocks(x) @ fixed.Phi.detach().t()  # (B*2*1, m)
    y = op.A(x)  # (B, m, 2, 1)
    assert torch.allclose(rows, y.permute(0, 2, 3, 1).reshape(-1, op.m), atol=1e-6)
    fixed.load_state_dict(learned.state_dict())  # e.g. TRAIN.INIT_FROM a learned-matrix checkpoint
    assert torch.equal(fixed.Phi.detach(), op.matrix) and not fixed.Phi.requires_grad
    assert torch.equal(fixed.shallow_feat1[0].weight, learned.shallow_feat1[0].weight)  # the rest loads
    optimizer = torch.optim.Adam(fixed.parameters(), lr=1e-2)
    before = fixed.Phi.detach().clone()
    fixed(x)[0].mean().backward()
    optimizer.step()
    assert torch.equal(fixed.Phi.detach(), before)
