"""scripts/learning_curves.py's tables say, at every budget, whether a stage is above the output."""

from __future__ import annotations

from conftest import load_task_module


def module():
    return load_task_module("scripts", "learning_curves")


def curves(stages_at_first_budget: list[float]) -> dict:
    good = [30.0, 30.1, 30.2, 30.3, 30.2, 30.1, 30.5]
    points = [{"epoch": 3, "steps": 408, "final": {"x2": stages_at_first_budget[-1]},
               "stages": {"x2": stages_at_first_budget}},
              {"epoch": 24, "steps": 3264, "final": {"x2": good[-1]}, "stages": {"x2": good}}]
    return {"sr-x2": {"points": points, "baselines": {"bicubic": {"x2": 29.0}}, "start": "bicubic"}}


def test_a_stage_above_the_output_is_named_in_its_row_and_in_the_summary():
    lc = module()
    assert lc.stage_above_output([30.0, 30.4, 30.2, 30.1, 30.0, 29.9, 30.3]) == (2, 30.4)
    assert lc.stage_above_output([30.0, 30.3, 30.2, 30.1, 30.0, 29.9, 30.3]) is None  # a tie is not above
    text = lc.markdown(curves([30.0, 30.4, 30.2, 30.1, 30.0, 29.9, 30.3]))
    assert "| DGUNet, 408 steps (epoch 3) | 30.30 (stage 2: 30.40) |" in text
    assert "| DGUNet, 3264 steps (epoch 24) | 30.50 |" in text
    assert "A stage is above the output at: 408 steps (x2)." in text


def test_the_summary_says_so_when_the_output_is_always_the_best_stage():
    text = module().markdown(curves([30.0, 30.1, 30.2, 30.1, 30.0, 29.9, 30.3]))
    assert "The output is the best stage at every budget and group." in text
    assert "| DGUNet, 408 steps (epoch 3) | 30.30 |" in text
