"""restore() options (tiles, self-ensemble, precision, memory format, fast paths) and the fast
merge: each option either computes the same function or stays within a stated tolerance."""

from __future__ import annotations

import warnings

import pytest
import torch

from dgunet.inference import (
    axis_weights,
    ensemble_transform,
    forward_padded,
    forward_tiled,
    restore,
    tile_starts,
    undo_ensemble_transform,
)
from dgunet.models import build_model, fast
from dgunet.models.blocks import MergeBlock, subspace_projection
from dgunet.models.fast import (
    FastConv2d,
    fast_subspace_projection,
    is_fast_merge,
    kernel_choices,
    set_fast_convs,
    set_kernel_policy,
    use_fast,
    use_fast_convs,
    use_fast_merge,
)
from dgunet.models.keyed_init import keyed_state_dict

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def keyed(model: torch.nn.Module) -> torch.nn.Module:
    model.load_state_dict(keyed_state_dict(model))
    return model.eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


# These models are tiny: a second thread gains nothing, and on a busy 2-core machine every
# OpenMP barrier can wait a whole time slice for it (a forward goes from 0.05 s to seconds).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    return keyed(build_model("deblurring", "DGUNet", **SMALL))


@pytest.fixture(scope="module")
def small_plus():
    return keyed(build_model("deblurring", "DGUNet_plus", **SMALL))


@pytest.fixture
def image():
    return torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- padding and batches

@pytest.mark.parametrize("shape", [(1, 3, 33, 47), pytest.param((1, 3, 481, 321), marks=pytest.mark.slow)])
def test_odd_sizes_equal_the_reflect_padded_forward(small, shape):
    x = torch.rand(shape)
    with torch.no_grad():
        expected = forward_padded(small, x)
    assert restore(small, x).shape == shape
    torch.testing.assert_close(restore(small, x), expected)


def test_batch_equals_images_one_by_one(small):
    x = torch.rand(3, 3, 33, 47)
    batch = restore(small, x)
    single = torch.cat([restore(small, x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)


def test_cs_any_size():
    model = build_model("cs", "DGUNet", cs_ratio=10, **SMALL).eval()
    assert restore(model, torch.rand(1, 1, 33, 47)).shape == (1, 1, 33, 47)
    assert restore(model, torch.rand(1, 1, 70, 40), tile=64, overlap=16).shape == (1, 1, 70, 40)


# ---------------------------------------------------------------- tiles

@pytest.mark.parametrize("size,tile,overlap,multiple", [
    (304, 128, 32, 8), (200, 128, 32, 8), (720, 512, 32, 8), (1280, 512, 64, 8), (97, 40, 7, 1),
    (640, 96, 95, 1), (128, 128, 0, 8), (64, 32, 1, 8)])
def test_tile_starts_cover_with_the_requested_overlap(size, tile, overlap, multiple):
    starts = tile_starts(size, tile, overlap, multiple)
    assert starts[0] == 0 and starts[-1] == max(size - tile, 0)
    assert all(s % multiple == 0 for s in starts[:-1])
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:], strict=False))


def test_blend_weights_sum_to_one_across_each_overlap():
    starts = tile_starts(300, 96, 32, 8)
    total = torch.zeros(300, dtype=torch.float64)
    for s, w in zip(starts, axis_weights(starts, 96, 300), strict=True):
        assert (w > 0).all()
        total[s:s + 96] += w
    torch.testing.assert_close(total, torch.ones(300, dtype=torch.float64))


def test_tiling_a_pointwise_function_has_no_seam():
    x = torch.rand(2, 3, 100, 150)
    out = forward_tiled(lambda t: 2 * t + 1, x, (48, 64), overlap=16, multiple=8)
    torch.testing.assert_close(out, 2 * x + 1)


def test_tiny_image_in_tiles(small):
    x = torch.rand(1, 3, 5, 3)
    torch.testing.assert_close(restore(small, x, tile=32, overlap=8), restore(small, x), atol=1e-6, rtol=0)


def test_one_tile_covering_the_image_is_the_untiled_result(small):
    x = torch.rand(1, 3, 33, 47)
    torch.testing.assert_close(restore(small, x, tile=64), restore(small, x), atol=1e-6, rtol=0)


def test_tiled_close_to_untiled(small):
    # Tiles see less context (and instance norm / channel attention see tile statistics), so
    # the result differs slightly; 96-pixel tiles with 32 of overlap keep it far below visibility.
    x = torch.rand(1, 3, 160, 200, generator=torch.Generator().manual_seed(0))
    whole = restore(small, x)
    tiled = restore(small, x, tile=96, overlap=32)
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) > 45


@pytest.mark.parametrize("kwargs,match", [
    ({"tile": 100}, "multiple of 8"), ({"tile": 0}, "multiple of 8"), ({"tile": (64, 60)}, "multiple of 8"),
    ({"tile": 64, "overlap": 64}, "overlap"), ({"tile": 64, "overlap": -1}, "overlap"),
    ({"tile": 8, "overlap": 0}, "smallest side")])
def test_invalid_tile_arguments(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        restore(small, torch.rand(1, 3, 16, 16), **kwargs)


def test_cs_tile_must_be_a_multiple_of_32():
    model = build_model("cs", "DGUNet", cs_ratio=10, **SMALL).eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        restore(model, torch.rand(1, 1, 64, 64), tile=48)


# ---------------------------------------------------------------- self-ensemble

@pytest.mark.parametrize("k", range(8))
def test_ensemble_transform_round_trip(k):
    x = torch.rand(2, 3, 5, 7)
    assert torch.equal(undo_ensemble_transform(ensemble_transform(x, k), k), x)


def test_ensemble_transform_gives_eight_distinct_transforms():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    views = [ensemble_transform(x, k) for k in range(8)]
    seen = {tuple(v.flatten().tolist()) + tuple(v.shape) for v in views}
    assert len(seen) == 8


def test_self_ensemble_is_the_mean_of_the_eight_transforms(small):
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        manual = [
            torch.flip(x, [-1]) if k >= 4 else x for k in range(8)
        ]
        manual = [torch.rot90(t, k % 4, (-2, -1)) for k, t in enumerate(manual)]
        outs = [forward_padded(small, t) for t in manual]
        outs = [torch.rot90(o, -(k % 4), (-2, -1)) for k, o in enumerate(outs)]
        outs = [torch.flip(o, [-1]) if k >= 4 else o for k, o in enumerate(outs)]
        expected = torch.stack(outs).mean(0)
    torch.testing.assert_close(restore(small, x, self_ensemble=True), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- fast merge

@pytest.mark.parametrize("b,k,n,h,w", [(1, 16, 8, 16, 16), (3, 16, 80, 37, 29), (2, 16, 40, 64, 48)])
def test_fast_projection_equals_the_published_formula(b, k, n, h, w):
    g = torch.Generator().manual_seed(b * h + w)
    basis, feats = torch.randn(b, k, h, w, generator=g), torch.randn(b, n, h, w, generator=g)
    expected = subspace_projection(basis.double(), feats.double()).float()
    torch.testing.assert_close(subspace_projection(basis, feats), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_subspace_projection(basis, feats), expected, atol=1e-5, rtol=0)


def test_fast_projection_keeps_the_gram_solve_in_fp32_under_autocast():
    g = torch.Generator().manual_seed(3)
    basis, feats = torch.randn(2, 16, 32, 32, generator=g), torch.randn(2, 8, 32, 32, generator=g)
    expected = subspace_projection(basis, feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast_subspace_projection(basis.bfloat16(), feats.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)


def test_use_fast_merge_switches_every_merge_and_restores(small_plus):
    blocks = [m for m in small_plus.modules() if isinstance(m, MergeBlock)]
    assert len(blocks) == 6
    state = {k: v.clone() for k, v in small_plus.state_dict().items()}
    with use_fast_merge(small_plus):
        assert is_fast_merge(small_plus)
        assert all(b.projection is fast_subspace_projection for b in blocks)
    assert not is_fast_merge(small_plus)
    assert all(b.projection is subspace_projection for b in blocks)
    assert all(torch.equal(v, small_plus.state_dict()[k]) for k, v in state.items())


def test_fast_merge_whole_model_equal(small_plus, image):
    with torch.no_grad():
        expected = small_plus(image)
        with use_fast_merge(small_plus):
            got = small_plus(image)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_fast_paths_match_the_published_reference(fixtures):
    ref = torch.load(fixtures / "reference" / "deblurring_dgunet.pt", weights_only=True)
    model = keyed(build_model("deblurring", "DGUNet"))
    with torch.no_grad(), use_fast_merge(model):
        merged = model(ref["input"])
    with torch.no_grad(), use_fast(model):
        fastest = model(ref["input"])
    for outs in (merged, fastest):
        for got, expected in zip(outs, ref["outputs"], strict=True):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- fast convolutions

def test_fast_convs_swap_only_3x3_and_1x1_and_swap_back(small):
    with use_fast_convs(small):
        swapped = [m for m in small.modules() if type(m) is FastConv2d]
        assert {m.kernel_size for m in swapped} == {(3, 3), (1, 1)}
        assert all(m.stride == (1, 1) for m in swapped)
        assert any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (4, 4) for m in small.modules())
    assert not any(type(m) is FastConv2d for m in small.modules())


@pytest.fixture
def kernel_policy():
    """Set the kernel policy for one test; the previous policy and choices come back after."""
    saved = dict(fast._choices)
    fast._choices.clear()
    previous = set_kernel_policy("auto")
    yield set_kernel_policy
    set_kernel_policy(previous)
    fast._choices.clear()
    fast._choices.update(saved)


@pytest.mark.parametrize("kernel,padding,bias", [(3, 1, True), (3, 1, False), (1, 0, True), (1, 0, False)])
def test_fast_conv_equals_direct_conv(kernel, padding, bias, kernel_policy):
    kernel_policy("fast")  # the fast kernel itself, whatever this machine would choose
    conv = torch.nn.Conv2d(24, 16, kernel, padding=padding, bias=bias).eval()
    x = torch.randn(2, 24, 30, 22)
    with torch.no_grad():
        expected = conv(x)
        set_fast_convs(conv)
        got = conv(x)
    set_fast_convs(conv, enabled=False)
    assert type(conv) is torch.nn.Conv2d
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast_wins", [True, False])
def test_auto_policy_keeps_the_measured_winner_once_per_shape(fast_wins, kernel_policy, monkeypatch):
    timings = []

    def fake_time_pair(run_fast, run_default):
        timings.append(1)
        return (1.0, 2.0) if fast_wins else (2.0, 1.0)

    calls = []

    def spy_gemm(x, weight, bias):
        calls.append(x.shape)
        return fast._pointwise(x, weight, bias)

    monkeypatch.setattr(fast, "_time_pair", fake_time_pair)
    monkeypatch.setitem(fast._KERNELS, "gemm-1x1", spy_gemm)
    conv = torch.nn.Conv2d(8, 4, 1).eval()
    set_fast_convs(conv)
    with torch.no_grad():
        for _ in range(3):
            conv(torch.randn(2, 8, 20, 12))
        conv(torch.randn(1, 8, 21, 12))  # same size class (pixel count to a power of two)
        conv(torch.randn(1, 8, 300, 12))  # a new size class is measured again (on a 256-row crop)
    assert len(timings) == 2
    assert kernel_choices() == {"gemm-1x1": (2 * fast_wins, 2)}
    assert len(calls) == (5 if fast_wins else 0)
    assert {k[-1] for k in fast._choices} == {(20 * 12).bit_length(), (256 * 12).bit_length()}


def test_default_policy_never_calls_the_fast_kernels(kernel_policy, monkeypatch):
    kernel_policy("default")

    def refuse(*args):
        raise AssertionError("fast kernel called under the 'default' policy")

    monkeypatch.setitem(fast._KERNELS, "gemm-1x1", refuse)
    monkeypatch.setitem(fast._KERNELS, "winograd-3x3", refuse)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        with use_fast_convs(model):
            torch.testing.assert_close(model(x), expected, atol=0, rtol=0)
    with pytest.raises(ValueError, match="auto, fast, default"):
        set_kernel_policy("fastest")


def test_auto_policy_output_matches_published(kernel_policy, small, image):
    faithful = restore(small, image)
    torch.testing.assert_close(restore(small, image, fast=True), faithful, atol=1e-4, rtol=0)
    measured = {"gemm-1x1"} | ({"winograd-3x3"} if torch._nnpack_available() else set())
    assert set(kernel_choices()) == measured


def test_fast_restore_close_and_leaves_model_faithful(small, image):
    faithful = restore(small, image)
    torch.testing.assert_close(restore(small, image, fast=True), faithful, atol=1e-4, rtol=0)
    assert not is_fast_merge(small)
    assert not any(type(m) is FastConv2d for m in small.modules())


# ---------------------------------------------------------------- precision and memory format

def test_channels_last_equal(small, image):
    faithful = restore(small, image)
    torch.testing.assert_close(restore(small, image, channels_last=True), faithful, atol=1e-5, rtol=0)
    assert small.tail.weight.is_contiguous(memory_format=torch.channels_last)
    restore(small, image)  # the default path puts the weights back in the contiguous format
    assert all(p.is_contiguous() for p in small.parameters())


def test_bf16_runs_and_is_close(small, image):
    faithful = restore(small, image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no native bf16" on older CPUs
        out = restore(small, image, precision="bf16")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert psnr(out, faithful) > 35


def test_fp16_on_cpu_is_a_clear_error(small, image):
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        restore(small, image, precision="fp16")


def test_unknown_precision(small, image):
    with pytest.raises(ValueError, match="precision"):
        restore(small, image, precision="int8")


def test_model_stays_trainable_after_restore(small, image):
    restore(small, image, channels_last=True)
    restore(small, image)
    small.train()
    try:
        small(image)[0].mean().backward()  # would fail on weights created in inference mode
        assert small.tail.weight.grad is not None
    finally:
        small.zero_grad(set_to_none=True)
        small.eval()


@pytest.mark.cuda  # sees the GPU (tests/conftest.py hides it from unmarked tests)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precisions_close():
    model = keyed(build_model("deblurring", "DGUNet", **SMALL)).cuda()
    x = torch.rand(1, 3, 64, 64, device="cuda")
    faithful = restore(model, x)
    for precision in ("fp16", "bf16"):
        assert psnr(restore(model, x, precision=precision), faithful) > 35
    torch.testing.assert_close(restore(model, x, fast=True), faithful, atol=1e-4, rtol=0)


class _TwoConvs(torch.nn.Module):
    """A stand-in with DGUNet's interface (list output, size_multiple), cheap to compile."""

    size_multiple = 8

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(),
                                        torch.nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return [self.body(x) + x]


@pytest.mark.slow
def test_compile_equal_and_cached():
    pytest.importorskip("torch._inductor")
    from dgunet.inference import compiled

    model = _TwoConvs().eval()
    x = torch.rand(1, 3, 21, 30)
    try:
        out = restore(model, x, compile=True)
    except Exception as err:  # no C++ compiler or an unsupported platform
        pytest.skip(f"torch.compile unavailable here: {err}")
    torch.testing.assert_close(out, restore(model, x), atol=1e-5, rtol=0)
    assert compiled(model) is compiled(model)


# ---------------------------------------------------------------- bench command (no timing)

def test_bench_arguments_and_table():
    import argparse

    from dgunet import bench
    from dgunet.bench import inference

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--size", "64", "--large-size", "1280x720", "--paths", "faithful", "fast"])
    assert args.size == (64, 64) and args.large_size == (720, 1280)
    paths = inference.check_args(args)
    # The child re-parses the same settings.
    child = parser.parse_args(inference.child_command(args, "fast", "/tmp/x.pt")[4:])
    assert (child.size, child.large_size, child.child) == (args.size, args.large_size, "fast")
    out = torch.rand(1, 3, 8, 8)
    rows = [inference.Row(paths[0], (8, 8), [2.0, 2.2, 1.8], out),
            inference.Row(paths[1], (8, 8), [1.0], out + 1e-3)]
    text = inference.table(rows, {False: out}, batch=1)
    assert "| fast |" in text and "2.00x" in text and "1.00e-03" in text


def test_bench_rejects_bad_settings():
    import argparse

    from dgunet import bench
    from dgunet.bench.inference import check_args
    from dgunet.errors import ConfigError

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    for argv in (["--paths", "fp16"], ["--paths", "tiled", "--tile", "100"], ["--runs", "0"]):
        with pytest.raises(ConfigError):
            check_args(parser.parse_args(argv))
