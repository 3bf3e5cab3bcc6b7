"""The learning-rate schedule: its length as Lightning counts the steps, and its shape (warm-up, decay to 0)."""

from __future__ import annotations

import itertools

import pytest
import torch

from hybrid_retrieval.tasks.text.model import linear_warmup_decay, planned_steps


@pytest.mark.parametrize(
    ("per_epoch", "limit", "max_epochs", "max_steps", "expected"),
    [
        (30, None, 1, -1, 30),  # one epoch
        (30, None, 3, -1, 90),
        (30, None, 3, 50, 50),  # max_steps ends it first
        (30, None, 1, 100, 30),  # the epoch ends it first
        (30, None, -1, 100, 100),  # no epoch limit: the steps alone (the bug: 30, then lr 0 for 70 steps)
        (30, None, None, 100, 100),
        (30, 0.5, 2, -1, 30),  # a fraction of the batches per epoch (the bug: ignored, 60)
        (30, 1.0, 2, -1, 60),
        (30, 10, 2, -1, 20),  # an int caps them
        (30, None, None, -1, 30_000),  # neither set: Lightning's 1000 epochs
    ],
)
def test_planned_steps_count_like_lightning(per_epoch, limit, max_epochs, max_steps, expected):
    assert planned_steps(per_epoch, limit, max_epochs, max_steps) == expected


def test_an_endless_fit_has_no_schedule_length():
    with pytest.raises(ValueError, match="max_steps"):
        planned_steps(30, None, -1, -1)


def test_warmup_then_linear_decay_reaches_zero_exactly_at_the_end():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    total, warmup = planned_steps(30, None, -1, 40), 4
    sched = linear_warmup_decay(opt, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and all(a > b for a, b in itertools.pairwise(lrs[4:]))  # strictly decaying
    assert lrs[-1] == pytest.approx(1 / 36) and opt.param_groups[0]["lr"] == 0.0  # > 0 on every step taken
