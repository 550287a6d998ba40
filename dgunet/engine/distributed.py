"""Process-group setup under torchrun, the batch arithmetic, and the sampler that shards batches.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them we run as
one process. The configured batch is the *global* batch: every optimizer step sees exactly
BATCH_SIZE samples however they are spread over processes (world) and accumulation steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from dgunet.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this host (torchrun's LOCAL_WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(env: DistEnv) -> torch.device:
    """The training device of this rank: its own GPU when CUDA is visible, else the CPU.

    One GPU per local rank. More ranks on this host than visible GPUs is a ConfigError on every
    rank (NCCL would fail later with "Duplicate GPU detected", or two ranks would share a card).
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    gpus = torch.cuda.device_count()
    if env.local_world_size > gpus or env.local_rank >= gpus:
        raise ConfigError(
            f"{env.local_world_size} training processes on this host but {gpus} visible CUDA GPU(s): "
            f"launch torchrun --nproc_per_node {gpus} (or fewer), or hide the GPUs (CUDA_VISIBLE_DEVICES=) "
            f"to train on the CPU")
    torch.cuda.set_device(env.local_rank)
    return torch.device("cuda", env.local_rank)


def backend_for(device: torch.device) -> str:
    """The process-group backend for a model trained on `device`.

    NCCL has no CPU tensors, so a CUDA run gets gloo for its CPU tensors and NCCL for its CUDA
    ones (torch.distributed dispatches each collective by the tensor's device); a CPU run gets gloo.
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def env_from_torchrun() -> DistEnv:
    """This process's place in the job from torchrun's variables (one process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world, local_world)


def setup() -> DistEnv:
    """Join the process group torchrun describes, its backend following the training device of
    `pick_device` (which also selects the rank's GPU before NCCL's first collective); no-op alone."""
    env = env_from_torchrun()
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(backend=backend_for(pick_device(env)))
    return env


def set_cudnn(benchmark: bool) -> None:
    """cuDNN autotuning on (published, fastest) or off with deterministic kernels.

    Without autotuning cuDNN may still pick kernels that sum in a varying order (atomics in the
    backward of some convolutions); `deterministic` excludes them, so two runs on the same card
    and software give the same bits (a resume equals an uninterrupted run).
    """
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = not benchmark


def teardown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flags: list[bool], env: DistEnv, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks (so that every rank takes the same branch)."""
    if not env.enabled:
        return flags
    tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(x) for x in tensor.tolist()]


def sum_over_ranks(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    if not env.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_to_all(tensor: torch.Tensor, env: DistEnv) -> list[torch.Tensor]:
    """Every rank's `tensor` (same shape and dtype on all ranks), in rank order, on every rank."""
    if not env.enabled:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(env.world_size)]
    dist.all_gather(parts, tensor)
    return parts


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


@dataclass(frozen=True)
class BatchPlan:
    """How one global batch is cut: world_size processes x accum_steps micro-batches x micro."""

    batch: int
    accum_steps: int
    world_size: int

    @property
    def micro(self) -> int:
        return self.batch // (self.accum_steps * self.world_size)

    @property
    def per_rank(self) -> int:
        return self.micro * self.accum_steps

    def describe(self) -> str:
        return (f"effective batch {self.batch} = world size {self.world_size} x accumulation "
                f"{self.accum_steps} x micro-batch {self.micro}")


def batch_plan(batch: int, accum_steps: int, world_size: int) -> BatchPlan:
    """The micro-batch that keeps the global batch; ConfigError with the arithmetic otherwise."""
    parts = accum_steps * world_size
    if batch % parts:
        fits = [a for a in range(1, batch + 1) if batch % (a * world_size) == 0]
        hint = (f"with {world_size} process(es), TRAIN.ACCUM_STEPS can be one of {fits}"
                if fits else f"no accumulation fits {world_size} processes; use a world size dividing {batch}")
        raise ConfigError(
            f"OPTIM.BATCH_SIZE {batch} cannot be split into world size {world_size} x TRAIN.ACCUM_STEPS "
            f"{accum_steps} = {parts} equal micro-batches: {batch} / {parts} = {batch / parts:g}. "
            f"Refusing rather than changing the effective batch; {hint}.")
    return BatchPlan(batch, accum_steps, world_size)


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of indices, `accum_steps` of them per optimizer step.

    Each epoch draws one permutation from (seed, epoch) and cuts it into global batches; rank r
    takes the r-th contiguous share of every global batch and splits it into micro-batches. So
    the samples of optimizer step s are the same for any world size and accumulation, and
    a run is a function of (seed, epoch) only: an interrupted epoch re-runs identically, and a
    resume from a mid-epoch snapshot skips the steps already taken (`set_epoch(e, start_step)`:
    their indices are never handed to the loader, so no image of theirs is read). The incomplete
    last global batch is dropped (the published loader kept it, at a smaller
    effective batch; dropping keeps every step at BATCH_SIZE samples).
    """

    def __init__(self, num_samples: int, plan: BatchPlan, rank: int, seed: int) -> None:
        self.num_samples, self.plan, self.rank, self.seed = num_samples, plan, rank, seed
        self.epoch, self.start_step = 1, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch `epoch` from optimizer step `start_step` (0-based) on."""
        if not 0 <= start_step <= self.steps:
            raise ConfigError(f"start step {start_step} outside 0..{self.steps}")
        self.epoch, self.start_step = int(epoch), int(start_step)

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        return self.num_samples // self.plan.batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.plan.accum_steps

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        batch, share, micro = self.plan.batch, self.plan.per_rank, self.plan.micro
        for step in range(self.start_step, self.steps):
            mine = order[step * batch + self.rank * share:step * batch + (self.rank + 1) * share]
            for a in range(self.plan.accum_steps):
                yield mine[a * micro:(a + 1) * micro].tolist()
