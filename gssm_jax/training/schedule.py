"""The learning-rate schedules and the run's timeline: its events, its cool-down branches, the steps of each call.

Learning rates are computed on the host, once per run and branch, as float32 tables `(steps,)` from optax's
schedules; the compiled step program takes each call's rates as an input, so one program serves every
schedule, every member's peak rate and every branch.

* cosine: linear warmup from 0 to the peak over `warmup_steps`, then a cosine to 0 at `num_steps`.
* constant: the same warmup, then the peak.
* wsd (warmup-stable-decay): the same warmup, the peak, then a linear decay to 0 over the last
  `decay_fraction` of the steps, i.e. from step round(num_steps * (1 - decay_fraction)) to num_steps.

A cool-down branch at fraction f (`config.train.cooldowns`) forks from the main run at
`round(f * num_steps * (1 - decay_fraction))`, decays linearly to 0 at `round(f * num_steps)` on the same
stream steps, and is evaluated there: what the run would have reached with a budget of f * num_steps.

Steps run in calls of `Timeline.call_steps` (K) or `Timeline.remainder_steps` (r) steps, so a run shape
compiles at most two step programs. K = gcd(config.train.steps_per_call, eval_every, checkpoint_every), so
evaluations and checkpoints fall on call boundaries; r = gcd(K, num_steps, every fork and branch end), so the
rest do too. From any position, a stretch up to the next event is run as K-step calls first, then r-step
calls: a run resumed at any call boundary runs the same calls as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gssm_jax.training.run import Optimizer, Run


def schedule_fn(optimizer: Optimizer, num_steps: int, decay: tuple[int, int] | None = None) -> optax.Schedule:
    """The learning rate at each step of `optimizer.schedule` (see the module docstring).

    decay: (first, last) steps of a linear decay to 0 replacing the schedule's own after the warmup (a
    cool-down branch); the schedule stays at the peak before `first`.
    """
    peak, warmup = optimizer.learning_rate, optimizer.warmup_steps
    if decay is None and optimizer.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(num_steps, 1), 0.0)
    if decay is None and optimizer.schedule == "wsd":
        decay = (round(num_steps * (1 - optimizer.decay_fraction)), num_steps)
    pieces, boundaries = [optax.constant_schedule(peak)], []
    if warmup:
        pieces, boundaries = [optax.linear_schedule(0.0, peak, warmup), *pieces], [warmup]
    if decay is not None:
        first, last = decay
        pieces, boundaries = [*pieces, optax.linear_schedule(peak, 0.0, last - first)], [*boundaries, first]
    return optax.join_schedules(pieces, boundaries) if boundaries else pieces[0]


def learning_rates(schedule: optax.Schedule, start: int, stop: int) -> np.ndarray:
    """float32 (stop - start,): the schedule at steps start .. stop - 1 (the rate each of those updates uses).

    Bitwise the rate a jitted step computes from its int32 step count.
    """
    steps = jnp.arange(start, stop, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(steps), np.float32)


@functools.lru_cache(maxsize=64)
def rate_table(optimizer: Optimizer, num_steps: int, decay: tuple[int, int] | None = None) -> np.ndarray:
    """`learning_rates` of `schedule_fn(optimizer, num_steps, decay)` at steps 0 .. num_steps - 1, read-only
    (computed once per process for every run with these values)."""
    table = learning_rates(schedule_fn(optimizer, num_steps, decay), 0, num_steps)
    table.flags.writeable = False
    return table


class Branch(NamedTuple):
    """A cool-down branch: forked from the main run after step `fork`, decayed to 0 at step `end`."""

    fraction: float
    fork: int
    end: int


def branches(run: Run) -> tuple[Branch, ...]:
    """The cool-down branches of `run`, by fork step (`config.train.cooldowns`, validated by `run.resolve`)."""
    decay = run.optimizer.decay_fraction
    return tuple(Branch(fraction, round(fraction * run.num_steps * (1 - decay)), round(fraction * run.num_steps))
                 for fraction in run.cooldowns)


class Timeline(NamedTuple):
    """When things happen in a run (every field in steps)."""

    num_steps: int
    eval_every: int
    checkpoint_every: int
    call_steps: int
    remainder_steps: int
    branches: tuple[Branch, ...]

    def is_eval(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.num_steps

    def is_checkpoint(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.num_steps

    def next_stop(self, step: int) -> int:
        """The first event after `step` of the main run: an evaluation, a checkpoint, a fork or the end."""
        candidates = [self.num_steps, (step // self.eval_every + 1) * self.eval_every,
                      (step // self.checkpoint_every + 1) * self.checkpoint_every]
        return min(candidates + [branch.fork for branch in self.branches if branch.fork > step])

    def calls(self, start: int, stop: int) -> list[int]:
        """Steps of each call from `start` to `stop`: K-step calls first, then r-step calls."""
        span = stop - start
        if span % self.remainder_steps:
            raise ValueError(f"steps {start}..{stop} are not on the {self.remainder_steps}-step grid")
        whole = span // self.call_steps
        return [self.call_steps] * whole + [self.remainder_steps] * ((span - whole * self.call_steps)
                                                                    // self.remainder_steps)


def timeline(run: Run) -> Timeline:
    """The timeline of `run` (module docstring)."""
    cadence = run.cadence
    call_steps = math.gcd(cadence.steps_per_call, cadence.eval_every, cadence.checkpoint_every)
    forks = branches(run)
    remainder = math.gcd(call_steps, run.num_steps, *(step for branch in forks for step in branch[1:]))
    return Timeline(run.num_steps, cadence.eval_every, cadence.checkpoint_every, call_steps, remainder, forks)
