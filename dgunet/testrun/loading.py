"""Build the model a checkpoint holds and load it, with errors that name the file.

Architecture and widths come from the command line when given; otherwise from the checkpoint
itself (`infer_structure`), so a reduced-width model of your own tests without extra flags.
Widths are taken from the file only when they are none of the published ones: a published
checkpoint of *another* task (say deraining weights, n_feat=40, given to the deblurring test)
must not be silently accepted, so the task's own published model is built and the strict load
explains the mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from yacs.config import CfgNode as CN

from dgunet.checkpoint import Structure, extract_state_dict, infer_structure, load_weights, read_checkpoint
from dgunet.config import config_from_yaml_string, model_arguments
from dgunet.errors import ConfigError
from dgunet.models import VARIANTS, build_model, get_variant, normalize_arch


@dataclass
class LoadedModel:
    model: nn.Module
    arch: str
    widths: dict[str, int]
    cs_ratio: float | None
    inferred: bool  # widths read from the checkpoint rather than published/given

    def describe(self, task: str) -> str:
        name = "DGUNet+" if self.arch == "DGUNet_plus" else "DGUNet"
        ratio = f", cs_ratio={self.cs_ratio:g}" if self.cs_ratio is not None else ""
        source = " (widths inferred from the checkpoint)" if self.inferred else ""
        # Image DGUNet+ has no ORSNet-width layers: showing that width would mislead.
        unused = "scale_orsnetfeats" if self.arch == "DGUNet_plus" and task != "cs" else None
        widths = ", ".join(f"{k}={v}" for k, v in self.widths.items() if k != unused)
        title = "compressive sensing" if task == "cs" else task
        return f"{name} for {title} ({widths}{ratio}){source}"


def _kind(task: str) -> str:
    return "cs" if task == "cs" else "image"


def _structure_widths(structure: Structure) -> dict[str, int]:
    widths = {"n_feat": structure.n_feat, "scale_unetfeats": structure.scale_unetfeats}
    if structure.scale_orsnetfeats is not None:  # image DGUNet+ files do not record it
        widths["scale_orsnetfeats"] = structure.scale_orsnetfeats
    return widths


def _matches(found: dict[str, int], widths: dict[str, int]) -> bool:
    return all(widths[k] == v for k, v in found.items())


def resolve_widths(task: str, arch: str, structure: Structure | None,
                   given: dict[str, int]) -> tuple[dict[str, int], bool]:
    """(constructor widths, whether they came from the checkpoint). See the module docstring."""
    published = dict(get_variant(task, arch).widths)
    if given:
        return {**published, **given}, False
    if structure is None or structure.kind != _kind(task) or structure.arch != arch:
        return published, False  # the strict load will say what the file holds
    found = _structure_widths(structure)
    same_kind = [v.widths for (t, a), v in VARIANTS.items() if a == arch and _kind(t) == _kind(task)]
    if any(_matches(found, w) for w in same_kind):
        return published, False
    return {**published, **found}, True


def _resolve_ratio(task: str, structure: Structure | None, cs_ratio: float | None,
                   weights: Path) -> float | None:
    if task != "cs":
        return None
    if cs_ratio is not None:
        return cs_ratio
    if structure is not None and structure.kind == "cs" and structure.cs_ratio is not None:
        return structure.cs_ratio
    raise ConfigError(f"cannot tell the sampling ratio of {weights}; pass --cs-ratio")


def stored_config(checkpoint) -> CN | None:
    """The training config inside a checkpoint of our engine (read_checkpoint's dict), or None
    (published files have none); keys added since it was written get their defaults."""
    text = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    return config_from_yaml_string(text) if isinstance(text, str) and text else None


def checkpoint_config(weights: str | Path) -> CN | None:
    """`stored_config` of the file `weights`."""
    return stored_config(read_checkpoint(weights))


def model_options(cfg: CN | None, gradient: str | None, task: str = "deblurring") -> dict:
    """The constructor options a checkpoint's own config implies (dgunet.config.model_arguments): its
    gradient step unless `gradient` is given, and its start; for CS its fixed Phi. The noise
    conditioning and the head are left to the weights' keys (load_model): they add keys, so the
    keys cannot disagree with the model that is built."""
    if cfg is None:  # a published file: built as published, or with the gradient step asked for
        return {"gradient": gradient} if gradient not in (None, "learned") and task != "cs" else {}
    options = model_arguments(cfg, None if task == "cs" else gradient)
    return {k: v for k, v in options.items() if k not in ("noise_aware", "head")}


def load_model(task: str, weights: str | Path, arch: str | None = None,
               given_widths: dict[str, int] | None = None, cs_ratio: float | None = None,
               device: str | torch.device = "cpu", gradient: str | None = None) -> LoadedModel:
    """Read `weights`, build the matching `task` model, load it strictly, move it to `device`.

    gradient: the gradient step to build (dgunet.models.gradient); None: the checkpoint's own
    MODEL.GRADIENT ("learned" for files without a config). A known model also gets the checkpoint's
    MODEL.START; when its keys hold noise_net.*, the noise conditioning; readout.*, the "stages" head.
    Raises CheckpointError (naming the file) for unreadable files and for weights of another
    task or architecture.
    """
    weights = Path(weights)
    checkpoint = read_checkpoint(weights)
    state = extract_state_dict(checkpoint, f"checkpoint {weights}")
    structure = infer_structure(state)
    if arch is None:
        arch = structure.arch if structure is not None else "DGUNet"
    arch = normalize_arch(arch)
    widths, inferred = resolve_widths(task, arch, structure, {k: v for k, v in (given_widths or {}).items()
                                                              if v is not None})
    ratio = _resolve_ratio(task, structure, cs_ratio, weights)
    extra = {"cs_ratio": ratio} if ratio is not None else {}
    extra.update(model_options(stored_config(checkpoint), gradient, task))
    if "gradient" in extra and any(key.startswith("noise_net.") for key in state):  # MODEL.NOISE_AWARE
        extra["noise_aware"] = True
    if task != "cs" and any(key.startswith("readout.") for key in state):  # MODEL.HEAD stages
        extra["head"] = "stages"
    model = build_model(task, arch, **widths, **extra)
    load_weights(model, state, source=f"checkpoint {weights}")  # read once; a mismatch still names the file
    model = model.to(device).eval()
    return LoadedModel(model, arch, widths, ratio, inferred)
