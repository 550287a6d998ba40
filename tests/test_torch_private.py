"""The private PyTorch APIs behind the fast paths: all still there, and their loss handled.

If the first test fails after a PyTorch upgrade, the fast paths still give the same results
through public calls, but slower: find the API's successor and update
dgunet/models/torch_private.py (the only module that names it)."""

from __future__ import annotations

import pytest
import torch

from dgunet.inference import cpu_has_fast_bf16
from dgunet.models import fast
from dgunet.models.fast import FastConv2d, set_fast_convs, set_kernel_policy
from dgunet.models.torch_private import (
    MKLDNN_BF16,
    NNPACK_CONV,
    PRIVATE_APIS,
    capabilities,
    missing_private_apis,
    private_api,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_this_pytorch_still_has_every_private_api_the_fast_paths_use():
    missing = missing_private_apis()
    assert not missing, (f"PyTorch {torch.__version__} no longer has {', '.join(missing)}: the fast "
                         f"paths fall back to public calls (slower); update dgunet/models/torch_private.py")


def test_every_private_api_is_named_once_and_found():
    assert set(PRIVATE_APIS) == {NNPACK_CONV, MKLDNN_BF16}
    assert all(callable(private_api(name)) for name in PRIVATE_APIS)
    assert private_api("torch._no_such_function") is None
    assert private_api("torch.ops.mkldnn._no_such_op") is None  # torch.ops raises, not returns
    assert cpu_has_fast_bf16() == capabilities().mkldnn_bf16


@pytest.fixture
def without_nnpack_entry_point(monkeypatch):
    """This process's PyTorch as if an upgrade had removed NNPACK's convolution entry point."""
    monkeypatch.delattr(torch, "_nnpack_spatial_convolution")
    capabilities.cache_clear()
    previous = set_kernel_policy("fast")  # the fast kernel wherever it can serve
    yield
    set_kernel_policy(previous)
    monkeypatch.undo()
    capabilities.cache_clear()


def test_a_removed_private_api_is_reported_and_the_public_path_serves(without_nnpack_entry_point):
    caps = capabilities()
    assert caps.missing == (NNPACK_CONV,)
    assert not caps.nnpack_winograd
    conv = torch.nn.Conv2d(6, 5, 3, padding=1).eval()
    x = torch.randn(2, 6, 12, 10)
    with torch.no_grad():
        expected = conv(x)
        set_fast_convs(conv)
        assert type(conv) is FastConv2d
        got = conv(x)
    set_fast_convs(conv, enabled=False)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)  # oneDNN itself, not Winograd


def test_the_winograd_kernel_is_the_private_one():
    assert fast._KERNELS["winograd-3x3"].__module__ == "dgunet.models.torch_private"
