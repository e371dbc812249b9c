"""The warm-up's adaptive stop (``warmup.stop=plateau``): the rule on the probe's curve, and the schedule it ends.

The rule (``plateau_decision``) reads the probe accuracies in the order they were taken, the first at step 0:

- the transition is the first probe at least ``rise`` points above the step-0 probe;
- the stop is the first probe, at least ``patience`` probes after the transition, at which the best of the
  last ``patience`` probes is less than ``min_gain`` points above the best of all probes before them.

It never fires before the transition, and it is a function of the curve alone, so a resumed run, which
reads the same curve from its checkpoint, decides at the same step.

A stop must not cut the learning rate mid-schedule, so a plateau warm-up trains on a warm-up-stable-decay
schedule (``WSD``): linear warm-up, constant, then a linear decay to ``min_lr`` over the cool-down. The decay
starts at the stop decision, or at the cap minus the cool-down when no decision came first, so both a
stopped and a budget-length warm-up end at the minimum. timm's schedulers fix their shape when they are
built; here the decay start is only known once the probe has decided, so the scheduler reads it from the
run's state at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def transition_index(accs: Sequence[float], rise: float) -> int | None:
    """Index of the first probe at least ``rise`` points above the first one (step 0), or None."""
    return next((i for i, acc in enumerate(accs) if i and acc >= accs[0] + rise), None)


def plateau_decision(accs: Sequence[float], *, rise: float, min_gain: float, patience: int) -> int | None:
    """Index of the probe at which the plateau rule (module docstring) fires on ``accs``, or None."""
    start = transition_index(accs, rise)
    if start is None:
        return None
    for j in range(start + patience, len(accs)):
        if max(accs[j - patience + 1:j + 1]) < max(accs[:j - patience + 1]) + min_gain:
            return j
    return None


def decay_start(cap: int, cooldown: int, decision: int | None) -> int:
    """First step of the cool-down: the step of the stop decision, at the latest (and without one) cap - cooldown."""
    return cap - cooldown if decision is None else min(decision, cap - cooldown)


class WSD:
    """Warm-up-stable-decay learning rate per optimizer step, with timm's ``step_update(step)`` interface.

    Steps [0, warmup): linear from ``min_lr`` towards ``lr`` (as timm's warm-up); then ``lr``; from the
    step ``start()`` returns, linear down to ``min_lr``, which the cool-down's last step
    (start + cooldown - 1) reaches exactly.
    """

    def __init__(self, optimizer, *, lr: float, min_lr: float, warmup: int, cooldown: int,
                 start: Callable[[], int]):
        self.optimizer, self.lr, self.min_lr = optimizer, lr, min_lr
        self.warmup, self.cooldown, self.start = warmup, cooldown, start

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.min_lr + step * (self.lr - self.min_lr) / self.warmup
        done = step - self.start() + 1  # cool-down steps taken, this one included
        if done <= 0:
            return self.lr
        return self.lr + min(done / self.cooldown, 1.0) * (self.min_lr - self.lr)

    def step_update(self, num_updates: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(num_updates)
