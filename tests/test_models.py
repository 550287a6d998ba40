"""The models are checkpoint-exact: published keys, shapes, ties, parameter counts, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, load_task_module

from dgunet.models import CS_RATIOS, build_model, num_measurements
from dgunet.models.cs import blocks_to_image, image_to_blocks
from dgunet.models.keyed_init import keyed_state_dict, tie_groups

STRUCTURES = sorted((FIXTURES / "structure").glob("*.keys.json"))


def variant_of(name: str) -> tuple[str, str]:
    task = name.split("_")[0]
    return task, ("DGUNet_plus" if "_plus" in name else "DGUNet")


def build_on_meta(spec: dict) -> torch.nn.Module:
    task, arch = variant_of(spec["variant"])
    kwargs = {k: v for k, v in spec["constructor_kwargs"].items() if k == "cs_ratio"}
    with torch.device("meta"):  # shapes only: building 70M parameters costs nothing here
        return build_model(task, arch, **kwargs)


@pytest.mark.parametrize("path", STRUCTURES, ids=lambda p: p.name.split(".")[0])
def test_state_dict_keys_shapes_and_order_match_published(path):
    spec = json.loads(path.read_text())
    model = build_on_meta(spec)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == spec["state_dict"]


@pytest.mark.parametrize("path", STRUCTURES, ids=lambda p: p.name.split(".")[0])
def test_tie_groups_and_deduplicated_parameter_count_match_published(path):
    spec = json.loads(path.read_text())
    model = build_on_meta(spec)
    assert tie_groups(model) == spec["tie_groups"]
    assert sum(p.numel() for p in model.parameters()) == spec["parameters_deduplicated"]


# MODEL.md's table: parameters of each task file's class with its default widths.
PUBLISHED_COUNTS = [
    ("Deblurring", "DGUNet", {}, 17_331_512),
    ("Deblurring", "DGUNet_plus", {}, 69_572_915),
    ("Denoising", "DGUNet", {}, 17_331_512),
    ("Denoising", "DGUNet_plus", {}, 48_361_987),
    ("Deraining", "DGUNet", {}, 3_661_912),
    ("Deraining", "DGUNet_plus", {}, 12_176_107),
    ("Compressive_Sensing", "DGUNet", {"cs_ratio": 10}, 2_390_076),
    ("Compressive_Sensing", "DGUNet_plus", {"cs_ratio": 25}, 7_072_284),
]


@pytest.mark.parametrize("task_dir,name,kwargs,count", PUBLISHED_COUNTS)
def test_task_model_files_expose_DGUNet_with_published_widths(task_dir, name, kwargs, count):
    cls = load_task_module(task_dir, name).DGUNet
    assert cls.__name__ == "DGUNet"
    with torch.device("meta"):
        model = cls(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == count


def test_task_model_accepts_published_positional_arguments():
    cls = load_task_module("Deraining", "DGUNet").DGUNet
    with torch.device("meta"):
        model = cls(3, 3, 16, 8, 8)
    assert (model.in_c, model.n_feat, model.scale_unetfeats, model.scale_orsnetfeats) == (3, 16, 8, 8)
    cs = load_task_module("Compressive_Sensing", "DGUNet").DGUNet
    with torch.device("meta"):
        assert cs(1, 1, 4).Phi.shape == (41, 1024)


@pytest.mark.parametrize("name,task", [("deblurring_dgunet", "deblurring"), ("cs_dgunet_r10", "cs")])
def test_outputs_equal_published_implementation(name, task):
    ref = torch.load(FIXTURES / "reference" / f"{name}.pt", weights_only=True)
    model = build_model(task, "DGUNet", **{k: v for k, v in ref["kwargs"].items() if k == "cs_ratio"})
    model.load_state_dict(keyed_state_dict(model), strict=True)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == [list(x) for x in ref["keys_shapes"]]
    with torch.no_grad():
        outputs = model.eval()(ref["input"])
    assert len(outputs) == 7
    for stage, (ours, theirs) in enumerate(zip(outputs, ref["outputs"], strict=True)):
        err = (ours - theirs).abs().max().item()
        assert err < 1e-4, f"stage output {stage} differs by {err}"


def test_keyed_weights_follow_the_rule_and_ties():
    with torch.device("cpu"):
        model = build_model("deraining", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    state = keyed_state_dict(model)
    assert 0.3 < state["r0"].item() < 0.7  # step sizes near 0.5
    assert torch.all((state["stage1_encoder.body.0.norm.weight"] - 1).abs() < 0.6)
    group = tie_groups(model)[0]
    assert all(torch.equal(state[k], state[group[0]]) for k in group)


@pytest.mark.parametrize("arch", ["DGUNet", "DGUNet_plus"])
@pytest.mark.parametrize("task", ["deraining", "cs"])
def test_forward_returns_seven_stage_images_and_step_sizes(task, arch):
    extra = {"cs_ratio": 25} if task == "cs" else {}
    model = build_model(task, arch, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, **extra)
    x = torch.rand(2, model.in_c, 64, 32)
    with torch.no_grad():
        outputs = model(x)
    assert len(outputs) == 7 and all(o.shape == x.shape for o in outputs)
    assert model.step_sizes() == [0.5] * 7


def test_shared_stages_really_share_weights():
    plain = build_model("deraining", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    plus = build_model("deraining", "DGUNet_plus", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    assert sum(p.numel() for p in plus.parameters()) > 3 * sum(p.numel() for p in plain.parameters())
    plain.basic.r1.data.fill_(0.25)
    assert plain.step_sizes()[1:6] == [0.25] * 5


def test_cs_blocks_are_row_major_32x32_and_invertible():
    img = torch.arange(2 * 64 * 96, dtype=torch.float32).reshape(2, 1, 64, 96)
    rows = image_to_blocks(img)
    assert rows.shape == (2 * 2 * 3, 1024)
    assert torch.equal(rows[1], img[0, 0, :32, 32:64].reshape(-1))  # second block of the top row
    assert torch.equal(blocks_to_image(rows, img.shape), img)


def test_cs_measurement_counts():
    assert [num_measurements(r) for r in CS_RATIOS] == [11, 41, 103, 256, 308, 410, 512]
