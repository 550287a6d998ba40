"""GradualWarmupScheduler: per-epoch lr of the published protocol, and exact resume."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from warmup_scheduler import GradualWarmupScheduler

WARMUP = 3
LR_MIN = 1e-6


def lr_for_epoch(epoch: int, lr: float, lr_min: float, warmup_epochs: int, t_max: int) -> float:
    """Closed form of PROTOCOLS.md for 1-based `epoch`."""
    if epoch <= warmup_epochs:
        return lr * epoch / warmup_epochs
    k = epoch - warmup_epochs - 1
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * k / t_max)) / 2


def make(lr: float, t_max: int, multiplier: float = 1.0):
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([param], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    cosine = CosineAnnealingLR(opt, T_max=t_max, eta_min=LR_MIN)
    sched = GradualWarmupScheduler(opt, multiplier, WARMUP, after_scheduler=cosine)
    return opt, sched


def train_epoch(opt: torch.optim.Optimizer) -> float:
    """One fake epoch: record the lr it trains with and take an optimizer step."""
    lr = opt.param_groups[0]["lr"]
    opt.zero_grad()
    opt.param_groups[0]["params"][0].sum().backward()
    opt.step()
    return lr


def run_epochs(opt, sched, first: int, last: int) -> dict[int, float]:
    lrs = {}
    for epoch in range(first, last + 1):
        lrs[epoch] = train_epoch(opt)
        sched.step()
    return lrs


@pytest.mark.parametrize(
    ("epochs", "lr", "t_max"),
    [(3000, 1e-4, 3000 - 3), (250, 2e-4, 250 - 3), (80, 1e-4, 80 - 3 + 40)],
    ids=["deblurring", "deraining", "denoising"],
)
def test_lr_sequence_matches_closed_form(epochs, lr, t_max):
    opt, sched = make(lr, t_max)
    sched.step()
    got = run_epochs(opt, sched, 1, epochs)
    checked = list(range(1, 21)) + [epochs // 3, epochs // 2, epochs - 1, epochs]
    for epoch in checked:
        want = lr_for_epoch(epoch, lr, LR_MIN, WARMUP, t_max)
        assert got[epoch] == pytest.approx(want, rel=1e-9, abs=1e-15), epoch
    # The first epochs spelled out, so a misunderstanding of the formula shows too.
    assert [got[e] for e in (1, 2, 3, 4)] == pytest.approx([lr / 3, 2 * lr / 3, lr, lr])
    assert got[5] < lr


def test_lr_is_zero_before_the_initial_step():
    opt, _ = make(1e-4, 100)
    assert opt.param_groups[0]["lr"] == 0.0


def test_multiplier_warms_up_from_base_to_peak():
    opt, sched = make(1e-4, 10, multiplier=4.0)
    sched.step()
    got = run_epochs(opt, sched, 1, 6)
    assert got[1] == pytest.approx(1e-4 * 2.0)  # (4-1)*1/3 + 1
    assert got[3] == pytest.approx(4e-4)
    assert got[4] == pytest.approx(4e-4)  # hand-over: cosine starts from the peak
    want5 = LR_MIN + (4e-4 - LR_MIN) * (1 + math.cos(math.pi / 10)) / 2
    assert got[5] == pytest.approx(want5, rel=1e-12)


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5, 7])
def test_resume_continues_the_same_sequence(split):
    lr, t_max = 2e-4, 12
    opt, sched = make(lr, t_max)
    sched.step()
    straight = run_epochs(opt, sched, 1, 10)

    opt, sched = make(lr, t_max)
    sched.step()
    first = run_epochs(opt, sched, 1, split)
    saved = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}

    opt2, sched2 = make(lr, t_max)
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    rest = run_epochs(opt2, sched2, split + 1, 10)
    resumed = {**first, **rest}
    for epoch in range(1, 11):
        assert resumed[epoch] == pytest.approx(straight[epoch], rel=0, abs=1e-12), epoch


def test_resume_without_optimizer_state_is_still_exact():
    opt, sched = make(1e-4, 20)
    sched.step()
    straight = run_epochs(opt, sched, 1, 9)
    opt, sched = make(1e-4, 20)
    sched.step()
    run_epochs(opt, sched, 1, 5)
    state = sched.state_dict()
    opt2, sched2 = make(1e-4, 20)
    sched2.load_state_dict(state)
    rest = run_epochs(opt2, sched2, 6, 9)
    assert [rest[e] for e in range(6, 10)] == pytest.approx(
        [straight[e] for e in range(6, 10)], rel=0, abs=1e-15
    )


def test_state_dict_holds_no_live_objects():
    _, sched = make(1e-4, 20)
    state = sched.state_dict()
    assert "optimizer" not in state
    assert isinstance(state["after_scheduler"], dict)
    assert "optimizer" not in state["after_scheduler"]


def test_other_wrapped_scheduler_and_no_successor():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    steps = MultiStepLR(opt, milestones=[2], gamma=0.1)
    sched = GradualWarmupScheduler(opt, 1, 2, after_scheduler=steps)
    sched.step()
    assert run_epochs(opt, sched, 1, 6) == pytest.approx({1: 0.5, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.1, 6: 0.1})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    alone = GradualWarmupScheduler(opt, 2, 2)
    alone.step()
    assert run_epochs(opt, alone, 1, 4) == pytest.approx({1: 1.5, 2: 2.0, 3: 2.0, 4: 2.0})


def test_published_usage_emits_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt, sched = make(1e-4, 20)
        sched.step()  # before any optimizer.step(): the published order
        run_epochs(opt, sched, 1, 6)


def test_bad_arguments_are_rejected():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="multiplier"):
        GradualWarmupScheduler(opt, 0.5, 3)
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="same optimizer"):
        GradualWarmupScheduler(opt, 1, 3, after_scheduler=CosineAnnealingLR(other, 5))
    sched = GradualWarmupScheduler(opt, 1, 3)
    with pytest.raises(ValueError, match="load_state_dict"):
        sched.step(5)
