"""The model and the input every benchmark path starts from (same weights, same image)."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgunet.models.keyed_init import keyed_state_dict
from dgunet.models.registry import build_model


def parse_size(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '1280x720' (width x height) -> (720, 1280) as (H, W)."""
    w, _, h = text.lower().partition("x")
    try:
        return (int(h or w), int(w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: use N or WIDTHxHEIGHT, e.g. 1280x720") from None


def clean_image(hw: tuple[int, int], channels: int) -> Tensor:
    """A natural photo (scikit-image's 'coffee') resized to (1,channels,H,W) in [0,1]; a
    deterministic synthetic scene when scikit-image is missing."""
    try:
        from skimage import data

        img = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float() / 255
    except ImportError:
        g = torch.Generator().manual_seed(0)
        img = F.interpolate(torch.rand(1, 3, 12, 18, generator=g), size=(400, 600), mode="bicubic")
    img = F.interpolate(img, size=hw, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return img.mean(1, keepdim=True) if channels == 1 else img


def degrade(clean: Tensor, task: str) -> Tensor:
    """The model input for `task`: blurred (deblurring, deraining), noisy (denoising) or clean (CS)."""
    if task == "cs":
        return clean
    if task == "denoising":
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        return (clean + noise * 15 / 255).clamp(0, 1)
    x = torch.arange(-4, 5, dtype=torch.float32)
    k = torch.exp(-x ** 2 / (2 * 1.6 ** 2))
    k2 = (k[:, None] * k[None, :] / k.sum() ** 2).expand(clean.shape[1], 1, 9, 9)
    return F.conv2d(F.pad(clean, (4, 4, 4, 4), mode="reflect"), k2, groups=clean.shape[1])


def load_model(args: argparse.Namespace) -> nn.Module:
    """The variant with --weights, or the key-named weights of the reference fixtures."""
    extra = {"cs_ratio": args.cs_ratio} if args.task == "cs" else {}
    model = build_model(args.task, args.arch, **extra)
    if args.weights:
        from dgunet.checkpoint import load_weights

        load_weights(model, args.weights)
    else:
        model.load_state_dict(keyed_state_dict(model))
    return model.eval().to(args.device)


def bench_input(args: argparse.Namespace, large: bool, batch: int | None = None) -> tuple[Tensor, Tensor]:
    """(input, clean) of shape (batch,C,H,W) on the bench device; batch defaults to --batch."""
    channels = 1 if args.task == "cs" else 3
    hw = args.large_size if large else args.size
    clean = clean_image(hw, channels).expand(batch or args.batch, -1, -1, -1).contiguous()
    return degrade(clean, args.task).to(args.device), clean.to(args.device)
