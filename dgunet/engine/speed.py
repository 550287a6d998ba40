"""How a training step is computed: precision, memory format, compile, Adam kernel, merge.

Every option here changes the speed of a step, not what it computes (up to rounding):
    amp            "none" | "bf16" | "fp16" (fp16 with a gradient scaler; CUDA only)
    channels_last  NHWC weights and inputs
    compile        torch.compile of the model
    adam           "loop" (published: one parameter at a time) | "foreach" | "fused"
    fast_merge     the merge block's projection through a 16x16 solve (dgunet.models.fast)
                   instead of the explicit inverse; under AMP it runs in float32 either way
                   (the choice is `dgunet.models.fast.merge_projection`'s).

`TRAIN.SPEED: fast` (train.py --fast) picks the fastest combination that keeps results on
the device at hand (`fast_preset`); `published` takes the individual TRAIN keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dgunet.inference import cpu_has_fast_bf16
from dgunet.models.fast import merge_projection, set_merge_projection

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SpeedOptions:
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    adam: str = "loop"
    fast_merge: bool = False

    def describe(self) -> str:
        return (f"amp {self.amp}, channels_last {self.channels_last}, compile {self.compile}, "
                f"adam {self.adam}, fast merge {self.fast_merge}")


def fast_preset(device: torch.device | str, has_fast_bf16: bool | None = None) -> SpeedOptions:
    """The fastest result-keeping options on `device` (measured: docs/training.md, "Speed").

    CUDA: bf16 AMP (fp16 + scaler where the card has no bf16), NHWC, fused Adam, fast merge.
    CPU with native bf16 (AVX512-BF16 / AMX): bf16 AMP, NHWC (oneDNN's NCHW bf16 convolutions
    are slow), foreach Adam, fast merge. Other CPUs: bf16 would be emulated and slower, so
    fp32 with foreach Adam and the fast merge. torch.compile stays off: it costs minutes up
    front and is opt-in (TRAIN.COMPILE) until it is measured to pay off on the card.
    """
    device = torch.device(device)
    if device.type == "cuda":
        # Native bf16 only (compute capability 8+): V100 / T4 would emulate it, slower than fp16.
        amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        return SpeedOptions(amp=amp, channels_last=True, adam="fused", fast_merge=True)
    native = cpu_has_fast_bf16() if has_fast_bf16 is None else has_fast_bf16
    if native:
        return SpeedOptions(amp="bf16", channels_last=True, adam="foreach", fast_merge=True)
    return SpeedOptions(adam="foreach", fast_merge=True)


def speed_options(cfg, device: torch.device) -> SpeedOptions:
    """The options of a run: the preset of TRAIN.SPEED, or the individual TRAIN keys."""
    t = cfg.TRAIN
    if t.SPEED == "fast":
        return fast_preset(device)
    return SpeedOptions(amp=t.AMP, channels_last=t.CHANNELS_LAST, compile=t.COMPILE, adam=t.ADAM,
                        fast_merge=t.FAST_MERGE)


def prepare_model(raw: nn.Module, opts: SpeedOptions) -> nn.Module:
    """Memory format and merge projection of `raw`, in place (weights unchanged); returns it.

    The projection is the one `models.fast.merge_projection` picks for these options (under
    AMP without the fast merge: the published inverse, kept in float32).
    """
    if opts.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    projection = merge_projection(fast_merge=opts.fast_merge, autocast=opts.amp != "none")
    if projection is not None:
        set_merge_projection(raw, projection)
    return raw


def make_adam(params, opts: SpeedOptions, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0) -> torch.optim.Adam:
    """torch Adam with the kernel of `opts.adam`; the same update whichever kernel."""
    kind = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[opts.adam]
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kind)

