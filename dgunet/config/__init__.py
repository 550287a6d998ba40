"""Training configuration: yacs defaults, loading from YAML + command-line overrides, validation.

The defaults are the deblurring recipe of the paper (dgunet.config.defaults); each task's
`training.yml` restates every published value for its task (docs/training.md), so a yml is a complete
record of the recipe. `load_config(path, opts)` merges a yml and `KEY VALUE` pairs over these
defaults, coerces types forgivingly (`1e-4` in YAML is a string to PyYAML; `1` for a float key is
fine; dgunet.config.merging) and validates the result section by section (dgunet.config.validation),
raising ConfigError with a message naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from dgunet.config.defaults import defaults
from dgunet.config.merging import merge_mapping, merge_pairs, opts_pairs
from dgunet.config.validation import known_multiple, validate, validate_degrade
from dgunet.errors import ConfigError
from dgunet.models.registry import normalize_arch
from dgunet.tasks import get_task

__all__ = ["canonical_arch", "config_from_yaml_string", "cosine_t_max", "defaults", "known_multiple",
           "load_config", "model_arguments", "output_dir", "resolve_path", "run_name", "validate",
           "validate_degrade", "with_updates"]

# 'DGUNet+', 'dgunet_plus' -> 'DGUNet_plus': the registry's rule, under the name the engine imports.
canonical_arch = normalize_arch


def _read_yml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def load_config(path: str | os.PathLike | None = None, opts: Sequence[str] = (),
                overrides: Mapping[str, Any] | None = None) -> CN:
    """Defaults <- yml at `path` <- `overrides` (nested mapping) <- `opts` (KEY VALUE list).

    Returns a frozen, validated CfgNode.
    """
    cfg = defaults()
    if path is not None:
        merge_mapping(cfg, _read_yml(Path(path)), str(path))
    if overrides:
        merge_mapping(cfg, overrides, "the command line")
    if opts:
        merge_pairs(cfg, opts_pairs(opts), "--opts")
    validate(cfg)
    cfg.freeze()
    return cfg


def config_from_yaml_string(text: str) -> CN:
    """The config stored in a checkpoint (defaults fill keys added since it was written)."""
    cfg = defaults()
    merge_mapping(cfg, yaml.safe_load(text) or {}, "the checkpoint's config")
    cfg.freeze()
    return cfg


def with_updates(cfg: CN, **updates: Any) -> CN:
    """A frozen copy of `cfg` with dotted keys replaced: with_updates(cfg, **{"TRAIN.RESUME": True})."""
    new = cfg.clone()
    new.defrost()
    merge_pairs(new, list(updates.items()), "with_updates")
    validate(new)
    new.freeze()
    return new


def model_arguments(cfg: CN, gradient: str | None = None) -> dict[str, Any]:
    """The build_model arguments beyond the widths (and the CS ratio) that cfg.MODEL implies.

    The one translation of MODEL.* into constructor options, for the trainer and for every loader
    of a checkpoint's own config. Published values are left out, so a published model is built
    exactly as published. gradient: replaces MODEL.GRADIENT (a loader's explicit choice).
    """
    m = cfg.MODEL
    start = {"start": m.START} if m.START != "adagger" else {}
    if get_task(m.TASK).is_cs:  # a learned Phi is in the weights; a fixed one is rebuilt from its seed
        return {} if m.PHI == "learned" else {"phi": m.PHI, "phi_seed": m.PHI_SEED, **start}
    head = {"head": m.HEAD} if m.HEAD != "x0" else {}
    gradient = gradient or m.GRADIENT
    if gradient == "learned":
        return head
    consistency = {"data_consistency": True} if m.DATA_CONSISTENCY else {}
    return {"gradient": gradient, **({"noise_aware": True} if m.NOISE_AWARE else {}), **start, **head,
            **consistency}


def cosine_t_max(cfg: CN) -> int:
    return cfg.OPTIM.NUM_EPOCHS - cfg.OPTIM.WARMUP_EPOCHS + cfg.OPTIM.T_MAX_EXTRA


def resolve_path(cfg: CN, value: str) -> Path:
    """A config path: absolute as is, relative to TASK_DIR (or the current directory)."""
    path = Path(os.path.expanduser(value))
    if path.is_absolute() or not cfg.TASK_DIR:
        return path
    return Path(cfg.TASK_DIR) / path


def run_name(cfg: CN) -> str:
    if cfg.OUTPUT.NAME:
        return cfg.OUTPUT.NAME
    arch = canonical_arch(cfg.MODEL.ARCH)
    if get_task(cfg.MODEL.TASK).is_cs:
        return f"{arch}_ratio{cfg.MODEL.CS_RATIO:g}_phase{cfg.TRAIN.PHASE}"
    return arch


def output_dir(cfg: CN) -> Path:
    """Where checkpoints, metrics.jsonl, curves.png and the resolved config go."""
    return resolve_path(cfg, cfg.OUTPUT.DIR) / run_name(cfg)
