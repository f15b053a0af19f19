"""Warmup + cosine schedule: boundary values, shape, argument checks, the torch scheduler."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scratchformer.training.schedule import WarmupCosineLR, warmup_cosine


def lr(step: int, max_lr: float = 1.0, min_lr: float = 0.1, warmup: int = 4,
       total: int = 20) -> float:
    return warmup_cosine(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup,
                         total_steps=total)


def test_boundary_values() -> None:
    assert lr(0) == pytest.approx(1.0 / 5)  # the first update already moves
    assert lr(3) == pytest.approx(4.0 / 5)  # last warmup step
    assert lr(4) == 1.0  # end of warmup: the peak, exactly
    assert lr(4 + 8) == pytest.approx(0.55)  # half-way through the decay: the mean
    assert lr(20) == pytest.approx(0.1)  # end: the floor
    assert lr(21) == lr(10_000) == 0.1  # and it stays there


def test_no_warmup_starts_at_peak_and_constant_when_floor_is_peak() -> None:
    assert lr(0, warmup=0) == 1.0
    assert [lr(s, min_lr=1.0, warmup=0) for s in range(25)] == [1.0] * 25


@given(
    max_lr=st.floats(1e-6, 10.0),
    ratio=st.floats(0.0, 1.0),
    warmup=st.integers(0, 50),
    decay=st.integers(1, 200),
)
def test_rises_then_never_rises_and_stays_in_range(
    max_lr: float, ratio: float, warmup: int, decay: int
) -> None:
    min_lr, total = max_lr * ratio, warmup + decay
    lrs = [lr(s, max_lr, min_lr, warmup, total) for s in range(total + 3)]
    rise, fall = lrs[: warmup + 1], lrs[warmup:]
    assert all(a < b for a, b in itertools.pairwise(rise))
    assert all(a >= b for a, b in itertools.pairwise(fall))
    assert max(lrs) == lrs[warmup] == max_lr
    assert all(x > 0 for x in rise)
    assert all(min_lr - 1e-12 * max_lr <= x <= max_lr for x in fall)
    assert math.isclose(lrs[total], min_lr, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"step": -1}, ValueError, "step"),
        ({"step": 1.5}, TypeError, "step"),
        ({"step": True}, TypeError, "step"),
        ({"max_lr": 0.0}, ValueError, "max_lr"),
        ({"max_lr": float("nan")}, ValueError, "max_lr"),
        ({"min_lr": -0.1}, ValueError, "min_lr"),
        ({"min_lr": 2.0}, ValueError, "min_lr"),
        ({"warmup_steps": -1}, ValueError, "warmup_steps"),
        ({"warmup_steps": 2.0}, TypeError, "warmup_steps"),
        ({"total_steps": 4}, ValueError, "total_steps"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, error: type, needle: str) -> None:
    args = {"step": 0, "max_lr": 1.0, "min_lr": 0.1, "warmup_steps": 4, "total_steps": 20}
    args.update(kwargs)
    step = args.pop("step")
    with pytest.raises(error, match=needle):
        warmup_cosine(step, **args)


def test_torch_scheduler_follows_the_function_and_resumes() -> None:
    def make() -> tuple[torch.optim.Optimizer, WarmupCosineLR]:
        opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=123.0)
        return opt, WarmupCosineLR(opt, max_lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=20)

    opt, sched = make()
    seen = []
    for _ in range(24):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [lr(s) for s in range(24)]

    opt, sched = make()
    for _ in range(7):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    sched2.load_state_dict(sched.state_dict())
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == lr(8)
