"""Loading and saving weights safely.

Loading accepts every published format: a training checkpoint `{'epoch', 'state_dict',
'optimizer'}`, a bare state dict (the compressive-sensing `.pkl` files), keys with or without
the `module.` prefix that `nn.DataParallel` adds. Files are read with `weights_only=True`, so
a file that would run code when unpickled is refused, never executed. Loading is strict; on a
mismatch the error says which variant the file holds and which one the model is.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dgunet.atomic import atomic_open
from dgunet.errors import CheckpointError
from dgunet.models.cs import CS_RATIOS, num_measurements
from dgunet.models.registry import VARIANTS

StateDict = dict[str, Tensor]


def read_checkpoint(path: str | os.PathLike) -> Any:
    """torch.load(path, weights_only=True) with errors a user can act on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the --weights path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if not _names_code(str(err)):
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch file ({reason}). "
                                  f"Is the download complete (not an HTML page)?") from None
        raise CheckpointError(
            f"refused to load {path}: it holds pickled code ({reason}); refused, nothing was run. "
            f"If you trust its source, re-save it with torch.save(model.state_dict(), ...) and load that."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}. Is the file complete "
                              f"(not an HTML download page or a truncated copy)?") from None


_CODE_WORDS = ("global", "reduce", "class", "build", "blocked")


def _names_code(message: str) -> bool:
    """Whether torch's weights_only error is about a callable or class in the pickle (not damage)."""
    return any(word in message.lower() for word in _CODE_WORDS)


def _unpickler_reason(message: str) -> str:
    """The one informative line of torch's long weights_only error."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:  # torch >= 2.6: "Trying to load unsupported GLOBAL posix.system ..."
        if line.startswith("Trying to load unsupported") or line.startswith("Unsupported global"):
            return line.split(". ")[0].rstrip(".")
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            tail = line.split("WeightsUnpickler error:", 1)[1].strip()
            tail = tail or (lines[i + 1] if i + 1 < len(lines) else "unsupported content")
            return tail.split(". ")[0]  # drop torch's advice to allowlist the global
    return lines[-1] if lines else "unsupported content"


def extract_state_dict(obj: Any, source: str = "checkpoint") -> StateDict:
    """The model weights inside a loaded checkpoint, without any `module.` prefix."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict: expected a dict of tensors or a dict "
                              f"with a 'state_dict' entry")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


@dataclass(frozen=True)
class Structure:
    """What a state dict's keys and shapes say about the model that wrote it."""

    kind: str  # "image" or "cs"
    arch: str  # "DGUNet" or "DGUNet_plus"
    n_feat: int
    scale_unetfeats: int
    scale_orsnetfeats: int | None  # not recorded by image DGUNet+ checkpoints
    in_c: int
    cs_ratio: float | None = None

    def describe(self) -> str:
        name = "DGUNet+" if self.arch == "DGUNet_plus" else "DGUNet"
        widths = f"n_feat={self.n_feat}, scale_unetfeats={self.scale_unetfeats}"
        if self.kind == "cs":
            ratio = f"{self.cs_ratio:g}%" if self.cs_ratio is not None else "an unknown ratio"
            return f"{name} for compressive sensing at ratio {ratio} ({widths})"
        tasks = [t for (t, a), v in VARIANTS.items() if v.published and t != "cs" and a == self.arch
                 and (v.n_feat, v.scale_unetfeats) == (self.n_feat, self.scale_unetfeats)
                 and self.scale_orsnetfeats in (None, v.scale_orsnetfeats)]
        if tasks:
            return f"{name} for {' or '.join(tasks)} ({widths})"
        return f"{name} with non-published widths ({widths}, in_c={self.in_c})"


def infer_structure(state: Mapping[str, Tensor]) -> Structure | None:
    """Recognise a DGUNet state dict from a few landmark keys; None if it is not one."""
    try:
        first = state["shallow_feat1.0.weight"]
        n_feat, in_c = first.shape[0], first.shape[1]
        scale = state["stage1_encoder.body.0.identity.weight"].shape[0] - n_feat
        if "Phi" in state:
            m = state["Phi"].shape[0]
            ratio = next((r for r in CS_RATIOS if num_measurements(r) == m), None)
            arch = "DGUNet_plus" if any(k.startswith("body.") for k in state) else "DGUNet"
            orsnet = state["concat_final.weight"].shape[0] - n_feat
            return Structure("cs", arch, n_feat, scale, orsnet, in_c, ratio)
        if "basic.r1" in state:
            orsnet = state["concat67.weight"].shape[0] - n_feat
            return Structure("image", "DGUNet", n_feat, scale, orsnet, in_c)
        if "merge67.conv_block.weight" in state:
            return Structure("image", "DGUNet_plus", n_feat, scale, None, in_c)
    except (KeyError, IndexError, AttributeError):
        pass
    return None


def _describe(state: Mapping[str, Tensor]) -> str:
    structure = infer_structure(state)
    return structure.describe() if structure else "not any DGUNet variant we know"


def _mismatch_message(source: str, ckpt: StateDict, model: nn.Module) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in ckpt]
    unexpected = [k for k in ckpt if k not in expected]
    shapes = [f"{k}: file {tuple(ckpt[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in ckpt and ckpt[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return None

    def few(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

    lines = [f"{source} does not fit the model: this checkpoint is {_describe(ckpt)}; "
             f"the model you built is {_describe(expected)}."]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {few(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {few(unexpected)}")
    if shapes:
        lines.append(f"  shape mismatches ({len(shapes)}): {few(shapes)}")
    lines.append("  Build the model that matches the file (task, --arch, widths, --cs-ratio).")
    return "\n".join(lines)


def first_non_finite(state: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor of `state` holding a NaN or an infinity, or None."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """CheckpointError naming `source` and the first tensor with a NaN or an infinity.

    Every path that loads weights calls this: NaN weights restore black images that still get a
    PSNR, and training from them fails one step later with advice that does not fit.
    """
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{source} holds non-finite weights (NaN or inf, first in {bad!r}); refused. "
                              f"Use an earlier checkpoint of that run (model_best.pth, model_epoch_N.pth)")


# Keys that opt-in modules add to a published model (noise_aware: `noise_net`; head="stages":
# `readout`): a published file has none of them, so starting a run from one (TRAIN.INIT_FROM) leaves
# these at their initialisation, which is designed to reproduce the published forward.
OPT_IN_PREFIXES = ("noise_net.", "readout.")


def load_weights(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
                 source: str | None = None, keep_init: tuple[str, ...] = ()) -> nn.Module:
    """Load published or our own weights into `model`, strictly. Returns the model.

    `source` names a state dict in error messages (e.g. the file it was read from). `keep_init`:
    key prefixes of the model that the file may lack (those keep the model's values); anything else
    missing, any unexpected key and any shape mismatch is still refused.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, obj = source or "the state dict", path_or_state_dict
    else:
        source, obj = source or f"checkpoint {path_or_state_dict}", read_checkpoint(path_or_state_dict)
    state = dict(extract_state_dict(obj, source))
    own = model.state_dict()
    kept = [k for k in own if k not in state and k.startswith(keep_init)] if keep_init else []
    state.update({k: own[k] for k in kept})
    problem = _mismatch_message(source, state, model)
    if problem:
        raise CheckpointError(problem)
    check_finite(state, source)
    model.load_state_dict(state, strict=True)
    return model


def init_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """TRAIN.INIT_FROM: `path`'s weights into `model`, where the model's opt-in modules
    (OPT_IN_PREFIXES) may be absent from the file; returns the prefixes that kept their init."""
    before = {k for k in model.state_dict() if k.startswith(OPT_IN_PREFIXES)}
    state = extract_state_dict(read_checkpoint(path), f"checkpoint {path}")
    load_weights(model, state, source=f"checkpoint {path}", keep_init=OPT_IN_PREFIXES)
    return sorted({k.split(".")[0] for k in before if k not in state})


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through a temporary file in the same folder, then rename.

    A crash or a full disk leaves the previous file intact, never a truncated one. The file is
    serialised in memory first: torch's zip writer reports a failed write as "unexpected pos"
    rather than the OSError, and atomic_open turns the OSError into a StorageError naming the path.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return Path(path)
