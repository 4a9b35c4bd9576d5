"""Learning-rate schedules with warmup, as transformers' get_linear_schedule_with_warmup,
get_cosine_schedule_with_warmup and get_cosine_with_min_lr_schedule_with_warmup compute them.

Each returns ``lr(step)``: the learning rate of the optimizer step that follows ``step`` completed steps
(``lr(0)`` is the first step's, as torch's LambdaLR sets it before the first ``scheduler.step()``), i.e.
``base_lr * factor(step)`` with transformers' factor, in the same float operations.

    schedule = cosine_schedule_with_warmup(2e-3, num_warmup_steps=100, num_training_steps=1000)
    for step in range(1000):
        optimizer.lr = schedule(step)
        ...
"""

from __future__ import annotations

import math
from typing import Callable


def _warmup(step: int, num_warmup_steps: int) -> float:
    """The warmup factor ``step / warmup`` (from 0 at step 0)."""
    return float(step) / float(max(1, num_warmup_steps))


def _progress(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """How far past the warmup ``step`` is, as a fraction of the steps after the warmup."""
    return float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))


def _check(base_lr, num_warmup_steps, num_training_steps) -> None:
    if base_lr < 0 or num_warmup_steps < 0 or num_training_steps < 0:
        raise ValueError(f"a schedule needs base_lr >= 0 and step counts >= 0; got base_lr={base_lr}, "
                         f"num_warmup_steps={num_warmup_steps}, num_training_steps={num_training_steps}.")


def linear_schedule_with_warmup(base_lr: float, num_warmup_steps: int,
                                num_training_steps: int) -> Callable[[int], float]:
    """Linear warmup from 0 to ``base_lr`` over ``num_warmup_steps``, then linear decay to 0 at
    ``num_training_steps`` (and 0 after)."""
    _check(base_lr, num_warmup_steps, num_training_steps)

    def lr(step: int) -> float:
        if step < num_warmup_steps:
            return base_lr * _warmup(step, num_warmup_steps)
        decay_steps = float(max(1, num_training_steps - num_warmup_steps))
        return base_lr * max(0.0, float(num_training_steps - step) / decay_steps)

    return lr


def cosine_schedule_with_warmup(base_lr: float, num_warmup_steps: int, num_training_steps: int,
                                num_cycles: float = 0.5) -> Callable[[int], float]:
    """Linear warmup, then ``base_lr * (1 + cos(2 pi num_cycles progress)) / 2`` (half a cosine down to 0 by
    default)."""
    return cosine_with_min_lr_schedule_with_warmup(base_lr, num_warmup_steps, num_training_steps, num_cycles, 0.0)


def cosine_with_min_lr_schedule_with_warmup(base_lr: float, num_warmup_steps: int, num_training_steps: int,
                                            num_cycles: float = 0.5,
                                            min_lr_rate: float = 0.0) -> Callable[[int], float]:
    """As cosine_schedule_with_warmup, but the cosine ends at ``min_lr_rate * base_lr`` instead of 0
    (transformers' ``min_lr_rate``; ``min_lr`` is ``min_lr_rate = min_lr / base_lr``)."""
    _check(base_lr, num_warmup_steps, num_training_steps)

    def lr(step: int) -> float:
        if step < num_warmup_steps:
            return base_lr * _warmup(step, num_warmup_steps)
        progress = _progress(step, num_warmup_steps, num_training_steps)
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        return base_lr * max(0, factor * (1 - min_lr_rate) + min_lr_rate)

    return lr
