"""Training objectives of the published DGUNet scripts, plus the MixUp augmentation.

Shapes: images are (B, C, H, W) float tensors in [0, 1]; every loss returns a 0-d tensor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet import tasks
from dgunet.errors import ConfigError

# 1-D binomial-like filter of the published edge loss; its outer product is the 5x5 kernel.
_GAUSS_1D = (0.05, 0.25, 0.4, 0.25, 0.05)


def charbonnier(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """mean(sqrt((x - y)^2 + eps^2)) over all elements; a smooth L1."""
    diff = x - y
    return torch.mean(torch.sqrt(diff * diff + eps * eps))


def edge_loss_kernel(dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The (5, 5) kernel; it sums to 1, so it keeps constant images constant."""
    k = torch.tensor(_GAUSS_1D, dtype=dtype, device=device)
    return torch.outer(k, k)


def gaussian_blur(x: Tensor) -> Tensor:
    """Depthwise 5x5 blur with replicate padding: (B, C, H, W) -> (B, C, H, W), any C."""
    channels = x.shape[1]
    weight = edge_loss_kernel(x.dtype, x.device).expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), weight, groups=channels)


def laplacian(x: Tensor) -> Tensor:
    """One Laplacian-pyramid band: x - g(up(down(g(x)))), (B, C, H, W) -> same.

    `down` keeps the even rows and columns; `up` puts 4x those samples back in place
    and zeros elsewhere (the 4 restores the mean lost to the zeros). Because of the
    replicate padding, the band of a constant image is zero only two or more pixels
    away from the border; the outer two rows and columns see the zeros of `up`
    replicated into the padding.
    """
    blurred = gaussian_blur(x)
    upsampled = torch.zeros_like(blurred)
    upsampled[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
    return x - gaussian_blur(upsampled)


def edge_loss(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier distance between the Laplacian bands of x and y."""
    return charbonnier(laplacian(x), laplacian(y), eps)


class CharbonnierLoss(nn.Module):
    """Module form of `charbonnier`."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return charbonnier(x, y, self.eps)


class EdgeLoss(nn.Module):
    """Module form of `edge_loss`."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return edge_loss(x, y, self.eps)


def mixup(
    inp: Tensor, tgt: Tensor, generator: torch.Generator | None = None, alpha: float = 0.6
) -> tuple[Tensor, Tensor]:
    """Mix each pair with a partner from one random permutation of the batch.

    lam ~ Beta(alpha, alpha) per sample, shape (B, 1, 1, 1); the same lam and
    permutation are used for input and target so that the pairs stay consistent.
    torch's Beta sampler takes no generator, so a seed drawn from `generator` (or
    from the global torch RNG) feeds a NumPy sampler: reproducible either way.
    """
    batch = inp.shape[0]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    lam_np = np.random.default_rng(seed).beta(alpha, alpha, size=batch)
    lam = torch.as_tensor(lam_np, dtype=inp.dtype, device=inp.device).view(-1, 1, 1, 1)
    perm = torch.randperm(batch, generator=generator).to(inp.device)
    return lam * inp + (1 - lam) * inp[perm], lam * tgt + (1 - lam) * tgt[perm]


def stage_loss(
    outputs: list[Tensor],
    target: Tensor,
    task: str,
    edge_weight: float = 0.05,
    eps: float = 1e-3,
    stage_weights: list[float] | None = None,
) -> Tensor:
    """The published objective: a sum over the network's stage outputs (7 for DGUNet, final first).

    The task table (dgunet.tasks) gives each task's objective and whether outputs are clamped to [0, 1]:
    deblurring, deraining (and sr, not in the paper): sum Charbonnier + edge_weight * sum EdgeLoss;
    denoising: sum Charbonnier on outputs clamped to [0, 1];
    cs: sum MSE on outputs clamped to [0, 1].
    stage_weights (one per output, final first; LOSS.STAGE_WEIGHTS): a weighted sum instead; None
    is the published equal weighting, computed exactly as published.
    """
    if not outputs:
        raise ConfigError("stage_loss needs at least one output")
    if stage_weights is not None:
        return weighted_stage_loss(outputs, target, task, edge_weight, eps, stage_weights)
    spec = _task(task)
    outs = [out.clamp(0, 1) for out in outputs] if spec.clamps_output else outputs
    if spec.loss == tasks.CHARBONNIER_EDGE:
        char = sum(charbonnier(out, target, eps) for out in outs)
        edge = sum(edge_loss(out, target, eps) for out in outs)
        return char + edge_weight * edge
    if spec.loss == tasks.CHARBONNIER:
        return sum(charbonnier(out, target, eps) for out in outs)
    return sum(F.mse_loss(out, target) for out in outs)


def _task(task: str) -> tasks.Task:
    """The row of `task` in the task table: its objective and whether it clamps outputs."""
    if task not in tasks.TASK_NAMES:
        raise ConfigError(f"unknown task {task!r} for the loss; use one of {', '.join(tasks.TASK_NAMES)}")
    return tasks.get_task(task)


# The stage weights of the Gaussian denoising recipe (Denoising/training_gaussian.yml), and of the
# first known-operator recipes, final first. Why: with equal
# weights the published loss asks as much of stage 1 as of the output, and the output (a conv head
# on x0) ended below earlier stages (0.6 dB below stage 6 in issue 18). Measured on a tiny known
# deblurring model (widths 16/8/8, 200 Adam steps, docs/known_tasks.md): equal weights and
# (1, 1/6 x 6) leave the output 0.05-0.1 dB below stage 3 from step 100 on; with (1, 0.02 x 6) the
# output is the best stage at every budget measured (25 to 200 steps) and 0.07 dB above the
# equal-weight output at 200. The small weights keep a deep-supervision signal on every stage.
KNOWN_STAGE_WEIGHTS = (1.0, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02)
# Non-blind deblurring and SR (Deblurring/training_nonblind.yml, Super_Resolution/training.yml) weigh
# the stages 4x less again. Their late stages come within a few hundredths of a dB of the output,
# and with 0.02 a stage stayed above it at some budget (deblurring at 3%, 408 steps, in every run on
# three CPUs; SR x3 and x4 at late budgets). Measured on the shipped recipes (3,264 steps, 8 budgets each,
# docs/known_tasks.md): with 0.005 the output leads the best stage at every budget (by at least
# +0.094 dB in deblurring, +0.055 in SR x4, +0.188 in SR x3). With 0 the stages stop being estimates
# (18-24 dB at 408 steps in deblurring, below their start), and the output does not gain.
LIGHT_STAGE_WEIGHTS = (1.0, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005)


def weighted_stage_loss(outputs: list[Tensor], target: Tensor, task: str, edge_weight: float, eps: float,
                        stage_weights: list[float]) -> Tensor:
    """sum_k w_k * (the task's published per-output term of output k), outputs final first."""
    if len(stage_weights) != len(outputs):
        raise ConfigError(f"LOSS.STAGE_WEIGHTS has {len(stage_weights)} weights for {len(outputs)} stage "
                          f"outputs; give one per output, final first")
    terms = [stage_loss([out], target, task, edge_weight, eps) for out in outputs]
    return sum(w * term for w, term in zip(stage_weights, terms, strict=True))
