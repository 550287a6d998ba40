"""Run by torchrun (2 gloo processes) from test_preemption.py:
python _preemption_ddp_worker.py OUT TASK_DIR STOPS (STOPS: comma-separated step numbers).

Trains an uninterrupted run ("straight"), then the same run stopped by SIGTERM inside the given
steps and resumed each time ("cut"). Only rank 0 is signalled: rank 1 must follow it through
the per-step collective. Writes codes_rank{r}.pt: every launch's exit code on that rank.
"""

import sys
from pathlib import Path

import torch
from _preemption_helpers import preempt_config, run_with_sigterms

from dgunet.engine import train
from dgunet.engine.distributed import setup, teardown

# 16 samples, global batch 8 = 2 processes x 2 accumulation steps x micro-batch 2: 2 steps per epoch.
EXTRA = ["TRAIN.ACCUM_STEPS", "2"]


def main() -> None:
    out, task_dir, stops = Path(sys.argv[1]), Path(sys.argv[2]), {int(s) for s in sys.argv[3].split(",")}
    env = setup()
    assert env.world_size == 2, "run me with torchrun --nproc_per_node 2"
    train(preempt_config(task_dir, "straight", EXTRA, batch=8))
    if env.rank == 0:
        print("=== cut ===", flush=True)
    results = run_with_sigterms(lambda resume: preempt_config(task_dir, "cut", EXTRA, resume, batch=8),
                                stops if env.rank == 0 else set())
    torch.save([r.exit_code for r in results], out / f"codes_rank{env.rank}.pt")
    teardown(env)


if __name__ == "__main__":
    main()
