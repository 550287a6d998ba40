"""The output head (MODEL.HEAD, dgunet.models.image.HEADS): what the 7th stage's conv corrects."""

from __future__ import annotations

import pytest
import torch

from dgunet import physics
from dgunet.config import defaults, validate
from dgunet.engine.hooks import _image_overrides
from dgunet.errors import ConfigError
from dgunet.models import build_model
from dgunet.models.image import READOUT_PRIOR
from dgunet.testrun.loading import load_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def blurred(batch: int = 2, size: int = 32) -> tuple[torch.Tensor, physics.Blur]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    op = physics.Blur(torch.ones(batch, 1, 5, 5) / 25,
                      noise_model=physics.GaussianNoise(torch.full((batch,), 0.01)))
    return op.A(x), op


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
@pytest.mark.parametrize("gradient", ["learned", "known"])
def test_stages_head_mixes_the_start_and_the_stages(arch, gradient):
    y, op = blurred()
    physics_arg = op if gradient == "known" else None
    torch.manual_seed(0)
    model = build_model("deblurring", arch, gradient=gradient, head="stages", **SMALL)
    torch.manual_seed(0)
    published = build_model("deblurring", arch, gradient=gradient, **SMALL)
    missing = published.load_state_dict(model.state_dict(), strict=False)
    assert missing.missing_keys == [] and missing.unexpected_keys == ["readout.weight", "readout.bias"]
    with torch.no_grad():
        obs = model.observe(y, physics_arg)
        final, *stages = model(y, physics_arg)  # stages: x6 .. x1
        final0, *stages0 = published(y, physics_arg)
        for a, b in zip(stages, stages0, strict=True):
            torch.testing.assert_close(a, b)  # only the head differs
        # at initialisation: weights softmax(READOUT_PRIOR, 0 x 6) everywhere, gate 1
        w = torch.softmax(torch.tensor([READOUT_PRIOR] + [0.0] * 6), 0)
        mix = w[0] * obs.x0 + sum(wk * xk for wk, xk in zip(w[1:], reversed(stages), strict=True))
        torch.testing.assert_close(final - final0, mix - obs.x0, rtol=1e-5, atol=1e-5)
        # a readout sure of stage 3 hands the head's correction stage 3's estimate instead of x0
        model.readout.bias.copy_(torch.tensor([-50.0, -50, -50, 50, -50, -50, -50, 0]))
        final3 = model(y, physics_arg)[0]
        torch.testing.assert_close(final3 - final0, stages[-3] - obs.x0, rtol=1e-5, atol=1e-5)
        model.readout.bias[-1] = -50.0  # a closed gate: the output is stage 3 itself
        torch.testing.assert_close(model(y, physics_arg)[0], stages[-3])
    assert w[0] > 0.89


def test_the_mix_is_convex_and_per_pixel():
    y, op = blurred()
    torch.manual_seed(0)
    model = build_model("deblurring", gradient="known", head="stages", **SMALL)
    torch.nn.init.normal_(model.readout.weight, std=0.5)  # as if trained: the mix varies over the image
    feats = torch.randn(2, model.readout.in_channels, 32, 32)
    obs = model.observe(y, op)
    with torch.no_grad():
        model.tail.weight.zero_()  # no correction: the output is the mix alone
        same = [obs.x0] * 6  # every estimate equal: any convex mix returns it, wherever its weights
        torch.testing.assert_close(model.head_output(obs, same, feats), obs.x0)
        ones = [torch.ones_like(obs.x0) * (k + 1) for k in range(6)]
        out = model.head_output(obs, ones, feats)  # a per-pixel mix of 0..6-ish values
    lo, hi = torch.minimum(obs.x0, torch.ones_like(obs.x0)), torch.full_like(obs.x0, 6.0)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
    assert out.std(dim=(2, 3)).min() > 0.01  # the weights vary over the image


def test_the_head_is_in_the_config_the_trainer_and_the_loader(tmp_path):
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.GRADIENT, cfg.MODEL.HEAD = "deblurring", "known", "stages"
    cfg.DEGRADE.KIND = "blur"
    cfg.MODEL.N_FEAT, cfg.MODEL.SCALE_UNETFEATS, cfg.MODEL.SCALE_ORSNETFEATS = 8, 4, 4
    validate(cfg)
    assert _image_overrides(cfg)["head"] == "stages"
    path = tmp_path / "stages.pth"
    model = build_model("deblurring", **_image_overrides(cfg), **SMALL)
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, path)
    assert load_model("deblurring", path).model.head == "stages"
    cfg.MODEL.GRADIENT = "learned"  # a blind model may use it too, and must load with it
    torch.save({"state_dict": build_model("deblurring", head="stages", **SMALL).state_dict(),
                "config": cfg.dump()}, path)
    assert load_model("deblurring", path).model.head == "stages"
    bare = tmp_path / "bare.pth"  # published files carry no config: the published head
    torch.save(build_model("deblurring", **SMALL).state_dict(), bare)
    assert load_model("deblurring", bare).model.head == "x0"
    torch.save(build_model("deblurring", head="stages", **SMALL).state_dict(), bare)
    assert load_model("deblurring", bare).model.head == "stages"  # no config: the readout keys tell


def test_a_wrong_head_is_refused_in_one_line():
    cfg = defaults()
    cfg.MODEL.HEAD = "x6"
    with pytest.raises(ConfigError, match="MODEL.HEAD"):
        validate(cfg)
    cfg.MODEL.TASK, cfg.MODEL.HEAD = "cs", "stages"
    with pytest.raises(ConfigError, match="compressive sensing"):
        validate(cfg)
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("deblurring", head="x6", **SMALL)


def test_the_known_recipes_use_the_stages_head_and_the_published_ones_do_not():
    from pathlib import Path

    from dgunet.config import load_config

    repo = Path(__file__).resolve().parents[1]
    known = {"Deblurring/training_nonblind.yml", "Denoising/training_gaussian.yml",
             "Super_Resolution/training.yml"}
    recipes = {str(p.relative_to(repo)) for p in repo.glob("*/training*.yml")}
    assert known < recipes and len(recipes) >= 8
    for recipe in sorted(recipes):
        assert load_config(repo / recipe).MODEL.HEAD == ("stages" if recipe in known else "x0"), recipe


def test_stages_head_runs_under_bf16_autocast():
    y, op = blurred(batch=1, size=16)
    model = build_model("deblurring", gradient="known", head="stages", **SMALL).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        final = model(y, op)[0]
    assert final.shape == y.shape and torch.isfinite(final).all()


def test_the_refined_output_trains_the_correction_and_not_the_mix():
    """Training mode records REFINED = mix (no gradient) + the ungated correction; eval records None."""
    import copy

    from dgunet.engine.steps import take_refined
    from dgunet.models.image import REFINED

    y, op = blurred(batch=1, size=16)
    torch.manual_seed(0)
    model = build_model("deblurring", gradient="known", head="stages", **SMALL)
    model(y, op)
    assert getattr(model, REFINED, None) is None  # recorded only for a loss that reads it
    model.record_refined = True
    obs = model.observe(y, op)
    estimates = [(obs.x0 + 0.01 * k).requires_grad_() for k in range(6)]
    feats = torch.randn(1, model.readout.in_channels, 16, 16, requires_grad=True)
    model.readout.bias.data[-1] = -50.0  # a closed gate: the output gets ~no correction
    out = model.head_output(obs, estimates, feats)
    refined = getattr(model, REFINED)
    with torch.no_grad():
        logits = 10.0 * model.readout(feats)
        w = torch.softmax(logits[:, :7], 1)
        mix = (w.unsqueeze(2) * torch.stack([obs.x0, *estimates], 1)).sum(1)
        torch.testing.assert_close(refined, mix + model.tail(feats))
        torch.testing.assert_close(out, mix, rtol=0, atol=1e-6)  # the gate closed the correction
    grads = torch.autograd.grad(refined.sum(), [*estimates, feats, model.tail.weight], allow_unused=True)
    assert all(g is None or not g.any() for g in grads[:6])  # nothing into the mix's estimates
    assert grads[6].abs().sum() > 0 and grads[7].abs().sum() > 0  # the correction learns, gate or not
    assert take_refined(model) is refined and getattr(model, REFINED, None) is None
    copy.deepcopy(model)  # nothing with a graph is left on the module (an EMA copies it)
    model.eval()
    with torch.no_grad():
        model.head_output(obs, estimates, feats)
    assert getattr(model, REFINED, None) is None


def test_the_correction_weight_adds_its_term_and_needs_the_stages_head():
    from dgunet.engine.steps import compute_loss
    from dgunet.losses import stage_loss

    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.GRADIENT, cfg.DEGRADE.KIND = "deblurring", "known", "blur"
    cfg.MODEL.HEAD = "stages"
    cfg.LOSS.CORRECTION_WEIGHT = 0.5
    validate(cfg)
    g = torch.Generator().manual_seed(0)
    outputs = [torch.rand(1, 3, 8, 8, generator=g) for _ in range(7)]
    refined, target = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    base = stage_loss(outputs, target, "deblurring")
    torch.testing.assert_close(compute_loss(outputs, target, cfg, refined),
                               base + 0.5 * stage_loss([refined], target, "deblurring"))
    with pytest.raises(ConfigError, match="no refined output"):
        compute_loss(outputs, target, cfg)
    cfg.MODEL.HEAD = "x0"
    with pytest.raises(ConfigError, match="LOSS.CORRECTION_WEIGHT = 0.5 trains the stages head"):
        validate(cfg)
    cfg.MODEL.HEAD, cfg.LOSS.CORRECTION_WEIGHT = "stages", -1.0
    with pytest.raises(ConfigError, match="must be >= 0"):
        validate(cfg)


def test_the_refined_output_is_recorded_under_torch_compile():
    """TRAIN.COMPILE wraps the model in torch.compile; the head's setattr must survive tracing as a
    side effect, in one graph (fullgraph), and give the eager values. Dynamo's own `eager` backend
    traces the same way as inductor without its minutes of code generation on a CPU."""
    from dgunet.engine.steps import take_refined

    y, op = blurred(batch=1, size=16)
    torch.manual_seed(0)
    model = build_model("deblurring", gradient="known", head="stages", **SMALL)
    model.record_refined = True
    expected_out, expected = model(y, op)[0], take_refined(model)
    out = torch.compile(model, backend="eager", fullgraph=True)(y, op)[0]
    refined = take_refined(model)
    assert refined is not None and refined.requires_grad
    torch.testing.assert_close(refined, expected)
    torch.testing.assert_close(out, expected_out)
