"""dgunet.physics: exact adjoints, MATLAB bicubic, true convolution, CS layout, noise, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dgunet import physics
from dgunet.errors import DGUNetError, PhysicsError
from dgunet.physics.bicubic import resize_matrix


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class PlainScale:
    """A duck-typed operator that is not a dgunet operator (nor an nn.Module): y = 2 x."""

    def A(self, x):
        return 2 * x

    def A_adjoint(self, y):
        return 2 * y


def operators(h: int, w: int) -> dict[str, object]:
    """Every operator kind, with per-sample kernels and masks for a batch of 2, fitting (h, w)."""
    k_odd, k_even = rand(2, 1, 5, 5, seed=1), rand(2, 3, 4, 4, seed=2)
    return {
        "identity": physics.Identity(),
        "blur-circular": physics.Blur(k_odd),
        "blur-circular-even": physics.Blur(k_even),
        "blur-valid": physics.Blur(k_odd, padding="valid"),
        "blur-valid-even": physics.Blur(k_even, padding="valid"),
        "blur-reflect": physics.Blur(k_odd, padding="reflect"),
        "blur-reflect-even": physics.Blur(k_even, padding="reflect"),
        "bicubic": physics.Downsample(3),
        "gaussian-circular": physics.Downsample(3, "gaussian"),
        "kernel-reflect": physics.Downsample(3, k_even, padding="reflect"),
        "inpainting": physics.Inpainting(rand(2, 1, h, w, seed=3) > 0.5),
        "cs": physics.CompressedSensing(0.3, block=3),
        "compose": physics.Compose(physics.Downsample(3), physics.Blur(k_odd)),
        "compose-duck": physics.Compose(PlainScale(), physics.Inpainting(rand(h, w, seed=4))),
    }


OPERATOR_NAMES = list(operators(12, 12))


@pytest.mark.parametrize("size", [(21, 27), (24, 30)], ids=["odd", "even"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_adjoint_is_exact(name, size, dtype):
    """<A x, y> = <x, A^T y> for random x and y, batch 2, per-sample kernels and masks."""
    h, w = size
    op = operators(h, w)[name]
    if isinstance(op, torch.nn.Module):
        op = op.to(dtype)
    x = randn(2, 3, h, w, seed=5, dtype=dtype)
    ax = op.A(x)
    y = randn(*ax.shape, seed=6, dtype=dtype)
    aty = op.A_adjoint(y)
    assert aty.shape == x.shape and aty.dtype == dtype
    lhs, rhs = (ax * y).sum().item(), (x * aty).sum().item()
    scale = (ax.norm() * y.norm()).item()  # Cauchy-Schwarz bound of both sides
    assert abs(lhs - rhs) <= (1e-5 if dtype == torch.float32 else 1e-12) * scale
    assert abs(lhs) > 1e-3 * scale or name == "identity" or abs(rhs) > 0  # not a vacuous 0 = 0


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_dagger_is_an_image_of_the_right_size(name):
    op = operators(12, 18)[name]
    x = rand(2, 3, 12, 18, seed=7)
    est = physics.initial_estimate(op, op.A(x))
    assert est.shape == x.shape and torch.isfinite(est).all()


# ------------------------------------------------------------------ MATLAB bicubic

# imresize(.., 1/2) in the interior: Keys' cubic (a = -0.5) stretched by 2, taps at distances
# 0.5, 1.5, 2.5, 3.5, i.e. cubic(0.25)/2 = 0.43359375, cubic(0.75)/2 = 0.11328125,
# cubic(1.25)/2 = -0.03515625, cubic(1.75)/2 = -0.01171875 (worked out by hand).
HALF_TAPS = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def test_bicubic_half_interior_weights_by_hand():
    m = resize_matrix(16, 8)
    for i in (2, 3, 4):  # rows whose 8 taps lie inside: input pixels 2i-3 .. 2i+4 (0-based)
        expected = torch.zeros(16, dtype=torch.float64)
        expected[2 * i - 3:2 * i + 5] = torch.tensor(HALF_TAPS, dtype=torch.float64)
        torch.testing.assert_close(m[i], expected, rtol=0, atol=1e-15)


def test_bicubic_half_border_row_mirrors_symmetrically():
    """Row 0: taps at input -3..4 (0-based); MATLAB mirrors -1 -> 0, -2 -> 1, -3 -> 2 (edge repeated)."""
    t = HALF_TAPS
    expected = [t[3] + t[2], t[4] + t[1], t[5] + t[0], t[6], t[7]]  # 0.546875, 0.3984375, 0.1015625, ...
    row = resize_matrix(16, 8)[0]
    torch.testing.assert_close(row[:5], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    assert row[5:].abs().max() == 0


def test_bicubic_double_border_row_by_hand():
    """imresize(.., 2), output 0 sits at input 0.75 (1-based): cubic at 1.75, 0.75, -0.25, -1.25;
    taps 0 and -1 mirror onto pixels 1 and 2."""
    row = resize_matrix(8, 16)[0]
    assert row[0].item() == pytest.approx(0.8671875 + 0.2265625, abs=1e-15)
    assert row[1].item() == pytest.approx(-0.0703125 - 0.0234375, abs=1e-15)
    assert row[2:].abs().max() == 0


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_linear_ramp_interior_is_block_mean(factor):
    """Symmetric normalised taps reproduce a linear function: output i = ramp at the centre of
    block i, i.e. a * (f*i + (f-1)/2) + b (0-based), wherever the taps stay inside the image."""
    h, w = 2 * factor, 12 * factor
    cols = torch.arange(w, dtype=torch.float64)
    x = (0.3 * cols - 1.0).expand(1, 2, h, w)
    y = physics.Downsample(factor).A(x)
    centres = factor * torch.arange(w // factor, dtype=torch.float64) + (factor - 1) / 2
    expected = 0.3 * centres - 1.0
    torch.testing.assert_close(y[0, 0, 0, 3:-3], expected[3:-3], rtol=0, atol=1e-12)
    assert (y[0, 0, 0, 0] - expected[0]).abs() > 1e-3  # the border mirrors, it does not extrapolate


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_interior_matches_pillow(factor):
    """Pillow's bicubic (a = -0.5, antialiased) differs from MATLAB only at the borders."""
    image_module = pytest.importorskip("PIL.Image")
    import numpy as np

    x = rand(24 * factor, 20 * factor, seed=8, dtype=torch.float32)
    ref = image_module.fromarray(x.numpy(), mode="F").resize((20, 24), image_module.Resampling.BICUBIC)
    ref = torch.from_numpy(np.array(ref, dtype=np.float32))
    ours = physics.Downsample(factor).A(x[None, None].double())[0, 0].float()
    torch.testing.assert_close(ours[3:-3, 3:-3], ref[3:-3, 3:-3], rtol=0, atol=2e-5)


@pytest.mark.parametrize("op", [physics.Downsample(2), physics.Downsample(3), physics.Downsample(4),
                                physics.Downsample(4, "gaussian"), physics.Downsample(2, "gaussian", sigma=1.5,
                                                                                      padding="reflect")],
                         ids=["bicubic2", "bicubic3", "bicubic4", "gaussian-circular", "gaussian-reflect"])
def test_downsample_keeps_a_constant_image(op):
    x = torch.full((2, 3, 24, 36), 0.37, dtype=torch.float64)
    y = op.A(x)
    tol = 1e-12 if op.kind == "bicubic" else 1e-7  # the Gaussian is a float32 kernel: sum 1 +- 1e-7
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=tol)
    torch.testing.assert_close(op.A_dagger(y), torch.full_like(x, 0.37), rtol=0, atol=tol)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_upsampling_dagger_reproduces_a_ramp(factor):
    """A_dagger = imresize(y, f): on the ramp at block centres it gives back the full ramp (interior)."""
    w = 10 * factor
    x = torch.arange(w, dtype=torch.float64).expand(1, 1, 4 * factor, w)
    op = physics.Downsample(factor)
    inner = (..., slice(5 * factor, -5 * factor))  # mirrored borders reach 2 taps in, then 2 more
    torch.testing.assert_close(op.A_dagger(op.A(x))[inner], x[inner], rtol=0, atol=1e-12)


def test_gaussian_downsample_samples_phase_zero():
    """Output pixel i is the blurred input pixel f*i (a symmetric blur keeps a ramp's interior)."""
    x = torch.arange(48, dtype=torch.float64).expand(1, 1, 16, 48)
    op = physics.Downsample(4, "gaussian", padding="reflect")
    y = op.A(x)
    torch.testing.assert_close(y[0, 0, 0, 2:-2], 4.0 * torch.arange(2, 10, dtype=torch.float64))
    inner = (..., slice(12, 36))  # y[2..10] only: y[1] and y[11] see the mirrored borders
    torch.testing.assert_close(op.A_dagger(y)[inner], x[inner], rtol=1e-6, atol=0)  # float32 kernel


def test_gaussian_prefilter_is_normalised_and_sized():
    k = physics.gaussian_prefilter(1.5)
    assert k.shape == (11, 11) and k.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert physics.gaussian_prefilter(0.0).tolist() == [[1.0]]


# ------------------------------------------------------------------ Blur


@pytest.mark.parametrize("padding", ["circular", "reflect", "valid"])
@pytest.mark.parametrize("k", [5, 4], ids=["odd", "even"])
def test_blur_of_a_centred_delta_is_the_kernel(padding, k):
    """True convolution: the delta becomes the kernel itself (not flipped), one kernel per sample."""
    kernel = rand(2, 1, k, k, seed=9)
    x = torch.zeros(2, 3, 17, 19, dtype=torch.float64)
    p, q = 8, 9
    x[..., p, q] = 1.0
    y = physics.Blur(kernel, padding=padding).A(x)
    # same-size paddings put kernel pixel (k//2, k//2) on the delta; "valid" starts k-1 earlier
    top, left = (p - k + 1, q - k + 1) if padding == "valid" else (p - k // 2, q - k // 2)
    window = y[..., top:top + k, left:left + k]
    torch.testing.assert_close(window, kernel.expand(2, 3, k, k), rtol=0, atol=1e-12)
    assert y.abs().sum().item() == pytest.approx(kernel.sum().item() * 3, rel=1e-12)  # nothing elsewhere


@pytest.mark.parametrize("kh,kw", [(7, 7), (4, 6), (5, 2)])
def test_blur_padding_modes_agree_in_the_interior(kh, kw):
    kernel = rand(1, 1, kh, kw, seed=10)
    x = rand(2, 3, 20, 22, seed=11)
    circ, refl = physics.Blur(kernel).A(x), physics.Blur(kernel, padding="reflect").A(x)
    valid = physics.Blur(kernel, padding="valid").A(x)
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2  # where valid's pixel (0, 0) sits
    inner = (..., slice(top, top + valid.shape[-2]), slice(left, left + valid.shape[-1]))
    torch.testing.assert_close(circ[inner], valid)
    torch.testing.assert_close(refl[inner], valid)


def test_blur_reflect_mirrors_without_repeating_the_edge():
    """A 3-tap box at column 0 averages x[1], x[0], x[1] (reflect), not x[0] twice."""
    x = torch.tensor([[[[1.0, 4.0, 7.0, 10.0]]]], dtype=torch.float64)
    y = physics.Blur(torch.ones(1, 3, dtype=torch.float64) / 3, padding="reflect").A(x)
    assert y[0, 0, 0, 0].item() == pytest.approx((4 + 1 + 4) / 3)
    assert y[0, 0, 0, 3].item() == pytest.approx((7 + 10 + 7) / 3)


def test_blur_kernel_forms_broadcast():
    k = rand(5, 5, seed=12)
    x = rand(2, 3, 16, 16, seed=13)
    ref = physics.Blur(k).A(x)
    torch.testing.assert_close(physics.Blur(k[None, None]).A(x), ref)
    torch.testing.assert_close(physics.Blur(k.expand(2, 3, 5, 5)).A(x), ref)
    per_sample = physics.Blur(torch.stack([k, k.t()])[:, None]).A(x)
    torch.testing.assert_close(per_sample[:1], ref[:1])
    torch.testing.assert_close(per_sample[1:], physics.Blur(k.t()).A(x[1:]))


def test_blur_valid_dagger_averages_the_covering_measurements():
    op = physics.Blur(rand(1, 1, 3, 3, seed=14), padding="valid")
    y = torch.full((1, 1, 6, 6), 2.5, dtype=torch.float64)
    torch.testing.assert_close(op.A_dagger(y), torch.full((1, 1, 8, 8), 2.5, dtype=torch.float64))


def test_low_precision_and_gradients():
    x = rand(1, 3, 16, 16, seed=15)
    op = physics.Blur(rand(1, 1, 5, 5, seed=16, dtype=torch.float32))
    assert op.A(x.to(torch.bfloat16)).dtype == torch.bfloat16
    assert op.to(torch.float64).kernel.dtype == torch.float64  # buffers follow .to()
    for o in (op, physics.Blur(op.kernel, padding="reflect"), physics.Downsample(2),
              physics.CompressedSensing(0.5, block=4)):
        xs = rand(1, 1, 8, 8, seed=17).requires_grad_()
        assert torch.autograd.gradcheck(o.A, (xs,))


# ------------------------------------------------------------------ compressed sensing


@pytest.mark.parametrize("ratio,m", [(0.01, 11), (0.04, 41), (0.1, 103), (0.25, 256), (0.3, 308), (0.4, 410),
                                     (0.5, 512), (1.0, 1024)])
def test_cs_rows_per_block(ratio, m):
    assert physics.CompressedSensing(ratio).matrix.shape == (m, 1024)


def test_cs_measurement_count_is_the_published_rule_on_a_fine_grid():
    """num_rows rounds before ceil; the published ceil(ratio * 1024 / 100) does not: on every
    ratio of a 0.001% grid over (0, 100] they agree, so no Phi shape changes."""
    from dgunet.models.cs import num_measurements
    from dgunet.physics.cs import num_rows

    for i in range(1, 100_001):
        ratio = i / 1000
        assert num_measurements(ratio) == math.ceil(ratio * 1024 / 100) == num_rows(ratio / 100, 32), ratio
    assert num_rows(0.07, 10) == 7  # 0.07 * 10 * 10 is 7.000000000000001 in floats


def test_cs_block_layout_has_one_owner():
    from dgunet.models import cs as model_cs
    from dgunet.physics import cs as physics_cs

    assert model_cs.image_to_blocks is physics_cs.image_to_blocks
    assert model_cs.blocks_to_image is physics_cs.blocks_to_image


def test_cs_matrix_is_seeded_and_independent_of_the_global_rng():
    torch.manual_seed(123)
    a = physics.CompressedSensing(0.25).matrix
    torch.manual_seed(456)
    b = physics.CompressedSensing(0.25).matrix
    assert torch.equal(a, b)
    assert not torch.equal(a, physics.CompressedSensing(0.25, seed=1).matrix)
    a = physics.CompressedSensing(0.25, orthonormal=False).matrix  # the Gaussian before orthonormalising
    assert a.pow(2).mean().item() * 256 == pytest.approx(1.0, abs=0.02)  # N(0, 1/m): 262144 entries
    assert a.mean().abs().item() < 3 / math.sqrt(a.numel() * 256)


def test_cs_layout_is_the_published_strided_sampling():
    """The published model samples with conv2d(x, Phi viewed as m filters of 32x32, stride 32)."""
    op = physics.CompressedSensing(0.1)
    x = rand(2, 1, 64, 96, seed=18, dtype=torch.float32)
    ref = F.conv2d(x, op.matrix.reshape(op.m, 1, 32, 32), stride=32)
    torch.testing.assert_close(op.A(x), ref, rtol=1e-5, atol=1e-5)


def test_cs_matches_the_models_block_rows():
    from dgunet.models.cs import image_to_blocks

    op = physics.CompressedSensing(0.25)
    x = rand(2, 1, 64, 32, seed=19, dtype=torch.float32)
    rows = image_to_blocks(x) @ op.matrix.t()  # (B*2*1, m), blocks row-major
    torch.testing.assert_close(op.A(x).permute(0, 2, 3, 1).reshape(-1, op.m), rows, rtol=1e-5, atol=1e-5)


def test_cs_channels_are_measured_separately():
    op = physics.CompressedSensing(0.5, block=4)
    x = rand(1, 3, 8, 8, seed=20)
    y = op.double().A(x)
    assert y.shape == (1, 3 * op.m, 2, 2)
    torch.testing.assert_close(y[:, op.m:2 * op.m], op.A(x[:, 1:2]))


# ------------------------------------------------------------------ noise


def test_gaussian_noise_per_sample_sigma():
    noise = physics.GaussianNoise(torch.tensor([0.0, 0.1, 0.5]), generator=torch.Generator().manual_seed(0))
    op = physics.Identity(noise_model=noise)
    x = torch.zeros(3, 1, 64, 64)
    y = op(x)
    stds = y.flatten(1).std(dim=1)
    assert stds[0].item() == 0.0
    assert stds[1].item() == pytest.approx(0.1, rel=0.05) and stds[2].item() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(PhysicsError, match="one sigma per sample"):
        op(torch.zeros(2, 1, 4, 4))


def test_noise_free_forward_is_A_and_seeded_noise_repeats():
    op = physics.Blur(rand(3, 3, seed=21))
    x = rand(1, 1, 8, 8, seed=22)
    assert torch.equal(op(x), op.A(x))
    a = physics.GaussianNoise(0.1, generator=torch.Generator().manual_seed(3))(x)
    b = physics.GaussianNoise(0.1, generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b) and not torch.equal(a, x)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("make,x,fix", [
    (lambda: physics.Downsample(4), torch.zeros(1, 3, 30, 32), "multiples of 4"),
    (lambda: physics.Downsample(2, "gaussian"), torch.zeros(1, 3, 31, 32), "multiples of 2"),
    (lambda: physics.CompressedSensing(0.25), torch.zeros(1, 1, 48, 64), "multiples of 32"),
    (lambda: physics.Blur(torch.ones(9, 9)), torch.zeros(1, 3, 8, 16), "smaller kernel"),
    (lambda: physics.Blur(torch.ones(3, 1, 3, 3)), torch.zeros(2, 3, 8, 8), "one per sample"),
    (lambda: physics.Inpainting(torch.ones(1, 1, 8, 9)), torch.zeros(2, 3, 8, 8), "mask of the image's"),
    (lambda: physics.Inpainting(torch.ones(2, 1, 8, 8)), torch.zeros(3, 3, 8, 8), "mask of the image's"),
    (lambda: physics.Identity(), torch.zeros(3, 8, 8), "(B,C,H,W)"),
])
def test_incompatible_inputs_give_one_line_errors(make, x, fix):
    with pytest.raises(PhysicsError) as err:
        make().A(x)
    assert fix in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, DGUNetError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("make,fix", [
    (lambda: physics.Blur(torch.ones(3, 3), padding="same"), "choose one of"),
    (lambda: physics.Blur(torch.ones(3)), "give (k,k)"),
    (lambda: physics.Downsample(2.5), "integer"),
    (lambda: physics.Downsample(2, "lanczos"), "'bicubic', 'gaussian'"),
    (lambda: physics.CompressedSensing(25), "fraction in (0, 1]"),
    (lambda: physics.GaussianNoise(-0.1), "sigma"),
    (lambda: physics.Compose(physics.Identity(), object()), "A/A_adjoint"),
])
def test_bad_construction_gives_one_line_errors(make, fix):
    with pytest.raises(PhysicsError, match=None) as err:
        make()
    assert fix in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ bench --physics


@pytest.mark.slow
def test_physics_bench_reports_each_operator_share(one_thread):
    from dgunet.bench.physics import operator_share, report

    timings = operator_share(size=32, warmup=0, repeats=1)
    assert [t.name for t in timings][0] == "DGUNet forward" and len(timings) == 5
    assert all(t.seconds > 0 for t in timings)
    text = report(timings, 32, 1)
    assert "Blur 25x25 circular (FFT)" in text and "Downsample x4 bicubic" in text and "flags:" in text


def test_circular_blur_dagger_minimises_the_regularised_objective():
    """A_dagger(y) = argmin ||k*x - y||^2 + eps ||grad x||^2: the objective's autograd gradient vanishes
    there (forward differences written independently with torch.roll), and the mean is kept."""
    gen = torch.Generator().manual_seed(5)
    kernel = torch.rand(2, 1, 7, 7, generator=gen, dtype=torch.float64)
    kernel = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    sigma = torch.tensor([0.0, 0.02])  # per sample: eps = 0.03 + 100 * sigma^2 = 0.03 and 0.07
    op = physics.Blur(kernel, padding="circular", dagger_eps=0.03, dagger_noise_gain=100.0,
                      noise_model=physics.GaussianNoise(sigma))
    y = torch.rand(2, 3, 20, 17, generator=gen, dtype=torch.float64)
    x = op.A_dagger(y).requires_grad_(True)
    dx, dy = torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x
    eps = (0.03 + 100.0 * op.noise_model.sigma.double() ** 2).reshape(2, 1, 1, 1)  # sigma is stored float32
    objective = (op.A(x) - y).pow(2).sum() + (eps * (dx.pow(2) + dy.pow(2))).sum()
    (grad,) = torch.autograd.grad(objective, x)
    assert grad.abs().max() < 1e-10
    torch.testing.assert_close(x.detach().mean(dim=(-2, -1)), y.mean(dim=(-2, -1)), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ operator norms, checks, host syncs


def reference_norm(op, shape, iterations=1500):
    """||A^T A|| per sample by a long float64 power iteration written here from its definition."""
    v = randn(*shape, seed=31)
    for _ in range(iterations):
        v = v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        w = op.A_adjoint(op.A(v))
        estimate = (v * w).flatten(1).sum(dim=1)
        v = w
    return estimate


BOUNDED = ("blur-valid", "blur-valid-even", "blur-reflect", "blur-reflect-even", "kernel-reflect")
ITERATED = ("compose", "compose-duck")


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_norm_of_every_operator_equals_a_power_iteration(name):
    """norm_AtA against a long power iteration: exact operators to 1e-3 relative; the padded blurs give
    an upper bound (within 1.1x); Compose runs the runtime power iteration (within 1%, from below)."""
    shape = (2, 3, 24, 30)
    op = operators(*shape[-2:])[name].double()
    if name == "cs":
        shape = (2, 1, 24, 30)
    x = torch.zeros(shape, dtype=torch.float64)
    ours = torch.as_tensor(op.norm_AtA(x), dtype=torch.float64).flatten()
    reference = reference_norm(op, shape)
    if ours.numel() == 1:  # one L for the batch: the largest of the samples'
        reference = reference.max()[None]
    if name in BOUNDED:
        assert torch.all(reference <= ours * (1 + 1e-9)) and torch.all(ours <= 1.1 * reference)
    elif name in ITERATED:
        assert torch.all(ours <= reference * (1 + 1e-9)) and torch.all(ours >= 0.99 * reference)
    else:
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=0)


def test_norms_the_field_quotes():
    """Sum-1 kernels: L = 1 (circular); bicubic: about 1/f^2; CS with orthonormal rows: 1."""
    x = torch.zeros(1, 3, 64, 64)
    box = torch.ones(5, 5) / 25
    assert float(physics.Blur(box).norm_AtA(x)) == pytest.approx(1.0, rel=1e-6)
    assert physics.Downsample(2).norm_AtA(x) == pytest.approx(0.25, rel=0.1)
    assert physics.Downsample(4).norm_AtA(x) == pytest.approx(0.0625, rel=0.1)
    assert physics.CompressedSensing(0.25).norm_AtA(x) == pytest.approx(1.0, rel=1e-5)
    assert physics.CompressedSensing(0.25, orthonormal=False).norm_AtA(x) > 5  # the i.i.d. Gaussian: 8.9
    assert physics.Identity().norm_AtA(x) == 1.0
    torch.testing.assert_close(physics.Inpainting(torch.ones(64, 64)).norm_AtA(x), torch.ones(1))


def test_power_iteration_serves_a_duck_typed_operator():
    from dgunet.physics.base import operator_norm

    x = torch.zeros(1, 3, 24, 30, dtype=torch.float64)
    assert float(operator_norm(PlainScale(), x)) == pytest.approx(4.0, rel=1e-6)  # ||2 I||^2


@pytest.mark.parametrize("percent", [1, 4, 10, 25, 30, 40, 50])
def test_cs_matrix_has_orthonormal_rows(percent):
    phi = physics.CompressedSensing(percent / 100).matrix
    eye = torch.eye(phi.shape[0])
    assert (phi.double() @ phi.double().t() - eye).abs().max().item() < 1e-5
    # same row space as the seeded Gaussian: orthonormalising only rotates within it
    gauss = physics.CompressedSensing(percent / 100, orthonormal=False).matrix.double()
    projected = gauss @ phi.double().t() @ phi.double()
    assert (projected - gauss).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", OPERATOR_NAMES)
def test_image_shape_is_the_adjoints_shape_without_computing_it(name):
    from dgunet.physics.base import adjoint_shape

    op = operators(24, 30)[name]
    x = rand(2, 1 if name == "cs" else 3, 24, 30, seed=32, dtype=torch.float32)
    y = op.A(x)
    assert adjoint_shape(op, y) == op.A_adjoint(y).shape == x.shape


def test_kernel_batch_that_fits_neither_one_nor_the_images_is_a_physics_error_everywhere():
    op = physics.Blur(rand(3, 1, 5, 5, seed=33))
    y = torch.zeros(2, 3, 16, 16)
    for method in (op.A, op.A_adjoint, op.A_dagger, op.norm_AtA):
        with pytest.raises(PhysicsError, match="one per sample") as err:
            method(y)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kernel,fix", [
    (torch.zeros(5, 5), "all zeros"),
    (torch.stack([torch.ones(1, 5, 5), torch.zeros(1, 5, 5)]), "kernel 1 of the batch is all zeros"),
    (torch.full((3, 3), float("nan")), "NaN or inf"),
    (torch.tensor([[1.0, -2.0], [0.0, 0.5]]), "sums to -0.5"),
])
def test_kernels_that_cannot_blur_are_refused(kernel, fix):
    for make in (lambda: physics.Blur(kernel), lambda: physics.Downsample(2, kernel)):
        with pytest.raises(PhysicsError, match="positive sum|finite kernel") as err:
            make()
        assert fix in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("mask", [torch.full((8, 8), 2.0), torch.full((8, 8), -0.5),
                                  torch.full((8, 8), float("nan"))])
def test_masks_outside_zero_one_are_refused(mask):
    with pytest.raises(PhysicsError, match=r"outside \[0, 1\]") as err:
        physics.Inpainting(mask)
    assert "\n" not in str(err.value)
    physics.Inpainting(torch.full((8, 8), 0.3))  # a soft mask: the fraction of each pixel kept


def test_operators_built_with_validate_false_never_read_values():
    """Values on a "meta" device cannot be read: any bool()/item() would raise, as a GPU would sync."""
    kernels = torch.rand(2, 1, 5, 5).to("meta")
    sigma = torch.rand(2).to("meta")
    noise = physics.GaussianNoise(sigma, validate=False)
    for op in (physics.Blur(kernels, noise_model=noise, validate=False),
               physics.Downsample(2, kernels, noise_model=noise, validate=False),
               physics.Inpainting(torch.rand(2, 1, 16, 16).to("meta"), validate=False),
               physics.Identity(noise_model=noise)):
        x = torch.empty(2, 3, 16, 16, device="meta")
        op.A_adjoint(op.A(x))
        if not isinstance(op, physics.Inpainting):
            op.A_dagger(op.A(x))
        if isinstance(op, physics.Blur):
            assert op.norm_AtA(x).shape == (2,)
    with pytest.raises((RuntimeError, NotImplementedError)):  # validation does read the values
        physics.Blur(kernels)
