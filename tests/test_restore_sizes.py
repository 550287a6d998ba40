"""restore() accepts any image size and batch, and crops back to the input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgunet.inference import restore
from dgunet.models import build_model

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    return build_model("deraining", "DGUNet", **SMALL).eval()


SHAPES = [(2, 3, 33, 47), pytest.param((1, 3, 321, 481), marks=pytest.mark.slow), (3, 3, 8, 16), (1, 3, 5, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_any_size_and_batch_comes_back_the_same_size(image_model, shape):
    x = torch.rand(shape)
    y = restore(image_model, x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_padding_is_reflect_and_cropped(image_model):
    x = torch.rand(2, 3, 33, 47)
    padded = F.pad(x, (0, 1, 0, 7), mode="reflect")  # 33x47 -> 40x48
    with torch.no_grad():
        expected = image_model(padded)[0][..., :33, :47]
    torch.testing.assert_close(restore(image_model, x), expected)


def test_multiple_of_eight_is_not_padded(image_model):
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(restore(image_model, x), image_model(x)[0])


def test_cs_model_pads_to_32():
    model = build_model("cs", "DGUNet", cs_ratio=10, **SMALL).eval()
    x = torch.rand(1, 1, 33, 47)
    assert restore(model, x).shape == (1, 1, 33, 47)
    assert restore(model, torch.rand(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_bad_shapes_are_explained(image_model):
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        restore(image_model, torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="3-channel"):
        restore(image_model, torch.rand(1, 1, 16, 16))


def test_readme_five_line_example(tmp_path):
    """The README's example, end to end, on a small model and a real photo of odd size."""
    import numpy as np
    import skimage.data

    from dgunet import build_model, load_weights, read_image, restore, save_png_atomic
    from dgunet.data.io import save_png_atomic as save

    photo = skimage.data.astronaut()[:45, :61]
    save(tmp_path / "blurry.png", photo)
    trained = build_model("deblurring", "DGUNet", **SMALL)
    torch.save({"epoch": 1, "state_dict": trained.state_dict()}, tmp_path / "model_best.pth")

    model = load_weights(build_model("deblurring", "DGUNet", **SMALL), tmp_path / "model_best.pth").eval()
    restored = restore(model, read_image(tmp_path / "blurry.png").unsqueeze(0))
    save_png_atomic(tmp_path / "sharp.png", restored[0])

    import cv2

    out = cv2.imread(str(tmp_path / "sharp.png"))
    assert out.shape == (45, 61, 3) and out.dtype == np.uint8
