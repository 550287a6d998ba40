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


def test_the_margin_is_paired_over_images_against_the_best_stage_by_mean():
    import numpy as np

    lc = module()
    # 3 images x 7 PSNRs; stage 2 is best by mean; the output is 0.1 / 0.2 / 0.3 above it
    per_image = np.array([[30.0, 31.0, 30.5, 30, 30, 30, 31.1],
                          [25.0, 26.0, 26.5, 25, 25, 25, 26.2],
                          [35.0, 36.0, 35.0, 35, 35, 35, 36.3]])
    mean, se = lc.margin(per_image)
    assert mean == 0.2 and abs(se - 0.1 / np.sqrt(3)) < 1e-3  # std of (0.1, 0.2, 0.3) is 0.1
    points = curves([30.0, 30.4, 30.2, 30.1, 30.0, 29.9, 30.3])
    points["sr-x2"]["points"][0]["margin"] = {"x2": [-0.1, 0.02]}
    points["sr-x2"]["points"][1]["margin"] = {"x2": [0.2, 0.05]}
    text = lc.markdown(points)
    assert "| 30.30 (stage 2: 30.40; -0.100 ± 0.020) |" in text
    assert "smallest -0.100 ± 0.020 dB (408 steps, x2), largest +0.200 dB." in text


def test_a_data_consistent_scoring_gets_its_own_rows_and_summary():
    c = curves([30.0, 30.4, 30.2, 30.1, 30.0, 29.9, 30.3])
    first = c["sr-x2"]["points"][0]
    projected = [30.0, 30.4, 30.2, 30.1, 30.0, 29.9, 30.45]
    first["consistent"] = {"final": {"x2": projected[-1]}, "stages": {"x2": projected}}
    text = module().markdown(c)
    assert "| DGUNet, data-consistent, 408 steps (epoch 3) | 30.45 |" in text
    assert "The data-consistent output is the best stage at every budget and group." in text
    assert "A stage is above the output at: 408 steps (x2)." in text  # the as-trained row still says so
