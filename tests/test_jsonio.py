"""json_safe: the one rule for writing inf and nan into JSON (evaluate, reproduce, training records)."""

import json
import math

import numpy as np

from dgunet.jsonio import json_safe


def test_non_finite_numbers_become_strings_that_float_reads_back():
    assert [json_safe(v) for v in (math.inf, -math.inf, math.nan)] == ["inf", "-inf", "nan"]
    assert float(json_safe(math.inf)) == math.inf
    assert json_safe(np.float32("inf")) == "inf" and json_safe(np.float64("-inf")) == "-inf"


def test_finite_values_and_non_numbers_are_unchanged():
    for value in (0.5, 3, True, None, "inf", np.float64(2.5)):
        assert json_safe(value) is value


def test_containers_are_converted_all_the_way_down():
    document = {"psnr": math.inf, "images": [{"psnr": 30.0}, {"psnr": -math.inf}], "pair": (1.0, math.nan)}
    safe = json_safe(document)
    assert safe == {"psnr": "inf", "images": [{"psnr": 30.0}, {"psnr": "-inf"}], "pair": [1.0, "nan"]}
    json.dumps(safe, allow_nan=False)  # raises if anything non-finite was left


def test_training_records_write_an_infinite_psnr_as_a_string(tmp_path):
    from dgunet.engine.records import Records, read_metrics

    Records(tmp_path, enabled=True, tensorboard=False).log_epoch({"epoch": 1, "psnr": math.inf, "lr": [2e-4]})
    assert read_metrics(tmp_path) == [{"epoch": 1, "psnr": "inf", "lr": [2e-4]}]
