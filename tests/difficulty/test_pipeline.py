"""Tests of the pairs matched per seed: every seed's two sides searched in lockstep to one target.

On the real objective of a small graph: each matched side is within the tolerance of the target when measured
again independently; the lockstep gives exactly the per-seed searches run alone; the number of trials is the
largest any one seed needs, not their sum. On synthetic curves: a seed that cannot reach the target is
unmatched, with the reason.
"""

import math

import pytest

from gssm_jax import difficulty

# Same graph and batch shape as tests/difficulty/test_measures.py, so the sampler and forward algorithm compile once.
TINY_GRAPH = {"nodes": [
    {"name": "Z1", "states": 2, "alpha": 0.1, "parents": ["X"]},
    {"name": "Z2", "states": 3, "alpha": 0.1, "parents": ["X"]},
    {"name": "X", "states": 8, "alpha": 0.1, "parents": ["Z1", "Z2"]},
]}
BATCH_SIZE, LENGTH = 16, 128
SEEDS = (0, 1, 2)
REFERENCE = {"alpha_X": 1e-3, "alpha_Z": 0.07}
TOLERANCE = 0.007  # nats/token


class Counting(difficulty.Measurer):
    """A measurer that counts the trials (`per_seed` calls) and how many seeds each measured."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trials: list[int] = []

    def per_seed(self, alphas, measure):
        self.trials.append(len(alphas))
        return super().per_seed(alphas, measure)


def measurer(seeds=SEEDS) -> Counting:
    return Counting(TINY_GRAPH, seeds=seeds, batch_size=BATCH_SIZE, length=LENGTH)


@pytest.fixture(scope="module")
def pairs():
    """The pairs of SEEDS (target: the mean of the reference over them) and the measurer that searched them."""
    searched = measurer()
    return difficulty.calibrate_pair(searched, measure="entropy", tolerance=TOLERANCE, reference=REFERENCE,
                                     grid_points=4), searched


def test_every_matched_seed_is_within_tolerance_when_measured_again(pairs):
    result, _ = pairs
    target = difficulty.difficulty(TINY_GRAPH, REFERENCE, measure="entropy", seeds=SEEDS, batch_size=BATCH_SIZE,
                                   length=LENGTH).mean
    assert result.target == target and result.tolerance == TOLERANCE and not result.unmatched
    for seed, pair in result.pairs.items():
        assert pair.matched and pair.reason == ""
        again = {side: difficulty.difficulty(TINY_GRAPH, pair.alphas(side), measure="entropy", seeds=(seed,),
                                             batch_size=BATCH_SIZE, length=LENGTH).mean
                 for side in ("small_alpha_x", "small_alpha_z")}
        assert all(abs(value - target) <= TOLERANCE for value in again.values()), (seed, again)
        assert pair.mismatch == again["small_alpha_x"] - again["small_alpha_z"]
        assert pair.alphas("small_alpha_x")["alpha_X"] == pair.alphas("small_alpha_z")["alpha_Z"] == 1e-3
    # The pairs are matched one by one, not only on average: the reference itself is not (its seeds spread).
    at_reference = difficulty.difficulty(TINY_GRAPH, REFERENCE, measure="entropy", seeds=SEEDS, batch_size=BATCH_SIZE,
                                         length=LENGTH).per_seed
    assert max(abs(value - target) for value in at_reference) > TOLERANCE


def test_lockstep_equals_each_seed_searched_alone(pairs):
    result, _ = pairs
    for seed in SEEDS:
        alone = measurer((seed,))
        # The same searches, run one seed at a time on a plain objective.
        for side, fixed, free in (("small_alpha_x", {"alpha_X": 1e-3}, "alpha_Z"),
                                  ("small_alpha_z", {"alpha_Z": 1e-3}, "alpha_X")):
            known = ([difficulty.Evaluation(REFERENCE["alpha_Z"], alone(REFERENCE, "entropy").mean)]
                     if side == "small_alpha_x" else [])

            def objective(alpha, fixed=fixed, free=free, alone=alone):
                return alone({**fixed, free: alpha}, "entropy").mean

            single = difficulty.find_alpha(objective, result.target, tolerance=TOLERANCE, grid_points=4, name=free,
                                           known=known)
            assert getattr(result.pairs[seed], side) == single, (seed, side)


def test_trials_do_not_grow_with_the_seeds(pairs):
    result, searched = pairs
    # Each seed's own trials per side (its evaluations; the reference is a known point of the small_alpha_x side).
    x = [len(pair.small_alpha_x.evaluations) - 1 for pair in result.pairs.values()]
    z = [len(pair.small_alpha_z.evaluations) for pair in result.pairs.values()]
    alone = []
    for seed in SEEDS:
        single = measurer((seed,))
        difficulty.calibrate_pair(single, measure="entropy", tolerance=TOLERANCE, target=result.target, grid_points=4)
        alone.append(len(single.trials))
    assert alone == [a + b for a, b in zip(x, z, strict=True)]
    # Together, as many trials as the slowest seed on each side; each trial measures the seeds still searching.
    assert len(searched.trials) == max(x) + max(z) < sum(alone)
    assert sum(searched.trials) == sum(alone) and max(searched.trials) == len(SEEDS)
    assert result.trials == len(searched.trials) + 1  # and the reference


def test_lockstep_trial_count_is_the_slowest_seeds():
    # Synthetic curves: the lockstep runs as many trials as its slowest search, whatever the number of seeds.
    offsets = [0.7 * k for k in range(8)]
    alone = []
    for offset in offsets:
        calls = []

        def objective(alpha, offset=offset, calls=calls):
            calls.append(alpha)
            return math.atan(math.log(alpha) + offset)

        difficulty.find_alpha(objective, 0.3, tolerance=1e-4)
        alone.append(len(calls))
    trials = []

    def evaluate(alphas):
        trials.append(len(alphas))
        return {key: math.atan(math.log(alpha) + offsets[key]) for key, alpha in alphas.items()}

    searches = {key: difficulty.seed_search(0.3, tolerance=1e-4) for key in range(len(offsets))}
    results = difficulty.lockstep(searches, evaluate)
    assert len(set(alone)) > 1  # the seeds need different numbers of trials
    assert len(trials) == max(alone) and sum(trials) == sum(alone)
    assert all(result.converged for result in results.values())


class Synthetic:
    """A measurer of synthetic curves: seed s has difficulty curves[s](alpha_X, alpha_Z)."""

    def __init__(self, curves):
        self.curves, self.seeds = curves, tuple(curves)

    def per_seed(self, alphas, measure):
        return {seed: self.curves[seed](a["alpha_X"], a["alpha_Z"]) for seed, a in alphas.items()}


def test_a_seed_that_cannot_reach_the_target_is_unmatched_with_the_reason():
    def reachable(alpha_x, alpha_z):
        return math.log1p(alpha_x) + math.log1p(alpha_z)

    def capped(alpha_x, alpha_z):  # never above 0.1: the target 1.0 is out of reach on both sides
        return min(reachable(alpha_x, alpha_z), 0.1)

    pairs = difficulty.calibrate_pair(Synthetic({0: reachable, 1: capped, 2: reachable}), measure="entropy",
                                      tolerance=0.01, target=1.0)
    assert [seed for seed, pair in pairs.pairs.items() if pair.matched] == [0, 2]
    unmatched = pairs.pairs[1]
    assert not unmatched.matched and set(pairs.unmatched) == {1}
    reason = "small_alpha_x: target 1 is outside what alpha_Z in [0.0001, 10] reaches: [0.001099, 0.1]"
    assert reason in unmatched.reason
    assert "small_alpha_z: target 1 is outside what alpha_X" in unmatched.reason
    record = pairs.to_json()["pairs"]
    assert record["1"]["matched"] is False and record["1"]["reason"] == unmatched.reason
    assert record["0"]["matched"] is True and record["0"]["reason"] == ""
    assert set(record["0"]) == {"small_alpha_x", "small_alpha_z", "mismatch", "matched", "reason"}
    assert {"alpha_X", "alpha_Z", "difficulty"} <= set(record["0"]["small_alpha_x"])
    assert record["0"]["mismatch"] == record["0"]["small_alpha_x"]["difficulty"] - record["0"]["small_alpha_z"][
        "difficulty"]

