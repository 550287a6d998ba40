"""The task table (dgunet.tasks): every consumer reads it, and a new row is a working task."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from dgunet import losses, tasks
from dgunet.config import load_config
from dgunet.data import check
from dgunet.engine import TASK_DIRS, build_parser
from dgunet.errors import ConfigError
from dgunet.models import ARCHS, VARIANTS, build_model, get_variant
from dgunet.testrun.datasets import TASK_DATASETS
from dgunet.testrun.known import KNOWN_PROTOCOLS

REPO = Path(__file__).resolve().parents[1]
TINY = ["MODEL.N_FEAT", "8", "MODEL.SCALE_UNETFEATS", "4", "MODEL.SCALE_ORSNETFEATS", "4"]


def _choices(add_arguments, option: str) -> list[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    action = next(a for a in parser._actions if option in a.option_strings)
    return list(action.choices)


def test_every_consumer_lists_the_tables_tasks():
    from dgunet import info, reproduce, restore_command

    names = list(tasks.TASK_NAMES)
    assert names == ["deblurring", "deraining", "denoising", "cs", "sr"]
    assert _choices(reproduce.add_arguments, "--task") == names
    assert _choices(info.add_arguments, "--task") == names
    assert _choices(restore_command.add_arguments, "--task") == [n for n in names if n != "cs"]
    assert _choices(check.add_arguments, "--task") == [n for n in names if n != "sr"]  # sr has no data set
    assert sorted(check.LAYOUTS) == sorted(check.TASKS)
    assert TASK_DIRS == {t.name: t.folder for t in tasks.TASK_TABLE}
    assert {t for t, _ in VARIANTS} == set(names) and {a for _, a in VARIANTS} == set(ARCHS)
    assert KNOWN_PROTOCOLS == {"deblurring": "nonblind", "denoising": "gaussian", "sr": "sr"}
    assert {name: [s.name for s in specs] for name, specs in TASK_DATASETS.items()} == {
        t.name: list(t.test_sets) for t in tasks.TASK_TABLE}


def test_every_task_has_its_folder_and_widths_per_arch():
    for task in tasks.TASK_TABLE:
        assert (REPO / task.folder / "train.py").is_file(), task.folder
        assert set(task.widths) == set(ARCHS), task.name
        assert task.loss in tasks.LOSSES and task.data in tasks.DATA_LAYOUTS


def test_get_task_takes_aliases_and_names_the_choices():
    assert tasks.get_task("Compressive_Sensing").name == "cs"
    assert tasks.get_task("super-resolution").folder == "Super_Resolution"
    with pytest.raises(ConfigError, match="unknown task 'dehazing'; choose one of deblurring, deraining"):
        tasks.get_task("dehazing")


def test_the_published_widths_are_the_table_rows():
    assert get_variant("deblurring", "DGUNet+").widths == {"n_feat": 96, "scale_unetfeats": 48,
                                                             "scale_orsnetfeats": 32}
    assert get_variant("denoising", "DGUNet_plus").widths["scale_unetfeats"] == 40
    assert not get_variant("sr", "DGUNet").published and get_variant("cs", "DGUNet").published


@pytest.mark.parametrize(("scale", "multiple"), [(1, 8), (2, 8), (3, 24), (4, 8)])
def test_patch_multiple_is_lcm_of_8_and_the_scale(scale, multiple):
    assert tasks.patch_multiple(scale) == multiple


def test_the_tasks_module_imports_nothing_from_dgunet_but_errors():
    tree = ast.parse((REPO / "dgunet" / "tasks.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m.startswith("dgunet")} == {"dgunet.errors"}


def _dehazing() -> tasks.Task:
    """A made-up task: the deraining row under another name, folder and objective."""
    row = tasks.get_task("deraining")
    return dataclasses.replace(row, name="dehazing", folder="Dehazing", title="Dehazing",
                               loss=tasks.CHARBONNIER, clamps_output=True, reports_average=False)


def test_a_registered_row_is_a_task_for_config_model_and_loss():
    with tasks.registered(_dehazing()):
        cfg = load_config(None, ["MODEL.TASK", "dehazing", "LOSS.CLAMP", "true", *TINY])
        assert cfg.MODEL.TASK == "dehazing"
        with pytest.raises(ConfigError, match="published dehazing objective always clamps"):
            load_config(None, ["MODEL.TASK", "dehazing"])
        model = build_model("dehazing", "DGUNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
        assert get_variant("dehazing", "DGUNet").n_feat == 40  # the deraining widths of the row
        out = [torch.full((1, 3, 8, 8), 2.0)]
        target = torch.ones(1, 3, 8, 8)
        assert losses.stage_loss(out, target, "dehazing").item() == pytest.approx(1e-3)  # clamped to 1
        assert build_parser("dehazing").prog == "python Dehazing/train.py"
        assert isinstance(model, torch.nn.Module)
    with pytest.raises(ConfigError, match="MODEL.TASK = 'dehazing'"):
        load_config(None, ["MODEL.TASK", "dehazing"])
    assert "dehazing" not in tasks.TASK_NAMES


def test_register_task_refuses_a_taken_name():
    with pytest.raises(ConfigError, match="already in the task table"):
        tasks.register_task(tasks.get_task("deraining"))
