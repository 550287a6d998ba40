"""Gradual learning-rate warm-up for PyTorch optimizers, resumable from a state dict."""

from warmup_scheduler.scheduler import GradualWarmupScheduler

__all__ = ["GradualWarmupScheduler"]
