"""Merging a yml, a mapping of overrides and `KEY VALUE` pairs over the defaults.

yacs merges (CfgNode.merge_from_list); this module adds what yacs lacks: forgiving types and
one-line errors. yacs accepts a value only of the default's exact type, so `1` for a float key, `7.0`
for an int key or `yes` for a bool would be refused, and PyYAML leaves `1e-4` a string: each value is
first converted to the type of its default. An unknown key gets a ConfigError with the closest names.
YAML is read with yaml.safe_load, not yacs' merge_from_file, which would also run a .py file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from dgunet.errors import ConfigError

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise TypeError


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    return float(value)  # also "1e-4", which PyYAML leaves a string


def _str(value: Any) -> str:
    if isinstance(value, dict | list):
        raise TypeError
    return "" if value is None else str(value)


def coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """`value` converted to the type of `default` (lists element by element), or ConfigError."""
    try:
        if isinstance(default, list | tuple):
            value = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(value, list | tuple):
                raise TypeError
            return [coerce(v, default[0], key, source) for v in value] if default else list(value)
        # bool before int: a bool is an int to isinstance
        convert = next(f for t, f in ((bool, _bool), (int, _int), (float, _float), (str, _str))
                       if isinstance(default, t))
        return convert(value)
    except (TypeError, ValueError, StopIteration, yaml.YAMLError):
        raise ConfigError(f"{key} = {value!r} from {source} is not a valid {type(default).__name__} "
                          f"(default: {default!r})") from None


def _leaf_keys(node: CN, prefix: str = "") -> list[str]:
    """Every full key under `node`: ["MODEL.TASK", "MODEL.ARCH", ...]."""
    keys = []
    for name, value in node.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if isinstance(value, CN) else [prefix + name]
    return keys


def _unknown_key(root: CN, node: CN, name: str, prefix: str, source: str) -> ConfigError:
    close = [prefix + c for c in difflib.get_close_matches(name, list(node.keys()), n=3)]
    if not close:  # the right name in the wrong section, e.g. TRAIN.TRAIN_DIR for DATA.TRAIN_DIR
        close = [k for k in _leaf_keys(root) if k.rsplit(".", 1)[-1] == name]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {prefix}{name} in {source}{hint}")


def _default_of(cfg: CN, key: str, value: Any, source: str) -> Any:
    """The current value of the leaf `key` ("OPTIM.LR_INITIAL"); ConfigError if there is none."""
    node, prefix = cfg, ""
    for name in key.split("."):
        if not isinstance(node, CN) or name not in node:
            if not isinstance(node, CN):  # a value where a section was meant: MODEL.TASK.X
                raise ConfigError(f"unknown config key {key} in {source}: {prefix[:-1]} is a value")
            raise _unknown_key(cfg, node, name, prefix, source)
        node, prefix = node[name], f"{prefix}{name}."
    if isinstance(node, CN) and not (isinstance(value, Mapping) and not value):  # `VAL: {}` sets nothing
        raise ConfigError(f"{key} in {source} must be a section with keys, got {value!r}")
    return node


def _dotted(updates: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """{"OPTIM": {"LR_INITIAL": 1}} -> ("OPTIM.LR_INITIAL", 1); no config value is a mapping."""
    for name, value in updates.items():
        if isinstance(value, Mapping) and value:
            yield from _dotted(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def merge_pairs(cfg: CN, pairs: Iterator[tuple[str, Any]] | Sequence[tuple[str, Any]], source: str) -> None:
    """Set each dotted key of `pairs` in `cfg`, typed as its default."""
    for key, value in pairs:
        default = _default_of(cfg, key, value, source)
        if isinstance(default, CN):  # an empty section: nothing to set
            continue
        typed = coerce(value, default, key, source)
        # yacs literal_evals string values (OUTPUT.NAME "2" would become the int 2): give it their repr
        cfg.merge_from_list([key, repr(typed) if isinstance(typed, str) else typed])


def merge_mapping(cfg: CN, updates: Mapping[str, Any], source: str) -> None:
    """Merge a nested mapping (a yml's sections) into `cfg`."""
    merge_pairs(cfg, _dotted(updates), source)


def opts_pairs(opts: Sequence[str]) -> list[tuple[str, Any]]:
    """["OPTIM.LR_INITIAL", "2e-4", ...] -> [("OPTIM.LR_INITIAL", "2e-4"), ...], values read as YAML."""
    if len(opts) % 2:
        raise ConfigError(f"--opts takes KEY VALUE pairs; got an odd number of items: {' '.join(opts)}")
    return [(key, yaml.safe_load(text) if text != "" else "") for key, text in zip(opts[::2], opts[1::2],
                                                                                   strict=True)]
