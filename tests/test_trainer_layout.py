"""The trainer's parts: the task hooks, the eval-mode helper, the stop signal, and the shape of
the loop itself (no task-name branches, short functions, short modules).

The behaviour of whole trainings (resume, snapshots, signals, DDP, NaN) is tested in
test_engine.py, test_preemption.py, test_faults.py, test_accumulation.py and test_ddp.py.
"""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest
import torch
from _engine_helpers import REPO

from dgunet.config import load_config, with_updates
from dgunet.engine import checkpointing as ckpts
from dgunet.engine.data import validate_cs, validate_images
from dgunet.engine.hooks import CS_HOOKS, hooks_for
from dgunet.engine.signals import StopSignal
from dgunet.engine.steps import build_model_from_cfg, evaluating
from dgunet.errors import CheckpointError
from dgunet.models.cs import num_measurements

ENGINE = REPO / "dgunet" / "engine"
LOOP_MODULES = ["trainer.py", "start.py", "steps.py", "signals.py", "hooks.py"]
IMAGE_TASKS = {"deblurring": "Deblurring", "deraining": "Deraining", "denoising": "Denoising",
               "sr": "Super_Resolution"}


def cs_config(*updates: tuple[str, object]):
    cfg = load_config(REPO / "Compressive_Sensing" / "training.yml")
    return with_updates(cfg, **dict(updates)) if updates else cfg


# ---------------------------------------------------------------- hooks

@pytest.mark.parametrize("task", sorted(IMAGE_TASKS))
def test_every_image_task_gets_the_image_hooks(task):
    hooks = hooks_for(load_config(REPO / IMAGE_TASKS[task] / "training.yml"))
    assert hooks.name == task and hooks.title(None) == task
    assert hooks.mixup and hooks.best_copy is None and hooks.latest_copy is None
    assert hooks.validate is validate_images


def test_cs_gets_its_own_hooks_with_the_published_bare_state_dicts():
    cfg = cs_config()
    hooks = hooks_for(cfg)
    assert hooks is CS_HOOKS and not hooks.mixup and hooks.validate is validate_cs
    assert (hooks.best_copy, hooks.latest_copy) == (ckpts.CS_BEST, ckpts.CS_LAST)
    assert hooks.title(cfg) == f"cs ratio {cfg.MODEL.CS_RATIO:g}% phase 1"


def test_a_cs_batch_is_its_own_target_and_an_image_batch_is_split_in_two():
    crops = torch.rand(2, 1, 8, 8)
    inp, target, op = CS_HOOKS.split(crops, lambda x: x + 0, None)
    assert torch.equal(inp, crops) and target is inp and op is None
    clean, noisy = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    inp, target, op = hooks_for(load_config(REPO / "Denoising" / "training.yml")).split(
        (clean, noisy, ["a", "b"]), lambda x: x, None)
    assert inp is noisy and target is clean and op is None


def test_the_model_arguments_differ_by_task_and_published_models_get_none_extra():
    derain = load_config(REPO / "Deraining" / "training.yml")
    assert hooks_for(derain).model_overrides(derain) == {}
    known = load_config(REPO / "Denoising" / "training_gaussian.yml")  # GRADIENT known, NOISE_AWARE true
    expected = {"gradient": "known", "noise_aware": True, "head": "stages"}
    assert hooks_for(known).model_overrides(known) == expected
    cs = cs_config(("MODEL.CS_RATIO", 10.0))
    assert CS_HOOKS.model_overrides(cs) == {"cs_ratio": 10.0}
    tiny = with_updates(cs, **{"MODEL.N_FEAT": 8, "MODEL.SCALE_UNETFEATS": 4, "MODEL.SCALE_ORSNETFEATS": 4})
    model = build_model_from_cfg(tiny)
    assert model.cs_ratio == 10.0 and model.Phi.shape[0] == num_measurements(10.0)


def test_cs_phase_2_starts_from_phase_1_best_weights_or_says_where_they_belong(tmp_path):
    phase1 = cs_config(("TASK_DIR", str(tmp_path)))
    assert CS_HOOKS.default_init(phase1) == ""
    phase2 = with_updates(phase1, **{"TRAIN.PHASE": 2})
    with pytest.raises(CheckpointError, match="train phase 1 first") as err:
        CS_HOOKS.default_init(phase2)
    expected = Path(str(err.value).split("expected at ")[1].split(";")[0])
    assert expected.name == ckpts.CS_BEST
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"")
    assert CS_HOOKS.default_init(phase2) == str(expected)


# ---------------------------------------------------------------- helpers of the loop

def test_evaluating_puts_the_model_back_in_train_mode_even_after_an_error():
    model = torch.nn.Dropout()
    with evaluating(model):
        assert not model.training
    assert model.training
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("validation failed")
    assert model.training


def test_the_stop_signal_names_sigterm_when_another_rank_was_signalled():
    stop = StopSignal()
    assert not stop.requested and stop.exit_signal == signal.SIGTERM
    stop.signum = signal.SIGINT
    assert stop.requested and stop.exit_signal == signal.SIGINT


# ---------------------------------------------------------------- the shape of the loop

def _functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("name", ["trainer.py", "start.py", "steps.py"])
def test_the_loop_never_asks_for_the_task_name(name):
    """Task differences live in hooks.py: no string "cs" (or any task name) in the loop's modules."""
    tasks = {"cs", *IMAGE_TASKS}
    tree = ast.parse((ENGINE / name).read_text())
    named = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in tasks]
    assert named == [], f"{name} names a task at lines {named}; add a field to engine/hooks.py instead"


@pytest.mark.parametrize("name", LOOP_MODULES)
def test_the_loop_modules_are_short_and_so_are_their_functions(name):
    path = ENGINE / name
    assert len(path.read_text().splitlines()) < 400
    long = {f.name: f.end_lineno - f.lineno + 1 for f in _functions(path) if f.end_lineno - f.lineno + 1 > 80}
    assert long == {}
