"""The start x0 of a known model (dgunet.models.start): a classical solver's estimate, the same one its
`--method` baseline reports, carried through config, checkpoints, padding and the loaders."""

from __future__ import annotations

import pytest
import torch

from dgunet import physics
from dgunet.baselines import BASELINES
from dgunet.config import config_from_yaml_string, defaults, validate
from dgunet.errors import ConfigError, PhysicsError
from dgunet.models import build_model
from dgunet.models.start import start_estimate
from dgunet.testrun.known import PaddedOperator, run_model
from dgunet.testrun.loading import load_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def photo(batch: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth images with edges (a classical prior has something to do), (B,3,size,size) in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(batch, 3, size + 6, size + 6, generator=g), 7, stride=1)
    return ((x - x.amin()) / (x.amax() - x.amin()) > 0.5).float() * 0.6 + 0.2


def blur_op(batch: int, sigma: float = 0.01) -> physics.Blur:
    k = torch.ones(batch, 1, 5, 5) / 25
    return physics.Blur(k, noise_model=physics.GaussianNoise(torch.full((batch,), sigma)))


def test_hyperlaplacian_start_is_the_baseline_and_beats_adagger():
    clean = photo()
    op = blur_op(2)
    y = op.A(clean) + 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    x0 = start_estimate(op, y, "hyperlaplacian")
    params = {"kernel": op.kernel[:, 0], "sigma": torch.full((2,), 0.01), "scale": 1}
    assert torch.allclose(x0, BASELINES["hyperlaplacian"](y, op, params), atol=1e-6)
    err = lambda x: (x.clamp(0, 1) - clean).pow(2).mean()  # noqa: E731
    assert err(x0) < err(op.A_dagger(y))
    assert torch.equal(start_estimate(op, y, "adagger"), op.A_dagger(y))


def test_the_model_starts_from_its_start_and_adds_no_parameters():
    op = blur_op(2)
    y = op(photo())
    plain = build_model("deblurring", gradient="known", **SMALL)
    warm = build_model("deblurring", gradient="known", start="hyperlaplacian", **SMALL)
    assert list(plain.state_dict()) == list(warm.state_dict())
    assert torch.allclose(warm.observe(y, op).x0, start_estimate(op, y, "hyperlaplacian"))
    # the final head adds its correction onto x0: with the head zeroed the output is x0 itself
    with torch.no_grad():
        warm.tail.weight.zero_()
    assert torch.allclose(warm(y, physics=op)[0], warm.observe(y, op).x0, atol=1e-6)


def test_nlm_start_denoises_and_refuses_a_blur():
    import skimage.data

    op = physics.Identity(noise_model=physics.GaussianNoise(0.1))
    clean = torch.from_numpy(skimage.data.astronaut()[100:164, 200:264]).permute(2, 0, 1)[None].float() / 255
    y = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    x0 = start_estimate(op, y, "nlm")
    params = {"kernel": torch.ones(1, 1, 1), "sigma": torch.tensor([0.1]), "scale": 1}
    assert torch.allclose(x0, BASELINES["nlm"](y, op, params))
    assert (x0 - clean).pow(2).mean() < (y - clean).pow(2).mean() / 2
    with pytest.raises(PhysicsError, match="denoises"):
        start_estimate(blur_op(1), y, "nlm")


def test_a_classical_start_names_what_it_needs():
    y = torch.rand(1, 3, 32, 32)
    with pytest.raises(PhysicsError, match="circular Blur"):
        start_estimate(physics.Downsample(2), y[..., :16, :16], "hyperlaplacian")
    with pytest.raises(PhysicsError, match="circular Blur"):
        start_estimate(physics.Blur(torch.ones(5, 5) / 25, padding="reflect"), y, "hyperlaplacian")
    no_noise = physics.Blur(torch.ones(5, 5) / 25)
    no_noise.noise_model = None
    with pytest.raises(PhysicsError, match="noise level"):
        start_estimate(no_noise, y, "hyperlaplacian")
    # sigma= stands in for the noise model, one float for the batch
    assert start_estimate(no_noise, y, "hyperlaplacian", sigma=0.01).shape == y.shape


def test_padded_operator_starts_from_the_true_size_estimate():
    op = blur_op(1)
    y = op(photo(1, 36))  # 36 is no multiple of 8: the test protocol pads around the network
    padded = PaddedOperator(op, (36, 36), 8)
    x0 = start_estimate(padded, y, "hyperlaplacian")
    assert x0.shape[-2:] == (40, 40)
    assert torch.allclose(x0[..., :36, :36], start_estimate(op, y, "hyperlaplacian"))
    model = build_model("deblurring", gradient="known", start="hyperlaplacian", **SMALL).eval()
    with torch.no_grad():
        assert run_model(model, y, op).shape == y.shape


def test_config_and_constructor_refuse_a_start_without_the_operator():
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.START = "deblurring", "hyperlaplacian"
    with pytest.raises(ConfigError, match="MODEL.START hyperlaplacian solves with the known operator"):
        validate(cfg)
    cfg.MODEL.START = "wiener"
    with pytest.raises(ConfigError, match="MODEL.START"):
        validate(cfg)
    with pytest.raises(ConfigError, match="gradient='known'"):
        build_model("deblurring", start="nlm", **SMALL)
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("deblurring", gradient="known", start="bm3d", **SMALL)


def _engine_file(tmp_path, start: str, gradient: str = "known"):
    """A checkpoint as train.py writes it: weights plus the training config."""
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.GRADIENT, cfg.MODEL.START = "deblurring", gradient, start
    cfg.MODEL.N_FEAT, cfg.MODEL.SCALE_UNETFEATS, cfg.MODEL.SCALE_ORSNETFEATS = 8, 4, 4
    model = build_model("deblurring", gradient=gradient, start=start, **SMALL)
    path = tmp_path / f"{start}.pth"
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, path)
    return path


def test_load_model_reads_gradient_and_start_from_the_checkpoint(tmp_path):
    loaded = load_model("deblurring", _engine_file(tmp_path, "hyperlaplacian")).model
    assert (loaded.gradient, loaded.start) == ("known", "hyperlaplacian")
    assert load_model("deblurring", _engine_file(tmp_path, "adagger")).model.start == "adagger"
    # an explicit gradient wins over the file's; learned models keep the published constructor
    blind = load_model("deblurring", _engine_file(tmp_path, "hyperlaplacian"), gradient="learned").model
    assert blind.gradient == "learned"
    bare = tmp_path / "bare.pth"  # published files carry no config: blind, as published
    torch.save(build_model("deblurring", **SMALL).state_dict(), bare)
    assert load_model("deblurring", bare).model.gradient == "learned"


def test_an_older_config_without_start_reads_as_adagger():
    import yaml

    older = yaml.safe_load(defaults().dump())
    del older["MODEL"]["START"]  # written before MODEL.START existed
    assert config_from_yaml_string(yaml.safe_dump(older)).MODEL.START == "adagger"


def test_cs_model_starts_from_fista_tv_with_the_fixed_matrix():
    from dgunet.baselines import tv_compressed_sensing
    from dgunet.models.cs import Measurements

    torch.manual_seed(0)
    img = photo(1, 64)[:, :1]
    model = build_model("cs", cs_ratio=25, phi="fixed", start="tv", **SMALL)
    plain = build_model("cs", cs_ratio=25, phi="fixed", **SMALL)
    assert list(model.state_dict()) == list(plain.state_dict())  # no parameters added
    op = physics.CompressedSensing(0.25)
    x0 = model.start_estimate(img, Measurements(model.Phi, img))
    assert torch.allclose(x0, tv_compressed_sensing(op.A(img), op), atol=1e-6)
    assert len(model(img)) == 7
    with pytest.raises(ConfigError, match="fixed sampling matrix"):
        build_model("cs", cs_ratio=25, start="tv", **SMALL)
    with pytest.raises(ConfigError, match="tuned for CS ratios"):
        build_model("cs", cs_ratio=4, phi="fixed", start="tv", **SMALL)
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.START, cfg.LOSS.CLAMP = "cs", "tv", True
    with pytest.raises(ConfigError, match="MODEL.PHI fixed"):
        validate(cfg)
    cfg.MODEL.PHI = "fixed"
    validate(cfg)
    cfg.MODEL.START = "hyperlaplacian"
    with pytest.raises(ConfigError, match="MODEL.START"):
        validate(cfg)
