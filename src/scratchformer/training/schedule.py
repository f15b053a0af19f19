r"""Learning-rate schedule: linear warmup, then half a cosine down to a floor.

For 0-based update index $s$, warmup length $W$ and total length $T > W$:

$$
\eta(s) = \begin{cases}
\eta_{\max}\,\dfrac{s + 1}{W + 1} & 0 \le s < W \\[4pt]
\eta_{\min} + \tfrac12(\eta_{\max} - \eta_{\min})
  \bigl(1 + \cos\bigl(\pi\,\tfrac{s - W}{T - W}\bigr)\bigr) & W \le s \le T \\[4pt]
\eta_{\min} & s > T
\end{cases}
$$

The warmup line and the cosine meet at $s = W$ with $\eta = \eta_{\max}$, so the schedule rises
strictly during warmup, peaks exactly once, and never increases afterwards. The first update
already moves ($\eta(0) = \eta_{\max}/(W+1) > 0$), and $\eta(T) = \eta_{\min}$. Set
``min_lr = max_lr`` for a constant rate after warmup.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from scratchformer.validation import check_int, check_real


def check_schedule(*, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> None:
    """Raise ValueError/TypeError naming the argument unless the schedule is well defined."""
    max_lr = check_real("max_lr", max_lr, minimum=0, min_inclusive=False)
    min_lr = check_real("min_lr", min_lr, minimum=0)
    if min_lr > max_lr:
        raise ValueError(f"min_lr must be <= max_lr={max_lr}, got {min_lr}")
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    total_steps = check_int("total_steps", total_steps, minimum=None)
    if total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps must be > warmup_steps={warmup_steps}, got {total_steps}"
        )


def warmup_cosine(
    step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """Learning rate of 0-based update ``step``: linear warmup to max_lr, cosine decay to min_lr."""
    check_schedule(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps,
                   total_steps=total_steps)
    step = check_int("step", step, minimum=0)
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step == warmup_steps:
        return float(max_lr)  # the peak, exactly (the formula below may round it)
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    cosine = min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    return min(cosine, float(max_lr))  # min + (max - min) can round one ulp above max


class WarmupCosineLR(LRScheduler):
    """`warmup_cosine` as a torch scheduler: every group gets the same rate; call ``step()``
    after each ``optimizer.step()``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_lr: float,
        min_lr: float,
        warmup_steps: int,
        total_steps: int,
        last_epoch: int = -1,
    ) -> None:
        check_schedule(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps,
                       total_steps=total_steps)
        self.max_lr, self.min_lr = max_lr, min_lr
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The rate for update number ``last_epoch`` (0 right after construction)."""
        lr = warmup_cosine(self.last_epoch, max_lr=self.max_lr, min_lr=self.min_lr,
                           warmup_steps=self.warmup_steps, total_steps=self.total_steps)
        return [lr for _ in self.optimizer.param_groups]
