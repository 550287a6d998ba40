"""The known-operator model done right: steps relative to L = ||A^T A||, noise-aware stages, the
fixed CS matrix, the known tasks' stage weights, and no host syncs from operators built per batch."""

from __future__ import annotations

import math

import pytest
import torch

from dgunet import physics
from dgunet.config import defaults, validate
from dgunet.errors import ConfigError, PhysicsError
from dgunet.losses import KNOWN_STAGE_WEIGHTS, LIGHT_STAGE_WEIGHTS, stage_loss
from dgunet.models import build_model
from dgunet.models.gradient import gradient_step, observe

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def kernels(batch: int, size: int = 5, seed: int = 1) -> torch.Tensor:
    k = rand(batch, 1, size, size, seed=seed)
    return k / k.sum(dim=(-2, -1), keepdim=True)


class Scaled:
    """c A with y -> c y: A and A_adjoint scaled, A_dagger kept (it undoes the scale), noise c sigma.
    Duck-typed (no norm_AtA) unless `exact`: then the model gets c^2 L from the inner operator."""

    def __init__(self, inner, c: float, exact: bool):
        self.inner, self.c = inner, c
        self.noise_model = physics.GaussianNoise(c * inner.noise_model.sigma)
        if exact:
            self.norm_AtA = lambda x: self.c**2 * torch.as_tensor(inner.norm_AtA(x))

    def A(self, x):
        return self.c * self.inner.A(x)

    def A_adjoint(self, y):
        return self.c * self.inner.A_adjoint(y)

    def A_dagger(self, y):
        return self.inner.A_dagger(y / self.c)


class DenseMatrix:
    """A user's operator with A and A_adjoint only: a dense random map on each flattened sample."""

    def __init__(self, shape, m, seed=0):
        n = math.prod(shape)
        self.shape = shape
        self.M = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / 7

    def A(self, x):
        return x.flatten(1) @ self.M.to(x.dtype).t()

    def A_adjoint(self, y):
        return (y @ self.M.to(y.dtype)).reshape(-1, *self.shape)


def phi_pair():
    torch.manual_seed(0)
    model = build_model("deblurring", "DGUNet", **SMALL)
    return model.phi_0, model.phit_0


# ------------------------------------------------------------------ step sizes relative to L


STEP_OPERATORS = {
    "bicubic-x4": lambda: physics.Downsample(4),
    "blur": lambda: physics.Blur(kernels(2)),
    "kernel-x2": lambda: physics.Downsample(2, kernels(2, 7)),
    "cs-gaussian": lambda: physics.CompressedSensing(0.25, block=8, orthonormal=False),  # L about 9
}


@pytest.mark.parametrize("make", list(STEP_OPERATORS.values()), ids=list(STEP_OPERATORS))
def test_known_step_is_r_over_L_times_the_gradient_of_the_data_term(make):
    op = make().double()
    channels = 1 if isinstance(op, physics.CompressedSensing) else 3
    x = rand(2, channels, 32, 32, seed=2, dtype=torch.float64).requires_grad_(True)
    y = op.A(rand(2, channels, 32, 32, seed=3, dtype=torch.float64))
    (grad,) = torch.autograd.grad(0.5 * (op.A(x) - y).pow(2).sum(), x)
    obs = observe(y, op, "known", min_size=16, multiple=8)
    lipschitz = torch.as_tensor(op.norm_AtA(x), dtype=torch.float64).reshape(-1, 1, 1, 1)
    r = torch.tensor([0.37], dtype=torch.float64)
    v = gradient_step(x.detach(), obs, r, *phi_pair())
    torch.testing.assert_close(x.detach() - v, r * grad / lipschitz, rtol=1e-6, atol=1e-12)


def test_a_duck_typed_operator_gets_L_by_power_iteration():
    op = DenseMatrix((3, 16, 16), m=40)
    y = torch.rand(2, 40, dtype=torch.float64)

    class Start:  # the image-space start of this operator has the model's size
        A, A_adjoint, M = op.A, op.A_adjoint, op.M

    obs = observe(y, Start(), "known", min_size=16, multiple=8)
    exact = torch.linalg.matrix_norm(op.M, ord=2).item() ** 2
    assert float(obs.step_scale) == pytest.approx(1 / exact, rel=1e-3)


@pytest.mark.parametrize("exact", [True, False], ids=["norm_AtA", "power-iteration"])
@pytest.mark.parametrize("mode,noise_aware", [("known", False), ("known+learned", False), ("known", True)])
@pytest.mark.parametrize("make", [lambda: physics.Blur(kernels(2), noise_model=physics.GaussianNoise(
    torch.tensor([0.01, 0.03]))), lambda: physics.Downsample(2, noise_model=physics.GaussianNoise(0.02))],
    ids=["blur", "bicubic-x2"])
def test_output_is_unchanged_when_the_operator_and_y_are_scaled(make, mode, noise_aware, exact, one_thread):
    """A -> cA, y -> cy (sigma -> c sigma, A_dagger kept): the same 7 outputs to 1e-4 relative."""
    task = "deblurring" if isinstance(make(), physics.Blur) else "sr"
    torch.manual_seed(0)
    model = build_model(task, "DGUNet", gradient=mode, noise_aware=noise_aware, **SMALL).eval()
    if noise_aware:  # make the conditioning act (it starts neutral)
        torch.nn.init.normal_(model.noise_net.gain.weight, std=0.5)
        torch.nn.init.normal_(model.noise_net.shift.weight, std=0.5)
    op = make()
    y = op.A(rand(2, 3, 32, 32, seed=4))
    with torch.no_grad():
        reference = model(y, physics=Scaled(op, 1.0, exact))  # the same route to L, unscaled
        for c in (5.0, 0.2):
            scaled = model(c * y, physics=Scaled(op, c, exact))
            for ours, theirs in zip(scaled, reference, strict=True):
                assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-4


# ------------------------------------------------------------------ noise-aware stages


def noise_aware_pair(arch: str):
    torch.manual_seed(0)
    aware = build_model("deblurring", arch, gradient="known", noise_aware=True, **SMALL).eval()
    plain = build_model("deblurring", arch, gradient="known", **SMALL).eval()
    plain.load_state_dict({k: v for k, v in aware.state_dict().items() if not k.startswith("noise_net.")})
    return aware, plain


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_noise_aware_adds_its_keys_after_the_published_ones_and_starts_neutral(arch, one_thread):
    aware, plain = noise_aware_pair(arch)
    keys = list(aware.state_dict())
    assert keys[:len(plain.state_dict())] == list(plain.state_dict())
    assert all(k.startswith("noise_net.") for k in keys[len(plain.state_dict()):])
    op = physics.Blur(kernels(2), noise_model=physics.GaussianNoise(torch.tensor([0.0, 0.05])))
    y = op.A(rand(2, 3, 32, 32, seed=5))
    with torch.no_grad():
        for a, b in zip(aware(y, physics=op), plain(y, physics=op), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_noise_aware_model_uses_each_samples_sigma(arch, one_thread):
    aware, _ = noise_aware_pair(arch)
    for head in (aware.noise_net.gain, aware.noise_net.shift):
        torch.nn.init.normal_(head.weight, std=0.5)
    k = kernels(2)
    y = physics.Blur(k).A(rand(2, 3, 32, 32, seed=6))
    sigmas = torch.tensor([0.0, 0.1])

    def blur(i, sigma):  # the start A_dagger(y) depends on sigma too: keep the operator's sigma fixed
        return physics.Blur(k[i], noise_model=physics.GaussianNoise(sigma))

    with torch.no_grad():
        batch = aware(y, physics=blur(slice(None), sigmas))[0]
        explicit = aware(y, physics=blur(slice(None), sigmas), sigma=sigmas)[0]
        alone = [aware(y[i:i + 1], physics=blur(slice(i, i + 1), float(sigmas[i])))[0] for i in range(2)]
        swapped = aware(y, physics=blur(slice(None), sigmas), sigma=sigmas.flip(0))[0]
    torch.testing.assert_close(batch, explicit)
    torch.testing.assert_close(batch, torch.cat(alone), rtol=1e-4, atol=1e-5)
    assert (batch - swapped).abs().max().item() > 1e-3  # sigma changes the restoration


def test_noise_aware_gains_stay_in_zero_two():
    from dgunet.models.image import NoiseConditioning

    net = NoiseConditioning(8)
    torch.nn.init.normal_(net.gain.weight, std=100.0)
    gains, shifts = net(torch.tensor([0.0, 0.02, 0.2, 1.0]))
    assert gains.shape == (4, 7) and shifts.shape == (4, 7, 8, 1, 1)
    assert torch.all((gains >= 0) & (gains <= 2))


def test_noise_level_mistakes_are_one_line_errors():
    aware = build_model("deblurring", "DGUNet", gradient="known", noise_aware=True, **SMALL)
    plain = build_model("deblurring", "DGUNet", gradient="known", **SMALL)
    y = torch.rand(2, 3, 16, 16)

    class NoNoise:
        def A(self, x):
            return x

        def A_adjoint(self, y):
            return y

    cases = [(lambda: aware(y, physics=NoNoise()), "needs the noise level"),
             (lambda: aware(y, physics=physics.Identity(), sigma=torch.rand(3)), "3 noise levels for a batch"),
             (lambda: plain(y, physics=physics.Identity(), sigma=0.1), "noise_aware=True")]
    for call, fix in cases:
        with pytest.raises(PhysicsError) as err:
            call()
        assert fix in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="needs a known operator"):
        build_model("deblurring", "DGUNet", noise_aware=True, **SMALL)


def test_noise_aware_and_stage_weights_pass_through_the_config():
    from dgunet.engine.steps import build_model_from_cfg, compute_loss

    cfg = defaults()
    cfg.merge_from_list(["MODEL.GRADIENT", "known", "MODEL.NOISE_AWARE", True, "DEGRADE.KIND", "blur",
                         "MODEL.N_FEAT", 8, "MODEL.SCALE_UNETFEATS", 4, "MODEL.SCALE_ORSNETFEATS", 4,
                         "LOSS.STAGE_WEIGHTS", list(KNOWN_STAGE_WEIGHTS)])
    validate(cfg)
    assert build_model_from_cfg(cfg).noise_aware
    outputs = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(7)]
    target = torch.rand(1, 3, 16, 16)
    expected = stage_loss(outputs, target, "deblurring", stage_weights=list(KNOWN_STAGE_WEIGHTS))
    torch.testing.assert_close(compute_loss(outputs, target, cfg), expected)
    for bad in (["MODEL.GRADIENT", "learned"], ["LOSS.STAGE_WEIGHTS", [1.0, 1.0]],
                ["LOSS.STAGE_WEIGHTS", [0.0, 1, 1, 1, 1, 1, 1]]):
        broken = cfg.clone()
        broken.merge_from_list(bad)
        with pytest.raises(ConfigError):
            validate(broken)


# ------------------------------------------------------------------ the stage weights


def test_stage_weights_default_is_the_published_loss_and_weights_act():
    gen = torch.Generator().manual_seed(7)
    target = torch.rand(2, 3, 16, 16, generator=gen)
    outputs = [torch.rand(2, 3, 16, 16, generator=gen) for _ in range(7)]
    for task in ("deblurring", "denoising", "sr"):
        published = stage_loss(outputs, target, task)
        torch.testing.assert_close(stage_loss(outputs, target, task, stage_weights=[1.0] * 7), published)
        weighted = stage_loss(outputs, target, task, stage_weights=list(KNOWN_STAGE_WEIGHTS))
        terms = [stage_loss([o], target, task) for o in outputs]
        expected = sum(w * t for w, t in zip(KNOWN_STAGE_WEIGHTS, terms, strict=True))
        torch.testing.assert_close(weighted, expected)
        assert weighted < published  # the earlier stages weigh less
    with pytest.raises(ConfigError, match="one per output"):
        stage_loss(outputs, target, "sr", stage_weights=[1.0])


@pytest.mark.parametrize(("path", "weights"), [("Deblurring/training_nonblind.yml", LIGHT_STAGE_WEIGHTS),
                                               ("Denoising/training_gaussian.yml", KNOWN_STAGE_WEIGHTS),
                                               ("Super_Resolution/training.yml", LIGHT_STAGE_WEIGHTS)])
def test_known_task_configs_favour_the_final_stage(path, weights):
    from conftest import REPO as ROOT

    cfg = defaults()
    cfg.merge_from_file(str(ROOT / path))
    validate(cfg)
    assert tuple(cfg.LOSS.STAGE_WEIGHTS) == pytest.approx(weights)
    assert weights[0] == 1.0 and max(weights[1:]) <= 0.02 * weights[0]  # mostly the output's loss
    published = defaults()
    published.merge_from_file(str(ROOT / "Deblurring/training.yml"))
    assert list(published.LOSS.STAGE_WEIGHTS) == []


# ------------------------------------------------------------------ blind vs known without A_adjoint


def test_a_blind_model_given_an_operator_computes_no_adjoint_on_the_batch(one_thread):
    calls = []

    class CountingBlur(physics.Blur):
        def A_adjoint(self, y):
            calls.append(y.shape[0])
            return super().A_adjoint(y)

    class DuckBlur:
        def __init__(self, op):
            self.op = op

        def A(self, x):
            return self.op.A(x)

        def A_adjoint(self, y):
            calls.append(y.shape[0])
            return self.op.A_adjoint(y)

    torch.manual_seed(0)
    model = build_model("deblurring", "DGUNet", **SMALL).eval()
    y = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        model(y, physics=CountingBlur(kernels(1)))
        assert calls == []  # ours: image_shape says "same size", no adjoint at all
        model(y, physics=DuckBlur(physics.Blur(kernels(1))))
        assert calls == [1]  # duck-typed: on one sample only


# ------------------------------------------------------------------ compressive sensing, fixed Phi


def test_cs_fixed_matrix_has_orthonormal_rows_and_unit_step_scale():
    from dgunet.models import CS_RATIOS

    for ratio in CS_RATIOS:
        fixed = build_model("cs", "DGUNet", cs_ratio=ratio, phi="fixed", **SMALL)
        phi = fixed.Phi.detach().double()
        assert (phi @ phi.t() - torch.eye(phi.shape[0], dtype=torch.float64)).abs().max().item() < 1e-5
        assert fixed.step_scale == pytest.approx(1.0, abs=1e-5)
    assert build_model("cs", "DGUNet", cs_ratio=25, **SMALL).step_scale is None  # learned: published step


def cs_crops(count: int, seed: int) -> torch.Tensor:
    """Gray 32x32 crops of scikit-image's bundled photos (no download)."""
    import numpy as np
    from skimage import data

    gray = [np.asarray(img, dtype=np.float32) / 255 for img in (data.camera(), data.moon(), data.coins())]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        img = gray[rng.integers(len(gray))]
        i, j = rng.integers(0, img.shape[0] - 32), rng.integers(0, img.shape[1] - 32)
        out.append(torch.from_numpy(img[i:i + 32, j:j + 32].copy()))
    return torch.stack(out)[:, None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float((a.clamp(0, 1) - b).pow(2).mean()))


@pytest.mark.slow
def test_fixed_phi_cs_training_ends_above_its_phit_y_start(one_thread):
    """A tiny PHI fixed model (25%), 40 Adam steps on 32x32 crops: the final output beats Phi^T y."""
    from dgunet.models.cs import Measurements, blocks_to_image

    torch.manual_seed(0)
    model = build_model("cs", "DGUNet", cs_ratio=25, phi="fixed", **SMALL)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    test = cs_crops(16, seed=100)
    start = psnr(blocks_to_image(Measurements(model.Phi.detach(), test).phit_b, test.shape), test)
    for step in range(40):
        x = cs_crops(8, seed=step)
        loss = stage_loss(model(x), x, "cs")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = psnr(model.eval()(test)[0], test)
    assert final > start + 1.0, (start, final)


# ------------------------------------------------------------------ no host sync per batch


ENGINE_SPECS = {"blur": ("blur", {}), "blur-reflect": ("blur", {"padding": "reflect"}),
                "sr-bicubic": ("sr", {"scale": 2}), "sr-blur": ("sr", {"scale": 2, "sr_kernel": "blur"}),
                "noise": ("noise", {})}


@pytest.mark.parametrize("mode", ["known", "known+learned"])
@pytest.mark.parametrize("name", list(ENGINE_SPECS))
def test_a_known_forward_on_the_engines_operators_reads_no_values(name, mode):
    """Model, batch and operator on the "meta" device, where any bool()/item()/copy to the host raises:
    the engine's per-batch operator (build_operator) and the whole known forward, L and sigma
    included, never sync with the host (on a GPU each read would wait for the queue)."""
    from dgunet.data.synthetic import DegradeSpec, build_operator

    kind, extra = ENGINE_SPECS[name]
    task = {"blur": "deblurring", "sr": "sr", "noise": "denoising"}[kind]
    model = build_model(task, "DGUNet", gradient=mode, noise_aware=True, **SMALL).to("meta")
    op = build_operator(DegradeSpec(kind, **extra), torch.rand(2, 25, 25).to("meta"), torch.rand(2).to("meta"))
    y = op.A(torch.empty(2, 3, 32, 32, device="meta"))
    outputs = model(y, physics=op)
    assert len(outputs) == 7 and outputs[0].shape == (2, 3, 32, 32)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the check can fail: a read does raise
        bool(outputs[0].sum() > 0)


def test_test_py_loader_rebuilds_a_noise_aware_checkpoint(tmp_path):
    from dgunet.testrun.loading import load_model

    torch.manual_seed(0)
    saved = build_model("deblurring", "DGUNet", gradient="known", noise_aware=True, **SMALL)
    torch.save(saved.state_dict(), tmp_path / "aware.pth")
    loaded = load_model("deblurring", tmp_path / "aware.pth", gradient="known").model
    assert loaded.noise_aware
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), saved.state_dict().values(),
                                                  strict=True))
    plain = build_model("deblurring", "DGUNet", gradient="known", **SMALL)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    assert not load_model("deblurring", tmp_path / "plain.pth", gradient="known").model.noise_aware
