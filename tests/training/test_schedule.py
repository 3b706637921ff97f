"""Learning-rate schedules (cosine, constant, wsd, cool-down branches) and the timeline of calls."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gssm_jax.configs.base import get_config
from gssm_jax.training import schedule
from gssm_jax.training.run import resolve


def _run(num_steps=110, warmup=10, kind="wsd", cooldowns=(), eval_every=20, checkpoint_every=20, steps_per_call=20,
         decay_fraction=0.2):
    config = get_config("size=tiny")
    config.optimizer.update(schedule=kind, warmup_steps=warmup, decay_fraction=decay_fraction)
    config.train.update(num_steps=num_steps, cooldowns=cooldowns, eval_every=eval_every,
                        checkpoint_every=checkpoint_every, steps_per_call=steps_per_call)
    return resolve(config, None)


def test_wsd_warms_up_holds_then_decays_linearly_to_zero():
    run = _run()
    peak = run.optimizer.learning_rate
    rates = schedule.learning_rates(schedule.schedule_fn(run.optimizer, run.num_steps), 0, 111)
    # Decay over the last 20% of 110 steps: from step 88 to 110.
    expected = {0: 0, 5: peak / 2, 10: peak, 50: peak, 88: peak, 99: peak / 2, 109: peak / 22, 110: 0}
    np.testing.assert_allclose([rates[step] for step in expected], list(expected.values()), rtol=1e-6, atol=1e-9)
    assert np.all(np.diff(rates[10:88]) == 0) and np.all(np.diff(rates[88:]) < 0)


def test_learning_rate_tables_are_the_schedule_step_by_step():
    # Bitwise the rate a jitted step computes from its int32 step count (what optax.adamw's schedule did).
    for kind in ("cosine", "constant", "wsd"):
        run = _run(kind=kind)
        function = schedule.schedule_fn(run.optimizer, run.num_steps)
        table = schedule.learning_rates(function, 3, 100)
        assert table.dtype == np.float32 and table.shape == (97,)
        jitted = jax.jit(function)
        np.testing.assert_array_equal(table, [jitted(jnp.int32(step)) for step in range(3, 100)], err_msg=kind)


def test_a_cool_down_branch_decays_from_its_fork_to_its_end():
    run = _run(cooldowns=(0.5, 0.25))
    # fork = round(f * 110 * 0.8), end = round(f * 110); sorted by fork.
    assert schedule.branches(run) == (schedule.Branch(0.25, 22, 28), schedule.Branch(0.5, 44, 55))
    branch = schedule.branches(run)[1]
    peak = run.optimizer.learning_rate
    rates = schedule.learning_rates(schedule.schedule_fn(run.optimizer, run.num_steps, (branch.fork, branch.end)), 0,
                                    56)
    main = schedule.learning_rates(schedule.schedule_fn(run.optimizer, run.num_steps), 0, 56)
    np.testing.assert_array_equal(rates[:45], main[:45])  # the same run up to the fork (and its first step)
    np.testing.assert_allclose(rates[44:56], peak * (55 - np.arange(44, 56)) / 11, rtol=1e-6, atol=1e-9)


def _visited(timeline: schedule.Timeline) -> tuple[list[int], list[int]]:
    """The call boundaries of the main run as the loop visits them, and the sizes of every call (branches too)."""
    step, boundaries, sizes = 0, [0], []
    while step < timeline.num_steps:
        for calls in timeline.calls(step, timeline.next_stop(step)):
            step += calls
            boundaries.append(step)
            sizes.append(calls)
    for branch in timeline.branches:
        sizes += timeline.calls(branch.fork, branch.end)
    return boundaries, sizes


@pytest.mark.parametrize("num_steps,eval_every,checkpoint_every,steps_per_call,cooldowns", [
    (400, 100, 100, 20, ()), (1200, 60, 1200, 20, (0.5,)), (40, 20, 10, 20, (0.5,)), (110, 15, 25, 20, (0.5, 0.3)),
    (37, 7, 5, 20, ()), (6, 3, 10, 20, ()), (1000, 1000, 1000, 64, (0.5,))])
def test_two_call_sizes_and_every_event_on_a_boundary(num_steps, eval_every, checkpoint_every, steps_per_call,
                                                       cooldowns):
    run = _run(num_steps=num_steps, warmup=0, eval_every=eval_every, checkpoint_every=checkpoint_every,
               steps_per_call=steps_per_call, cooldowns=cooldowns)
    timeline = schedule.timeline(run)
    assert timeline.call_steps == math.gcd(steps_per_call, eval_every, checkpoint_every)
    boundaries, sizes = _visited(timeline)
    assert set(sizes) <= {timeline.call_steps, timeline.remainder_steps}  # at most two programs per run shape
    events = {step for step in range(1, num_steps + 1) if timeline.is_eval(step) or timeline.is_checkpoint(step)}
    events |= {branch.fork for branch in timeline.branches}
    assert events <= set(boundaries) and boundaries[-1] == num_steps
    # A run resumed at any boundary makes the same calls as the uninterrupted one from there on.
    for resume in boundaries:
        step, again = resume, [resume]
        while step < num_steps:
            for calls in timeline.calls(step, timeline.next_stop(step)):
                step += calls
                again.append(step)
        assert again == boundaries[boundaries.index(resume):]


def test_shipped_sizes_run_whole_calls_of_twenty():
    # config.train.steps_per_call = 20 divides the eval and checkpoint intervals of size=cpu and size=paper.
    for size in ("cpu", "paper"):
        timeline = schedule.timeline(resolve(get_config(f"size={size}"), None))
        assert timeline.call_steps == timeline.remainder_steps == 20, size
