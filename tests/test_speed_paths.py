"""One owner of the speed paths: the merge projection is decided by `merge_projection` for
training and inference alike, and the fast convs are put in place in their parents (sharing
parameters), not by changing the class of the model's own modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgunet.engine.speed import SpeedOptions, prepare_model
from dgunet.inference import restore
from dgunet.models import build_model
from dgunet.models.blocks import MergeBlock, subspace_projection
from dgunet.models.fast import (
    FastConv2d,
    fast_subspace_projection,
    fp32_subspace_projection,
    merge_projection,
    set_fast_convs,
    set_merge_projection,
    use_fast_convs,
    use_merge_projection,
)
from dgunet.models.keyed_init import keyed_state_dict

SMALL = {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    model = build_model("deblurring", "DGUNet", **SMALL)
    model.load_state_dict(keyed_state_dict(model))
    return model.eval()


# ---------------------------------------------------------------- the merge projection

@pytest.mark.parametrize("fast_merge,autocast,expected", [
    (True, False, fast_subspace_projection), (True, True, fast_subspace_projection),
    (False, False, None), (False, True, fp32_subspace_projection),
    (None, False, None), (None, True, fast_subspace_projection)])
def test_merge_projection_rule(fast_merge, autocast, expected):
    assert merge_projection(fast_merge, autocast) is expected


@pytest.mark.parametrize("opts,expected", [
    (SpeedOptions(), subspace_projection), (SpeedOptions(amp="bf16"), fp32_subspace_projection),
    (SpeedOptions(amp="bf16", fast_merge=True), fast_subspace_projection),
    (SpeedOptions(fast_merge=True), fast_subspace_projection)])
def test_training_takes_the_rule_s_projection(opts, expected):
    model = prepare_model(build_model("deblurring", "DGUNet_plus", **SMALL), opts)
    assert {b.projection for b in model.modules() if isinstance(b, MergeBlock)} == {expected}


def projections_seen(model: nn.Module, **options) -> set:
    """The projections the model's merges computed during `restore(model, image, **options)`."""
    seen = set()
    blocks = [b for b in model.modules() if isinstance(b, MergeBlock)]
    handles = [b.register_forward_pre_hook(lambda block, args: seen.add(block.projection)) for b in blocks]
    try:
        restore(model, torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), **options)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("options,expected", [
    ({}, subspace_projection), ({"fast": True}, fast_subspace_projection),
    ({"precision": "bf16"}, fast_subspace_projection)])
def test_inference_takes_the_rule_s_projection_and_puts_the_model_back(small, options, expected):
    assert projections_seen(small, **options) == {expected}
    assert small.basic.merge12.projection is subspace_projection


def test_inference_keeps_a_projection_the_caller_chose(small):
    with use_merge_projection(small, fast_subspace_projection):
        assert projections_seen(small) == {fast_subspace_projection}
    set_merge_projection(small, fp32_subspace_projection)
    assert projections_seen(small) == {fp32_subspace_projection}
    set_merge_projection(small, subspace_projection)
    assert "projection" not in vars(small.basic.merge12)  # back to the class's published one


# ---------------------------------------------------------------- fast convs in their parents

def test_fast_convs_replace_children_sharing_parameters_and_restore_them(small):
    originals = {name: m for name, m in small.named_modules() if isinstance(m, nn.Conv2d)}
    params = {name: p for name, p in small.named_parameters()}
    state = small.state_dict()
    rng = torch.get_rng_state()
    with use_fast_convs(small):
        assert torch.equal(torch.get_rng_state(), rng)  # twins are built without drawing weights
        assert all(type(m) is nn.Conv2d for m in originals.values())  # no class changed
        swapped = {name: m for name, m in small.named_modules() if type(m) is FastConv2d}
        assert swapped and all(swapped[name] is not originals[name] for name in swapped)
        assert all(p is params[name] for name, p in small.named_parameters())
        inside = small.state_dict()
        assert list(inside) == list(state)  # same keys, in the same order
        assert all(inside[k].data_ptr() == v.data_ptr() for k, v in state.items())
    assert all(small.get_submodule(name) is conv for name, conv in originals.items())


def test_a_conv_shared_by_two_parents_gets_one_twin():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.Sequential(shared)}).eval()
    assert set_fast_convs(model) == 1
    assert model["a"][0] is model["b"][0]
    assert type(model["a"][0]) is FastConv2d and model["a"][0].weight is shared.weight
    assert set_fast_convs(model, enabled=False) == 1
    assert type(model["a"][0]) is nn.Conv2d and model["a"][0] is model["b"][0]


def test_twins_keep_the_train_mode_and_follow_new_parameters():
    model = nn.Sequential(nn.Conv2d(3, 4, 1)).train()
    with use_fast_convs(model):
        assert model[0].training
    model.eval()
    model[0].weight = nn.Parameter(torch.zeros(4, 3, 1, 1))
    with use_fast_convs(model), torch.no_grad():
        assert not model[0].training and model[0].weight is model.get_parameter("0.weight")
        assert torch.equal(model(torch.ones(1, 3, 2, 2)), model[0].bias.view(1, 4, 1, 1).expand(1, 4, 2, 2))
