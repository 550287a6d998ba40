"""Head tuning (dgunet.head_tuning): stages 1-6 frozen, only the head fitted, on cached inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgunet import physics
from dgunet.config import defaults, validate
from dgunet.head_tuning import HeadTuning, collect, head_forward, head_modules, tune_head
from dgunet.models import build_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


def photo_batches(count: int = 3, batch: int = 2, size: int = 32, seed: int = 0):
    """(blurred noisy input, clean target, Blur operator) crops of a scikit-image photo."""
    import skimage.data

    image = torch.from_numpy(skimage.data.astronaut()[..., :3].copy()).permute(2, 0, 1).float() / 255
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        tops = rng.integers(0, 512 - size, (batch, 2))
        x = torch.stack([image[:, t:t + size, s:s + size] for t, s in tops])
        op = physics.Blur(torch.ones(batch, 1, 5, 5) / 25,
                          noise_model=physics.GaussianNoise(torch.full((batch,), 0.01)))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        out.append((op.A(x) + 0.01 * noise, x, op))
    return out


def config(head: str):
    cfg = defaults()
    cfg.MODEL.TASK, cfg.MODEL.GRADIENT, cfg.DEGRADE.KIND, cfg.MODEL.HEAD = "deblurring", "known", "blur", head
    validate(cfg)
    return cfg


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
def test_the_cached_head_recomputes_the_forward_output(arch):
    torch.manual_seed(0)
    model = build_model("deblurring", arch, gradient="known", head="stages", **SMALL)
    batches = photo_batches(count=2)
    cached = collect(model, batches)
    assert len(cached) == 2 and len(cached[0].estimates) == 6
    with torch.no_grad():
        for (inp, _target, op), item in zip(batches, cached, strict=True):
            outputs = model(inp, op)
            torch.testing.assert_close(head_forward(model, item), outputs[0], rtol=0, atol=1e-6)
            for a, b in zip(reversed(outputs[1:]), item.estimates, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "head"), [("DGUNet", "stages"), ("DGUNet_plus", "stages"), ("DGUNet", "x0")])
def test_tuning_moves_only_the_head_and_lowers_its_loss(arch, head):
    torch.manual_seed(0)
    model = build_model("deblurring", arch, gradient="known", head=head, **SMALL)
    names = set(head_modules(model))
    fuse = "concat67" if arch == "DGUNet" else "merge67"
    assert names == {fuse, "tail", *(["readout"] if head == "stages" else [])}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inp, _target, op = photo_batches(count=1, seed=5)[0]  # a batch it is not tuned on
    with torch.no_grad():
        stages_before = model(inp, op)[1:]
    losses = tune_head(model, collect(model, photo_batches()), config(head), HeadTuning(epochs=6, lr=3e-3))
    assert len(losses) == 6 and losses[-1] < losses[0]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.split(".")[0] in names for k in changed)  # nothing outside the head moved
    assert all(p.requires_grad for p in model.parameters()) and model.training  # left as it was
    assert not hasattr(model, "refined")
    with torch.no_grad():
        for a, b in zip(model(inp, op)[1:], stages_before, strict=True):
            assert torch.equal(a, b)  # stages 1-6 bit for bit


def test_a_tuned_checkpoint_loads_and_keeps_its_config(tmp_path):
    """tune_checkpoint on a real (tiny) training config: data from DATA.TRAIN_DIR, written atomically,
    loads strictly, only head keys differ."""
    import skimage.data

    from dgunet.data.io import save_png_atomic
    from dgunet.head_tuning import tune_checkpoint
    from dgunet.testrun.loading import load_model

    photos = tmp_path / "photos"
    photos.mkdir()
    save_png_atomic(photos / "a.png", skimage.data.astronaut()[:96, :96])
    save_png_atomic(photos / "b.png", skimage.data.chelsea()[:96, :96])
    cfg = config("stages")
    cfg.defrost()
    cfg.MODEL.N_FEAT, cfg.MODEL.SCALE_UNETFEATS, cfg.MODEL.SCALE_ORSNETFEATS = 8, 4, 4
    cfg.DATA.TRAIN_DIR, cfg.TRAIN.PATCH_SIZE, cfg.OPTIM.BATCH_SIZE = str(photos), 32, 2
    cfg.DEGRADE.KERNEL_SIZE = 9
    torch.manual_seed(0)
    model = build_model("deblurring", gradient="known", head="stages", **SMALL)
    src = tmp_path / "model_latest.pth"
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "config": cfg.dump(),
                "optimizer": {}}, src)
    info = tune_checkpoint(src, tmp_path / "tuned.pth", HeadTuning(batches=2, epochs=2))
    saved = torch.load(tmp_path / "tuned.pth", weights_only=True)
    assert set(saved) == {"epoch", "state_dict", "config", "head_tuning"} and saved["head_tuning"] == info
    assert info["batches"] == 2 and info["loss_last_pass"] > 0
    tuned = load_model("deblurring", tmp_path / "tuned.pth").model
    start = model.state_dict()
    differ = {k.split(".")[0] for k, v in tuned.state_dict().items() if not torch.equal(v, start[k])}
    assert differ and differ <= {"concat67", "tail", "readout"}


def test_the_command_names_a_bad_file_in_one_line(tmp_path, capsys):
    from dgunet.cli import main

    assert main(["tune-head", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "t.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.pth" in err
    cfg = defaults()  # a published (paired-data) training config: nothing to tune the head on
    weights = build_model("deblurring", **SMALL).state_dict()
    torch.save({"epoch": 1, "state_dict": weights, "config": cfg.dump()}, tmp_path / "paired.pth")
    assert main(["tune-head", str(tmp_path / "paired.pth"), "--out", str(tmp_path / "t.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "paired.pth" in err and "DEGRADE.KIND" in err
    assert not (tmp_path / "t.pth").exists()
    cfg = config("stages")  # a known-operator file whose training folder is not on this machine
    cfg.defrost()
    cfg.DATA.TRAIN_DIR = str(tmp_path / "elsewhere")
    weights = build_model("deblurring", gradient="known", head="stages", **SMALL).state_dict()
    torch.save({"epoch": 1, "state_dict": weights, "config": cfg.dump()}, tmp_path / "moved.pth")
    assert main(["tune-head", str(tmp_path / "moved.pth"), "--out", str(tmp_path / "t.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "elsewhere" in err and "moved.pth" in err and "--train-dir" in err
