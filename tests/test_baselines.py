"""The classical baselines against their mathematics, and the field's protocols: modcrop, the
bicubic kernel, padding around the model only, gray images, kernel-independent warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _engine_helpers import crops, write_rgb

from dgunet import physics
from dgunet.baselines import BASELINES, hyper_laplacian_weight, oracle_eps, regularised_inverse
from dgunet.baselines.hqs import (
    HyperLaplacian,
    Schedule,
    hyper_laplacian_deconvolve,
    objective,
    shrink,
    split_objective,
)
from dgunet.benchmarks import Case, benchmark_kernels, cases, protocol
from dgunet.errors import DataError
from dgunet.metrics.protocols import get_protocol
from dgunet.physics.bicubic import resize_matrix
from dgunet.testrun.known import (
    PaddedOperator,
    degrade_case,
    modcrop,
    pad_to_multiple,
    photo_images,
    run_model,
    sigma_range_warnings,
    unpad,
)

SEED = protocol()["noise_seed"]


def image(size: int = 40, seed: int = 3) -> torch.Tensor:
    return torch.from_numpy(crops(1, size, seed=seed)[0]).permute(2, 0, 1)[None].double() / 255


def mse(x: torch.Tensor, clean: torch.Tensor) -> float:
    return float((x.double().clamp(0, 1) - clean.double()).pow(2).mean())


# ---------------------------------------------------------------- hyper-Laplacian HQS

def test_hqs_with_lambda_to_zero_and_no_noise_inverts_the_blur():
    x = image()
    kernel = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]], dtype=torch.float64)
    y = physics.Blur(kernel[None, None]).A(x)  # |K| >= 0.2 at every frequency: invertible
    restored = hyper_laplacian_deconvolve(y, kernel[None, None], 1e-12)
    assert float((restored - x).abs().max()) < 1e-6
    assert float((y - x).abs().max()) > 0.05  # the blur did something to undo


def test_shrinkage_is_the_exact_pixelwise_minimiser():
    v = torch.linspace(-0.5, 0.5, 201, dtype=torch.float64)
    lam, beta = torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    for alpha in (2 / 3, 1 / 2):
        w = shrink(v, lam, beta, alpha)
        grid = torch.linspace(-0.6, 0.6, 240001, dtype=torch.float64)[None, :]
        energy = lam * grid.abs() ** alpha + beta / 2 * (grid - v[:, None]) ** 2
        mine = lam * w.abs() ** alpha + beta / 2 * (w - v) ** 2
        assert bool((mine <= energy.min(dim=1).values + 1e-10).all())
        assert float(w[100]) == 0.0 and bool((w.abs() <= v.abs()).all())  # shrinks toward 0


def test_hqs_steps_decrease_the_split_objective_and_the_schedule_the_true_one():
    x = image(48)
    kernel = torch.from_numpy(benchmark_kernels()["motion_03"])[None, None]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    y = physics.Blur(kernel).A(x) + 0.01 * noise
    lam, alpha = torch.tensor([3e-4], dtype=torch.float64), 2 / 3
    solver = HyperLaplacian(y, kernel)
    beta = torch.tensor([3e-3], dtype=torch.float64)
    current, w = y.double(), solver.w_step(y.double(), lam, beta, alpha)
    values = [float(split_objective(current, w, y, kernel, lam, beta, alpha))]
    for _ in range(6):  # block coordinate descent at a fixed beta: every exact step goes down
        current = solver.x_step(w, beta)
        values.append(float(split_objective(current, w, y, kernel, lam, beta, alpha)))
        w = solver.w_step(current, lam, beta, alpha)
        values.append(float(split_objective(current, w, y, kernel, lam, beta, alpha)))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] < 0.9 * values[0]
    final = hyper_laplacian_deconvolve(y, kernel, lam)
    start = physics.Blur(kernel).A_dagger(y)
    assert float(objective(final, y, kernel, lam, alpha)) < float(objective(start, y, kernel, lam, alpha))
    assert float(objective(final, y, kernel, lam, alpha)) < float(objective(y, y, kernel, lam, alpha))


def test_schedule_is_the_papers_beta_over_lambda_from_1_to_256():
    betas = Schedule().betas(torch.tensor(2.0))
    ratios = [float(b) / 2 for b in betas]
    assert ratios[0] == 1 and ratios[-1] < 256 <= ratios[-1] * 2 * np.sqrt(2)
    np.testing.assert_allclose(np.diff(np.log(ratios)), np.log(2 * np.sqrt(2)))


def test_the_tuned_hyper_laplacian_beats_the_rule_at_1_percent_noise():
    (case,) = [c for c in cases("nonblind") if c.name == "motion_05_noise1"]
    gains = []
    for stem, photo in photo_images():  # the test photos, never seen by the tuning
        _clean, y, op, params = degrade_case(case, photo, stem, SEED)
        rule = mse(BASELINES["adagger"](y, op, params), params["clean"])
        mine = mse(BASELINES["hyperlaplacian"](y, op, params), params["clean"])
        gains.append(10 * np.log10(rule / mine))  # dB
    assert min(gains) > 0 and np.mean(gains) > 1.0, gains  # chelsea's fur gains least
    lam = hyper_laplacian_weight(torch.tensor([0.01, 0.03]), "blur")
    assert 0 < float(lam[0]) < float(lam[1])  # more noise, a stronger prior


# ---------------------------------------------------------------- the regularised-inverse family

def test_oracle_eps_is_at_least_as_good_as_the_rule_on_every_image():
    photos = photo_images()
    for case in (cases("nonblind")[4], cases("nonblind")[19], cases("gaussian")[1]):
        for stem, photo in photos:
            _clean, y, op, params = degrade_case(case, photo, stem, SEED)
            rule = mse(op.A_dagger(y), params["clean"])
            oracle = mse(BASELINES["adagger-oracle"](y, op, params), params["clean"])
            assert oracle <= rule * (1 + 1e-9), (case.name, stem)


def test_oracle_eps_finds_the_minimum_of_the_family():
    x = image(48)
    kernel = torch.from_numpy(benchmark_kernels()["gauss_01"])[None, None]
    y = physics.Blur(kernel).A(x) + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2),
                                                       dtype=x.dtype)
    eps = float(oracle_eps(y, kernel, x)[0])
    best = mse(regularised_inverse(y, kernel, eps), x)
    for factor in (0.8, 0.95, 1.05, 1.25):  # a local minimum, to the precision of the search
        assert best <= mse(regularised_inverse(y, kernel, eps * factor), x) * (1 + 1e-9)
    assert mse(regularised_inverse(y, kernel, 1e-2 * eps), x) > best * 1.01  # and not a flat one


def test_wiener_alias_is_the_flat_spectrum_filter_and_baselines_refuse_other_tasks():
    assert BASELINES["wiener"] is BASELINES["wiener-flat"]
    params = {"kernel": torch.ones(1, 1, 1), "sigma": torch.tensor([0.1]), "scale": 4}
    for name in ("hyperlaplacian", "adagger-oracle", "nlm", "wiener-flat"):
        with pytest.raises(Exception, match="super-resolution"):
            BASELINES[name](torch.rand(1, 3, 8, 8), None, params)


def test_nlm_denoises_a_noisy_gray_and_rgb_photo():
    (case,) = [c for c in cases("gaussian") if c.name == "sigma25"]
    stem, photo = photo_images()[2]
    for img in (photo, photo[..., 1]):
        _clean, y, op, params = degrade_case(case, img[:96, :96], stem, SEED)
        out = BASELINES["nlm"](y, op, params)
        assert out.shape == y.shape
        assert 10 * np.log10(mse(y, params["clean"]) / mse(out, params["clean"])) > 3


# ---------------------------------------------------------------- SR protocol

def test_modcrop_cuts_the_top_left_multiple_of_the_scale_on_odd_sizes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 43, 3), dtype=np.uint8)
    assert np.array_equal(modcrop(img, 4), img[:36, :40]) and np.array_equal(modcrop(img, 3), img[:36, :42])
    assert modcrop(img[..., 0], 2).shape == (36, 42)
    sr4 = Case("x4", "sr", None, 0.0, 4, 0)
    clean, y, op, _params = degrade_case(sr4, img, "odd", SEED)
    assert clean.shape == (36, 40, 3) and np.array_equal(clean, img[:36, :40]) and y.shape == (1, 3, 9, 10)
    blur = cases("nonblind")[0]
    clean, y, _op, _params = degrade_case(blur, img, "odd", SEED)
    assert clean.shape == (37, 43, 3) and y.shape == (1, 3, 37, 43)  # deblurring keeps the image whole


def keys_cubic(t: float) -> float:
    """Keys (1981) cubic convolution with a = -0.5, written out from its definition."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2 if t < 2 else 0.0


def imresize_row(n_in: int, scale: int, i: int) -> np.ndarray:
    """Row i (1-based) of MATLAB imresize(., 1/scale, 'bicubic') on n_in samples, derived here:
    output pixel i sits at input position u = scale*i - (scale-1)/2; antialiasing stretches the
    kernel by the scale, h(d) = cubic(d/scale)/scale; samples outside 1..n mirror (0 -> 1)."""
    u = scale * i - (scale - 1) / 2
    row = np.zeros(n_in)
    for tap in range(int(np.floor(u - 2 * scale)) - 1, int(np.ceil(u + 2 * scale)) + 2):
        source = tap if 1 <= tap <= n_in else (1 - tap if tap < 1 else 2 * n_in + 1 - tap)
        row[source - 1] += keys_cubic((u - tap) / scale) / scale
    return row / row.sum()


def test_bicubic_kernel_equals_the_derived_matlab_imresize_weights():
    # x2, output pixel 3 (u = 5.5), by hand: cubic at distances 1.75, 1.25, 0.75, 0.25, sum 2 -> /256.
    x2 = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
    np.testing.assert_allclose(resize_matrix(16, 8)[2, 1:9].numpy(), x2, atol=1e-15)  # u = 5.5: taps 2..9
    for n_in, scale in ((16, 2), (18, 3), (20, 4), (12, 4)):  # modcropped sizes: scale exactly 1/s
        derived = np.stack([imresize_row(n_in, scale, i) for i in range(1, n_in // scale + 1)])
        np.testing.assert_allclose(resize_matrix(n_in, n_in // scale).numpy(), derived, atol=1e-14)
    x = torch.rand(1, 1, 20, 20, dtype=torch.float64)
    derived = np.stack([imresize_row(20, 4, i) for i in range(1, 6)])
    np.testing.assert_allclose(physics.Downsample(4).A(x)[0, 0].numpy(), derived @ x[0, 0].numpy() @ derived.T,
                               atol=1e-13)


# ---------------------------------------------------------------- padding around the model only

def test_padded_operator_is_a_on_the_top_left_crop_with_its_exact_adjoint():
    op = physics.Downsample(4)
    x = torch.rand(1, 3, 36, 44, dtype=torch.float64)
    padded = PaddedOperator(op, (36, 44), 8)
    xp = pad_to_multiple(x, 8)
    assert xp.shape[-2:] == (40, 48) and torch.equal(unpad(xp, (36, 44)), x)
    assert torch.equal(padded.A(xp), op.A(x))
    y = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    u = torch.rand(1, 3, 40, 48, dtype=torch.float64)
    assert abs(float((padded.A(u) * y).sum() - (u * padded.A_adjoint(y)).sum())) < 1e-10
    assert padded.A_dagger(y).shape[-2:] == (40, 48)
    assert torch.equal(unpad(padded.A_dagger(y), (36, 44)), op.A_dagger(y))


class Recorder:
    """An operator that records the image sizes it is applied to."""

    def __init__(self, op):
        self.op, self.seen, self.noise_model = op, set(), op.noise_model

    def A(self, x):
        self.seen.add(tuple(x.shape[-2:]))
        return self.op.A(x)

    def A_adjoint(self, y):
        out = self.op.A_adjoint(y)
        self.seen.add(tuple(out.shape[-2:]))
        return out

    def A_dagger(self, y):
        return self.op.A_dagger(y)


@pytest.mark.parametrize("task, gradient", [("sr", "known"), ("deblurring", "known+learned"),
                                            ("deblurring", "learned")])
def test_the_model_runs_at_any_size_and_the_operator_sees_the_true_one(task, gradient, one_thread):
    from dgunet import build_model

    torch.manual_seed(0)
    widths = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}
    model = build_model(task, "DGUNet", **widths, gradient=gradient).eval()
    op = physics.Downsample(4) if task == "sr" else physics.Blur(torch.ones(1, 1, 3, 3) / 9)
    recorder = Recorder(op)
    x = torch.rand(1, 3, 36, 44)
    with torch.no_grad():
        out = run_model(model, op.A(x), recorder)
    assert out.shape == (1, 3, 36, 44)
    assert recorder.seen == {(36, 44)}  # never a padded size


# ---------------------------------------------------------------- gray images, warnings

def test_gray_images_are_restored_and_scored_on_their_one_channel(tmp_path, capsys, one_thread):
    import cv2

    from dgunet.testrun import main as test_main

    kernels = tmp_path / "kernels"
    kernels.mkdir()
    np.save(kernels / "box.npy", np.ones((3, 3)))
    clean = tmp_path / "data" / "Kodak24"
    clean.mkdir(parents=True)
    gray = [img[..., 1] for img in crops(2, 45, seed=6)]  # odd sizes: used whole
    for i, img in enumerate(gray):
        assert cv2.imwrite(str(clean / f"g{i}.png"), img)
    write_rgb(clean / "rgb.png", crops(1, 45, seed=7)[0])
    args = ["--protocol", "nonblind", "--kernels", str(kernels), "--input_dir", str(tmp_path / "data"),
            "--dataset", "Kodak24"]
    for method in ("adagger", "wiener"):
        assert test_main("deblurring", [*args, "--method", method, "--result_dir", str(tmp_path / method)]) == 0
    err = capsys.readouterr().err
    assert "warning: --method wiener is deprecated" in err and "wiener-flat" in err
    out = cv2.imread(str(tmp_path / "adagger" / "Kodak24" / "box_noise1" / "g0.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (45, 45)  # one channel, the whole image
    scores = json.loads((tmp_path / "adagger" / "Kodak24" / "scores.json").read_text())["images"]
    blurred = cv2.imread(str(tmp_path / "wiener" / "Kodak24" / "box_noise1" / "g0.png"), cv2.IMREAD_UNCHANGED)
    assert blurred.shape == (45, 45)
    from dgunet.metrics.psnr import psnr

    first = next(s for s in scores if s["name"] == "box_noise1/g0")
    assert first["psnr"] == pytest.approx(psnr(out, gray[0], 255.0), abs=1e-9)


def test_gray_pair_scoring_and_gray_to_an_rgb_only_protocol():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-3, 4, gt.shape), 0, 255).astype(np.uint8)
    inner = (pred[2:-2, 2:-2].astype(float) - gt[2:-2, 2:-2]) ** 2
    assert get_protocol("sr_x2").score(pred, gt)[0] == pytest.approx(10 * np.log10(255**2 / inner.mean()))
    assert get_protocol("nonblind").score(pred, gt)[0] > 35
    with pytest.raises(DataError) as err:
        get_protocol("deraining").score(pred, gt, ("out/a.png", "gt/a.png"))
    message = str(err.value)
    assert "out/a.png" in message and "RGB" in message and "repeat" in message and "\n" not in message


def test_noise_outside_the_trained_range_gives_a_one_line_warning_naming_it():
    from dgunet.config import defaults

    cfg = defaults()
    cfg.DEGRADE.KIND, cfg.DEGRADE.SIGMA_RANGE = "noise", [0.0, 0.1]
    (note,) = sigma_range_warnings(cases("gaussian"), cfg, "w.pth")
    assert "w.pth" in note and "0 to 0.1" in note and "sigma50" in note and "sigma15" not in note
    assert "DEGRADE.SIGMA_RANGE" in note and "\n" not in note
    cfg.DEGRADE.SIGMA_RANGE = [0.0, 0.2]
    assert sigma_range_warnings(cases("gaussian"), cfg, "w.pth") == []


def test_the_padded_operator_knows_its_norm_and_image_shape_without_a_power_iteration():
    from dgunet.physics.base import power_iteration
    from dgunet.testrun.known import PaddedOperator

    kernel = torch.zeros(1, 1, 5, 5)
    kernel[0, 0, 2, :] = 0.2
    inner = physics.Blur(kernel, padding="circular")
    padded = PaddedOperator(inner, (37, 43), 8)
    x = torch.zeros(1, 3, 40, 48)
    exact = float(padded.norm_AtA(x))
    assert exact == pytest.approx(float(inner.norm_AtA(x[..., :37, :43])))
    assert exact == pytest.approx(float(power_iteration(padded, x, iterations=200, tolerance=1e-7)), rel=1e-3)
    assert padded.image_shape((1, 3, 37, 43)) == (1, 3, 40, 48)
