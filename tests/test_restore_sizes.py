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
