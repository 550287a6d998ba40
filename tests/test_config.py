"""Config loading (dgunet.config): yacs merges, values are typed forgivingly, errors are one line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dgunet.config import (
    canonical_arch,
    config_from_yaml_string,
    defaults,
    known_multiple,
    load_config,
    run_name,
    with_updates,
)
from dgunet.errors import ConfigError
from dgunet.models.registry import normalize_arch

REPO = Path(__file__).resolve().parents[1]


def test_values_take_the_type_of_their_default():
    cfg = load_config(None, ["OPTIM.LR_INITIAL", "1", "OPTIM.NUM_EPOCHS", "7.0", "TRAIN.RESUME", "yes",
                             "OPTIM.BETAS", "[0.5, 0]", "OUTPUT.NAME", "2"])
    assert cfg.OPTIM.LR_INITIAL == 1.0 and isinstance(cfg.OPTIM.LR_INITIAL, float)
    assert cfg.OPTIM.NUM_EPOCHS == 7 and isinstance(cfg.OPTIM.NUM_EPOCHS, int)
    assert cfg.TRAIN.RESUME is True
    assert list(cfg.OPTIM.BETAS) == [0.5, 0.0] and isinstance(cfg.OPTIM.BETAS[1], float)
    assert cfg.OUTPUT.NAME == "2"  # yacs would literal_eval it into the int 2


def test_a_yml_is_merged_over_the_defaults(tmp_path):
    yml = tmp_path / "t.yml"
    yml.write_text("OPTIM:\n  LR_INITIAL: 2e-4\nVAL: {}\nOUTPUT:\n  NAME: run\n")
    cfg = load_config(yml, ["OUTPUT.NAME", "other"])
    assert cfg.OPTIM.LR_INITIAL == 2e-4  # PyYAML's string "2e-4"
    assert cfg.VAL.EVERY == defaults().VAL.EVERY and cfg.OUTPUT.NAME == "other"  # opts come last
    assert cfg.is_frozen()


@pytest.mark.parametrize(("text", "message"), [
    ("OPTIM:\n  LR_INITAL: 1\n", r"unknown config key OPTIM.LR_INITAL in .*t.yml; did you mean OPTIM.LR_INI"),
    ("MODEL: 3\n", "MODEL in .* must be a section with keys, got 3"),
    ("MODL:\n  TASK: cs\n", "unknown config key MODL .*did you mean MODEL"),
    ("TRAIN:\n  PATCH_SIZE: [1]\n", r"TRAIN.PATCH_SIZE = \[1\] from .* is not a valid int \(default: 256\)"),
    ("- a list\n", "must hold a mapping of sections"),
    ("OPTIM: [\n", "is not valid YAML"),
])
def test_bad_ymls_give_one_line_errors(tmp_path, text, message):
    yml = tmp_path / "t.yml"
    yml.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(yml)
    assert "\n" not in str(err.value).split("not valid YAML")[0]


def test_a_python_config_is_not_executed(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "cfg.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\ncfg = {{}}\n")
    with pytest.raises(ConfigError):
        load_config(script)
    assert not marker.exists()


def test_validation_names_the_key_of_each_section():
    cases = {
        "MODEL.ARCH": ["MODEL.ARCH", "UNet"],
        "OPTIM.GAMMA": ["OPTIM.SCHEDULE", "multistep", "OPTIM.GAMMA", "2"],
        "TRAIN.ACCUM_STEPS = 3": ["TRAIN.ACCUM_STEPS", "3"],
        "DATA.LENGTH_MULTIPLIER": ["DATA.LENGTH_MULTIPLIER", "0"],
        "VAL.PER_EPOCH": ["VAL.PER_EPOCH", "0"],
        "LOSS.STAGE_WEIGHTS": ["LOSS.STAGE_WEIGHTS", "[1, 2]"],
        "TRAIN.PHASE = 3": ["MODEL.TASK", "cs", "TRAIN.PATCH_SIZE", "32", "TRAIN.PHASE", "3"],
        "DEGRADE.SCALE = 5": ["MODEL.TASK", "sr", "DEGRADE.KIND", "sr", "DEGRADE.SCALE", "5"],
        "MODEL.TASK = sr trains on synthetic degradations": ["MODEL.TASK", "sr"],
    }
    for key, opts in cases.items():
        with pytest.raises(ConfigError, match=key):
            load_config(None, opts)


def test_the_sr_size_rule_is_lcm_of_8_and_the_scale():
    sr = ["MODEL.TASK", "sr", "DEGRADE.KIND", "sr", "DEGRADE.SCALE", "3", "VAL.CROP", "48"]
    assert known_multiple(load_config(None, [*sr, "TRAIN.PATCH_SIZE", "48"])) == 24
    with pytest.raises(ConfigError, match="TRAIN.PATCH_SIZE = 32 must be a multiple of 24"):
        load_config(None, [*sr, "TRAIN.PATCH_SIZE", "32"])


def test_checkpoint_config_round_trips_and_updates_are_typed():
    cfg = load_config(REPO / "Compressive_Sensing" / "training.yml")
    assert config_from_yaml_string(cfg.dump()) == cfg
    assert run_name(cfg) == "DGUNet_ratio25_phase1"
    new = with_updates(cfg, **{"OPTIM.NUM_EPOCHS": 5.0, "TRAIN.RESUME": "true"})
    assert (new.OPTIM.NUM_EPOCHS, new.TRAIN.RESUME) == (5, True)
    with pytest.raises(ConfigError, match="unknown config key TRAIN.RESUM"):
        with_updates(cfg, **{"TRAIN.RESUM": True})


def test_canonical_arch_is_the_registrys_rule():
    assert canonical_arch is normalize_arch
    assert canonical_arch("dgunet+") == "DGUNet_plus"


def test_config_modules_are_short():
    for path in (REPO / "dgunet" / "config").glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 80, f"{path.name}:{node.name}"
