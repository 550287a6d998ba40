"""Linear learning-rate warm-up that hands over to another scheduler.

Epoch bookkeeping (multiplier 1, total_epoch 3, stepped once before training and
once after every epoch, as the DGUNet training scripts do):

    construction        last_epoch 0  lr 0
    step() before e=1   last_epoch 1  lr base/3      (epoch 1)
    step() after e=1    last_epoch 2  lr 2*base/3    (epoch 2)
    step() after e=2    last_epoch 3  lr base        (epoch 3)
    step() after e=3    last_epoch 4  lr base*mult   (epoch 4: hand-over, wrapped scheduler at 0)
    step() after e=4    the wrapped scheduler steps to its epoch 1  (epoch 5), and so on.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau


class GradualWarmupScheduler(LRScheduler):
    """Raise the lr linearly over `total_epoch` steps, then defer to `after_scheduler`.

    Args:
        optimizer: the optimizer whose param groups are driven.
        multiplier: target lr = base lr * multiplier. With 1 the warm-up starts at 0;
            with m > 1 it starts at the base lr and ends at base * m.
        total_epoch: number of warm-up steps.
        after_scheduler: optional scheduler (on the same optimizer) that takes over
            once the warm-up is done. It is stepped through its own `step()`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        multiplier: float,
        total_epoch: int,
        after_scheduler: LRScheduler | ReduceLROnPlateau | None = None,
    ) -> None:
        if multiplier < 1.0:
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        if total_epoch < 1:
            raise ValueError(f"total_epoch must be >= 1, got {total_epoch}")
        if after_scheduler is not None and after_scheduler.optimizer is not optimizer:
            raise ValueError("after_scheduler must drive the same optimizer as the warm-up")
        self.multiplier = float(multiplier)
        self.total_epoch = int(total_epoch)
        self.after_scheduler = after_scheduler
        self.finished = False
        super().__init__(optimizer)

    def _warmup_lrs(self) -> list[float]:
        """Learning rates for the current `last_epoch` while warming up (or without a successor)."""
        fraction = min(self.last_epoch, self.total_epoch) / self.total_epoch
        if self.multiplier == 1.0:
            return [base * fraction for base in self.base_lrs]
        return [base * ((self.multiplier - 1.0) * fraction + 1.0) for base in self.base_lrs]

    def get_lr(self) -> list[float]:
        """Learning rates for the current `last_epoch` (does not change any state)."""
        if self.finished:
            return list(self.after_scheduler.get_last_lr())
        return self._warmup_lrs()

    def _hand_over(self) -> list[float]:
        """Give the wrapped scheduler the peak lr as its base and as its current lr.

        Modern PyTorch schedulers are recursive (they scale the param group's current
        lr), so the peak lr written into the optimizer below is what they continue from.
        """
        peak = [base * self.multiplier for base in self.base_lrs]
        after = self.after_scheduler
        if hasattr(after, "base_lrs"):
            after.base_lrs = list(peak)
        after._last_lr = list(peak)
        self.finished = True
        return peak

    def step(self, epoch: int | None = None, metrics: float | None = None) -> None:
        """Advance one epoch. `metrics` is needed only when wrapping ReduceLROnPlateau.

        We do not call `LRScheduler.step`: its "step() before optimizer.step()" warning
        fires on the published usage (one step before the first epoch) and is noise here.
        """
        if epoch is not None:
            raise ValueError(
                "GradualWarmupScheduler.step() takes no epoch; to resume, use "
                "load_state_dict() with the state saved in the checkpoint"
            )
        self._step_count += 1
        self.last_epoch += 1
        if self.finished:
            self._step_after(metrics)
            lrs = list(self.after_scheduler.get_last_lr())
        elif self.after_scheduler is not None and self.last_epoch > self.total_epoch:
            lrs = self._hand_over()
        else:
            lrs = self._warmup_lrs()
        self._apply(lrs)

    def _step_after(self, metrics: float | None) -> None:
        if isinstance(self.after_scheduler, ReduceLROnPlateau):
            if metrics is None:
                raise ValueError("step(metrics=...) is required after the warm-up of a plateau")
            self.after_scheduler.step(metrics)
        else:
            self.after_scheduler.step()

    def _apply(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer; the wrapped scheduler is stored as its own state."""
        state = {
            key: value for key, value in self.__dict__.items() if key not in ("optimizer", "after_scheduler")
        }
        after = self.after_scheduler
        state["after_scheduler"] = None if after is None else after.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore this scheduler and the wrapped one, and put the last lr back in the optimizer.

        Writing the lr back makes a resume exact even when the optimizer state was
        not loaded, because the wrapped scheduler continues from the group's lr.
        """
        state = dict(state_dict)
        after_state = state.pop("after_scheduler", None)
        if (after_state is None) != (self.after_scheduler is None):
            raise ValueError(
                "saved state and this scheduler disagree on having an after_scheduler; "
                "re-create the scheduler the way it was when the state was saved"
            )
        self.__dict__.update(state)
        if after_state is not None:
            self.after_scheduler.load_state_dict(after_state)
        self._apply(list(self._last_lr))
