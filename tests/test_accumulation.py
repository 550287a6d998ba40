"""Gradient accumulation (issue 7): the same optimizer step however the batch is cut, the same
per-epoch lr, and a refusal (with the arithmetic) of cuts that cannot give the configured batch.

Why the equivalence is exact up to float rounding: every layer of DGUNet is per-sample (instance
norm, channel attention, the merge block's per-image subspace), and every loss is a mean over
elements of equally-sized samples. So the mean loss of a batch of 8 is the average of the mean
losses of its micro-batches; each micro-batch loss is divided by ACCUM_STEPS and DDP averages
over ranks, which gives that average. MixUp (denoising) is left out: it mixes within a micro-batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from _engine_helpers import (
    ddp_results,
    fixed_batch,
    make_task_data,
    metrics,
    one_step,
    step_config,
    task_config,
)

from dgunet.engine import steps as steps_module
from dgunet.engine import train
from dgunet.engine.distributed import BatchPlan, DistEnv, GlobalBatchSampler, batch_plan
from dgunet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def micro_batches(parts: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    inputs, targets = fixed_batch(8)
    size = 8 // parts
    return [(inputs[i:i + size], targets[i:i + size]) for i in range(0, 8, size)]


def assert_same_weights(got: dict, want: dict) -> None:
    for name, weight in want["weights"].items():
        torch.testing.assert_close(got["weights"][name], weight, rtol=1e-5, atol=1e-8,
                                   msg=lambda m, name=name: f"{name}: {m}")


def assert_same_step(got: dict, want: dict) -> None:
    """Same loss, same (all-reduced) gradients, same weights after the step, to float rounding."""
    assert got["status"] == want["status"] == "ok"
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    scale = max(float(g.abs().max()) for g in want["grads"].values())
    assert got["grads"].keys() == want["grads"].keys()
    for name, grad in want["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert_same_weights(got, want)


@pytest.fixture(scope="module")
def one_by_eight():
    return one_step(step_config(accum=1), DistEnv(), micro_batches(1))


def test_accumulation_gives_the_step_of_the_whole_batch(one_by_eight):
    assert_same_step(one_step(step_config(accum=2), DistEnv(), micro_batches(2)), one_by_eight)
    assert_same_step(one_step(step_config(accum=8), DistEnv(), micro_batches(8)), one_by_eight)


def test_a_wrong_loss_scale_would_be_caught(one_by_eight, monkeypatch):
    """Guard for the test itself: summing the 2 micro-batch losses instead of averaging them
    must change the weights too, not only the gradients (hence Adam's eps 1 in step_config)."""
    real = steps_module.compute_loss
    monkeypatch.setattr(steps_module, "compute_loss", lambda out, tgt, cfg: 2 * real(out, tgt, cfg))
    summed = one_step(step_config(accum=2), DistEnv(), micro_batches(2))
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        assert_same_weights(summed, one_by_eight)


@pytest.mark.slow
def test_1x8_2x4_accumulation_and_2_processes_x_4_give_the_same_weights(tmp_path_factory, one_by_eight):
    """Issue 7's acceptance: batch 8 as 1x8, 2x4 (accumulation), 2 gloo processes x 4, and also
    2 processes x 2 accumulation steps x 2 (DDP's no_sync on the first micro-batch)."""
    out = ddp_results(tmp_path_factory.getbasetemp())
    assert_same_step(one_step(step_config(accum=2), DistEnv(), micro_batches(2)), one_by_eight)
    for name in ("step_2x4", "step_2x2x2"):
        for rank in (0, 1):
            saved = torch.load(out / f"{name}_rank{rank}.pt", map_location="cpu", weights_only=True)
            assert_same_step(saved, one_by_eight)


def test_accumulation_logs_the_same_learning_rates(tmp_path):
    """The published deraining recipe (250 epochs) cut after 5 epochs, with 2 accumulation steps."""
    make_task_data(tmp_path, "deraining", n_train=2, n_val=1, size=24)
    cfg = task_config("deraining", tmp_path, ["TRAIN.STOP_AT_EPOCH", "5"], epochs=None,
                      args=["--accum-steps", "2"])
    assert (cfg.OPTIM.NUM_EPOCHS, cfg.TRAIN.ACCUM_STEPS) == (250, 2)
    result = train(cfg)
    lrs = [r["lr"] for r in metrics(result.out_dir)]
    t_max = 250 - 3
    want = [2e-4 / 3, 4e-4 / 3, 2e-4, 2e-4, 1e-6 + (2e-4 - 1e-6) * (1 + math.cos(math.pi / t_max)) / 2]
    assert lrs == pytest.approx(want, rel=1e-12)


def test_a_batch_that_does_not_split_is_refused_with_the_arithmetic(tmp_path):
    with pytest.raises(ConfigError, match=r"16 / 3 = 5.33333"):
        task_config("deraining", tmp_path, ["OPTIM.BATCH_SIZE", "16", "TRAIN.ACCUM_STEPS", "3"])
    with pytest.raises(ConfigError, match=r"world size 3 x TRAIN.ACCUM_STEPS 2 = 6 .* 16 / 6 = 2.66667"):
        batch_plan(16, 2, 3)
    with pytest.raises(ConfigError, match=r"ACCUM_STEPS can be one of \[1, 2, 4, 8\]"):
        batch_plan(16, 3, 2)
    plan = batch_plan(16, 2, 4)
    assert (plan.micro, plan.per_rank) == (2, 4)
    assert plan.describe() == "effective batch 16 = world size 4 x accumulation 2 x micro-batch 2"


@pytest.mark.parametrize(("world", "accum"), [(1, 4), (2, 2), (4, 1)])
def test_every_cut_of_the_batch_sees_the_same_samples(world, accum):
    """Optimizer step s gets the same 8 samples for any world size and accumulation."""
    def steps(world: int, accum: int, epoch: int) -> list[list[int]]:
        plan = BatchPlan(8, accum, world)
        per_rank = []
        for rank in range(world):
            sampler = GlobalBatchSampler(27, plan, rank, seed=1234)
            sampler.set_epoch(epoch)
            micro = list(sampler)
            assert len(micro) == len(sampler) == 3 * accum and all(len(m) == plan.micro for m in micro)
            per_rank.append([sum(micro[s * accum:(s + 1) * accum], []) for s in range(3)])
        return [sorted(sum((r[s] for r in per_rank), [])) for s in range(3)]

    assert steps(world, accum, epoch=3) == steps(1, 1, epoch=3)
    assert steps(1, 1, epoch=3) != steps(1, 1, epoch=4)
    assert len(set(sum(steps(1, 1, epoch=3), []))) == 24  # 27 samples: the partial 4th batch is dropped
