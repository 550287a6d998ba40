"""Run by torchrun (2 processes, gloo) from the DDP tests: python _engine_ddp_worker.py OUT TASK_DIR.

Writes, per rank r:
  step_2x4_rank{r}.pt     one optimizer step, the fixed batch of 8 split 4 + 4 over the ranks;
  step_2x2x2_rank{r}.pt   the same with 2 accumulation steps of 2 samples on each rank (no_sync);
  train_rank{r}.pt        the final weights of a 2-epoch deraining run through train.py's code path.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _engine_helpers import DDP_TRAIN_OPTS, fixed_batch, one_step, step_config, task_config

from dgunet.engine import train
from dgunet.engine.distributed import setup, teardown


def main() -> None:
    out, task_dir = Path(sys.argv[1]), Path(sys.argv[2])
    env = setup()
    assert env.world_size == 2, "run me with torchrun --nproc_per_node 2"
    r = env.rank
    print(f"rank {r}: backend {dist.get_backend()}", flush=True)  # follows the training device
    inputs, targets = fixed_batch(8)
    mine = (inputs[4 * r:4 * r + 4], targets[4 * r:4 * r + 4])

    torch.save(one_step(step_config(accum=1), env, [mine]), out / f"step_2x4_rank{r}.pt")
    halves = [(mine[0][:2], mine[1][:2]), (mine[0][2:], mine[1][2:])]
    torch.save(one_step(step_config(accum=2), env, halves), out / f"step_2x2x2_rank{r}.pt")

    cfg = task_config("deraining", task_dir, DDP_TRAIN_OPTS, epochs=2, batch=4)
    result = train(cfg)
    torch.save({"weights": result.model.state_dict(), "epoch": result.last_epoch}, out / f"train_rank{r}.pt")
    teardown(env)


if __name__ == "__main__":
    main()
