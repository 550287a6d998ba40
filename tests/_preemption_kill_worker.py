"""python _preemption_kill_worker.py TASK_DIR N: trains like test_preemption's SIGKILL test, but its
N-th snapshot write stops half-way (half of the bytes in the temporary file) and prints
HALF-WRITTEN, then waits to be killed: a SIGKILL in the middle of an atomic write."""

import sys
import time
from pathlib import Path

import torch
from _preemption_helpers import preempt_config

from dgunet.atomic import atomic_open
from dgunet.engine import train
from dgunet.engine import trainer as trainer_module
from dgunet.engine.snapshots import SNAPSHOT

KILL_OPTS = ["TRAIN.SNAPSHOT_EVERY_STEPS", "2"]


def main() -> None:
    task_dir, stall_at = Path(sys.argv[1]), int(sys.argv[2])
    real_save, writes = trainer_module.save_atomic, [0]

    def stalling_save(obj, path):
        if Path(path).name == SNAPSHOT:
            writes[0] += 1
            if writes[0] == stall_at:
                with atomic_open(path) as f:
                    torch.save(obj, f)
                    f.truncate(f.tell() // 2)
                    f.flush()
                    print("HALF-WRITTEN", flush=True)
                    time.sleep(120)
        return real_save(obj, path)

    trainer_module.save_atomic = stalling_save
    train(preempt_config(task_dir, "run", KILL_OPTS, epochs=2))


if __name__ == "__main__":
    main()
