"""The shipped known-operator models of `pretrained/`: the manifest (manifest.json) and its files.

Each file holds {"state_dict", "config"} (the training config as YAML), loads with
`weights_only=True`, and is listed in the manifest with its sha256, size, training time and CPU,
and its scores on the benchmark cases. The folder is `$DGUNET_PRETRAINED` if set, else
`pretrained/` beside the package (a checkout or an editable install); pass `folder=` to use
another. This module finds and checks the files; `dgunet.pretrained.load_pretrained` builds the
model (it needs the test protocols' loader, a layer above: docs/architecture.md).

Names: a shipped model is found by its manifest name ("deblurring", "sr-x4", "denoising", ...) or
by task ("deblurring", "sr", "denoising"; for SR also the scale).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dgunet.atomic import write_text_atomic
from dgunet.errors import CheckpointError, ConfigError

MANIFEST = "manifest.json"
MAX_BYTES = 10 * 1024 * 1024  # the repository stays small: every shipped file is at most 10 MB


@dataclass(frozen=True)
class Entry:
    """One manifest row: the file and what it was trained for."""

    name: str
    file: str
    task: str  # the registry task: deblurring | sr | denoising
    scale: int | None
    info: dict  # sha256, bytes, training, scores: everything else the manifest says


def pretrained_dir() -> Path:
    env = os.environ.get("DGUNET_PRETRAINED")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


def read_manifest(folder: Path | None = None) -> dict[str, Entry]:
    """name -> Entry; {} when the folder has no manifest (nothing shipped yet)."""
    path = (folder or pretrained_dir()) / MANIFEST
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())["models"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid manifest ({err}); restore it from the "
                              f"repository") from None
    return {name: Entry(name, row["file"], row["task"], row.get("scale"), row) for name, row in rows.items()}


def find(name_or_task: str, scale: int | None = None, folder: Path | None = None) -> Entry:
    """The manifest entry for a name, or for a task (and SR scale); ConfigError naming what ships."""
    entries = read_manifest(folder)
    if name_or_task in entries:
        return entries[name_or_task]
    matches = [e for e in entries.values() if e.task == name_or_task and scale in (None, e.scale)]
    if len(matches) == 1 or (matches and scale is None and name_or_task != "sr"):
        return matches[0]
    shipped = ", ".join(sorted(entries)) or "none yet"
    want = f"{name_or_task}" + (f" x{scale}" if scale else "")
    if len(matches) > 1:
        scales = sorted(e.scale for e in matches if e.scale)
        which = f"--scale {', '.join(map(str, scales[:-1]))} or {scales[-1]}" if len(scales) > 1 else "a name"
        raise ConfigError(f"several shipped models for {want} ({', '.join(e.name for e in matches)}); "
                          f"pass {which}")
    raise ConfigError(f"no shipped model for {want} (shipped: {shipped}); pass --weights W")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(entry: Entry, folder: Path | None = None, verify: bool = True) -> Path:
    """The file of an entry, checked against the manifest's sha256 (a changed or truncated file is
    refused: a silently different model would report numbers that are not the manifest's)."""
    path = (folder or pretrained_dir()) / entry.file
    if not path.is_file():
        raise CheckpointError(f"shipped model {entry.name}: {path} is missing; check out the repository's "
                              f"pretrained/ folder (git lfs is not used: it is a plain file)")
    if verify and entry.info.get("sha256") and sha256(path) != entry.info["sha256"]:
        raise CheckpointError(f"{path} does not match its sha256 in {MANIFEST}; restore it with "
                              f"`git checkout -- {path}`")
    return path


def shipped_weights(task: str, scale: int | None = None, folder: Path | None = None) -> Path:
    """The checked file of the model shipped for a known-operator task (and SR scale): what
    `restore` and the known test protocols use when no --weights is given."""
    return weights_path(find(task, scale, folder), folder)


def export(checkpoint: Path, out: Path) -> Path:
    """A training checkpoint (model_best.pth / model_latest.pth) -> a shipped file: the weights and
    the training config only (no optimizer), float32; refused over MAX_BYTES."""
    from dgunet.atomic import write_bytes_atomic
    from dgunet.checkpoint import extract_state_dict, read_checkpoint

    state = read_checkpoint(checkpoint)
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, str) or not config:
        raise CheckpointError(f"{checkpoint} holds no training config; export a checkpoint written by train.py")
    weights = {k: v.detach().float().cpu().contiguous() for k, v in
               extract_state_dict(state, f"checkpoint {checkpoint}").items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": weights, "config": config}, buffer)
    if buffer.tell() > MAX_BYTES:
        raise CheckpointError(f"{checkpoint}: the exported weights take {buffer.tell() / 2**20:.1f} MB; "
                              f"shipped models must stay under {MAX_BYTES // 2**20} MB (train smaller widths)")
    return write_bytes_atomic(out, buffer.getvalue())


def write_manifest(entries: dict[str, dict], folder: Path) -> Path:
    """Rewrite the manifest atomically; each row gets the file's sha256 and size."""
    rows = {}
    for name, row in sorted(entries.items()):
        path = folder / row["file"]
        rows[name] = {**row, "sha256": sha256(path), "bytes": path.stat().st_size}
    text = json.dumps({"models": rows}, indent=1, sort_keys=True) + "\n"
    return write_text_atomic(folder / MANIFEST, text)
