"""DistributedDataParallel on CPU: two gloo processes launched by torchrun (python -m
torch.distributed.run) running tests/_engine_ddp_worker.py, i.e. the engine's torchrun path.
"""

from __future__ import annotations

import pytest
import torch
from _engine_helpers import DDP_TRAIN_OPTS, ddp_results, fixed_batch, one_step, step_config, task_config

from dgunet.engine import train
from dgunet.engine.distributed import DistEnv, batch_plan
from dgunet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # one torchrun launch (~10-20 s on 2 cores), shared with test_accumulation
def test_both_ranks_end_with_identical_weights_equal_to_one_process(tmp_path_factory):
    out = ddp_results(tmp_path_factory.getbasetemp())
    log = (out / "log.txt").read_text()
    # CPU models get gloo (the children see no GPU even on a GPU machine: tests/conftest.py).
    assert "rank 0: backend gloo" in log and "rank 1: backend gloo" in log
    assert "world size 2" in log and "effective batch 4 = world size 2 x accumulation 1 x micro-batch 2" in log
    rank0, rank1 = (torch.load(out / f"train_rank{r}.pt", map_location="cpu", weights_only=True)
                    for r in (0, 1))
    assert rank0["epoch"] == rank1["epoch"] == 2
    for key, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][key]), key

    # The same run in one process (batch 4 unsplit) reaches the same weights: the sampler gives
    # every optimizer step the same samples, and augmentation depends on (seed, epoch, index).
    opts = [*DDP_TRAIN_OPTS, "OUTPUT.NAME", "one"]
    single = train(task_config("deraining", out.parent / "ddp_task", opts, epochs=2, batch=4))
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.slow
def test_one_step_split_over_two_ranks_equals_one_process(tmp_path_factory):
    out = ddp_results(tmp_path_factory.getbasetemp())
    inputs, targets = fixed_batch(8)
    want = one_step(step_config(accum=1), DistEnv(), [(inputs, targets)])
    for rank in (0, 1):
        got = torch.load(out / f"step_2x4_rank{rank}.pt", map_location="cpu", weights_only=True)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)  # all-reduced mean over ranks
        scale = max(float(g.abs().max()) for g in want["grads"].values())
        for name, grad in want["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-5 * scale)
        for name, weight in want["weights"].items():
            torch.testing.assert_close(got["weights"][name], weight, rtol=1e-5, atol=1e-8)


def test_world_size_that_cannot_keep_the_batch_is_refused():
    with pytest.raises(ConfigError, match=r"OPTIM.BATCH_SIZE 16 cannot be split into world size 3"):
        batch_plan(16, 1, 3)
