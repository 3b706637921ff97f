"""Tests of one seed's alpha search: synthetic objectives with known roots, and the real objective on small graphs.

The pairs of every seed (the lockstep, the record, the estimate) are tested in test_pipeline.py and
test_calibration.py.
"""

import math

import numpy as np
import pytest

from gssm_jax import difficulty

# Same graph and batch shape as tests/difficulty/test_measures.py, so the sampler and forward algorithm compile once.
TINY_GRAPH = {"nodes": [
    {"name": "Z1", "states": 2, "alpha": 0.1, "parents": ["X"]},
    {"name": "Z2", "states": 3, "alpha": 0.1, "parents": ["X"]},
    {"name": "X", "states": 8, "alpha": 0.1, "parents": ["Z1", "Z2"]},
]}
BATCH_SIZE, LENGTH = 16, 128


def test_find_alpha_recovers_known_root_of_smooth_objective():
    # f(alpha) = 2 + 0.5 log(alpha): root of f = target at alpha* = exp((target - 2) / 0.5).
    true_alpha = 0.037
    target = 2 + 0.5 * math.log(true_alpha)
    tolerance = 1e-3
    result = difficulty.find_alpha(lambda a: 2 + 0.5 * math.log(a), target, tolerance=tolerance)
    assert result.converged and result.reason == "" and abs(result.value - target) <= tolerance
    # |f(a) - f(a*)| = 0.5 |log a - log a*| <= tolerance, so log alpha is within 2 * tolerance.
    assert abs(math.log(result.alpha) - math.log(true_alpha)) <= tolerance / 0.5
    assert result.monotone and result.largest_decrease == 0.0
    assert all(a.alpha < b.alpha for a, b in zip(result.evaluations, result.evaluations[1:], strict=False))


def test_find_alpha_recovers_root_of_saturating_objective():
    # A logistic curve in log alpha, flat at both ends like a difficulty measure; root at log10 alpha = -1.3.
    def objective(alpha):
        return 5 / (1 + math.exp(-2 * (math.log10(alpha) + 2)))

    true_alpha = 10**-1.3
    target = objective(true_alpha)
    tolerance = 1e-4
    result = difficulty.find_alpha(objective, target, tolerance=tolerance, bounds=(1e-6, 1e3))
    assert abs(result.value - target) <= tolerance
    # Slope d f / d log10 alpha >= 2 * 5 * p(1 - p) near the root; use its value there, conservatively halved.
    p = target / 5
    slope = 10 * p * (1 - p) / 2
    assert abs(math.log10(result.alpha) - math.log10(true_alpha)) <= tolerance / slope


def test_unreachable_target_is_unconverged_with_the_range():
    # 1 + tanh(log alpha) / 2 saturates at exactly 0.5 and 1.5 at the bounds exp(-+50).
    calls = []

    def objective(alpha):
        calls.append(alpha)
        return 1.0 + 0.5 * math.tanh(math.log(alpha))

    result = difficulty.find_alpha(objective, 7.0, tolerance=0.01, bounds=(math.exp(-50), math.exp(50)))
    assert not result.converged and "reaches: [0.5, 1.5]" in result.reason
    assert len(calls) == 6 and result.value == 1.5  # the grid only; the grid point closest to the target
    below = difficulty.find_alpha(math.log, -100.0, tolerance=0.1, name="alpha_Z")
    assert not below.converged and below.reason.startswith("target -100 is outside what alpha_Z in [0.0001, 10]")


def test_non_monotone_objective_is_reported():
    # A dip of depth 1 (> tolerance) between grid points: the search must say so.
    def objective(alpha):
        x = math.log10(alpha)
        return x - 1.5 * math.exp(-((x + 1.0) / 0.3) ** 2)

    result = difficulty.find_alpha(objective, -2.2, tolerance=1e-3, grid_points=16)
    assert not result.monotone and result.largest_decrease > 1e-3


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="bounds"):
        difficulty.find_alpha(lambda a: a, 1, tolerance=0.1, bounds=(1.0, 0.1))
    with pytest.raises(ValueError, match="grid_points >= 2"):
        difficulty.seed_search(1, tolerance=0.1, grid_points=1)  # at the call, before any trial
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0,), batch_size=BATCH_SIZE, length=LENGTH)
    with pytest.raises(ValueError, match="valid measures"):
        difficulty.calibrate(measurer, fixed={"alpha_X": 1e-3}, free="alpha_Z", target=1, measure="zip",
                              tolerance=0.1)
    with pytest.raises(ValueError, match="fixed must give exactly the other"):
        difficulty.calibrate(measurer, fixed={"alpha_Z": 1e-3}, free="alpha_Z", target=1, measure="entropy",
                              tolerance=0.1)


def test_entropy_objective_is_monotone_in_each_alpha():
    # Common random numbers, one decade between points: the change in entropy over a decade of alpha is far
    # larger than the wiggle of the non-monotone Dirichlet coupling on this graph.
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1, 2), batch_size=BATCH_SIZE, length=LENGTH)
    grid = np.geomspace(1e-4, 10.0, 6)
    for fixed, free in (({"alpha_X": 1e-3}, "alpha_Z"), ({"alpha_Z": 1e-3}, "alpha_X")):
        means = [d.mean for _, d in difficulty.curve(measurer, fixed=fixed, free=free, alphas=grid, measure="entropy")]
        # Non-decreasing everywhere, and strictly increasing once above the floor of the smallest alphas (there
        # the rows are one-hot to float32 precision up to a rare second entry: ~0 bits, the same at 1e-4 and
        # 1e-3 because the boost uniforms that decide each row's winner do not depend on alpha).
        # Each seed's own curve is monotone too (the searches of test_pipeline.py run on them).
        assert np.all(np.diff(means) >= 0), (free, means)
        assert np.all(np.diff(means)[np.asarray(means[:-1]) > means[0]] > 0), (free, means)


def test_calibrate_recovers_known_alpha_on_real_objective():
    # Target = seed 1's own value at alpha_Z = 0.05 (same keys at every trial), so its root is known.
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1, 2), batch_size=BATCH_SIZE, length=LENGTH)
    true_alpha = 0.05
    target = measurer({"alpha_X": 1e-3, "alpha_Z": true_alpha}, "entropy").per_seed[1]
    tolerance = 0.007  # nats/token
    results = difficulty.calibrate(measurer, fixed={"alpha_X": 1e-3}, free="alpha_Z", target=target,
                                   measure="entropy", tolerance=tolerance)
    assert list(results) == [0, 1, 2] and all(result.free == "alpha_Z" for result in results.values())
    result = results[1]
    assert result.converged and abs(result.value - target) <= tolerance
    # Within tolerance of the target, the alpha lies between the nearest trials that fall outside the
    # tolerance band on either side of the target (the objective is monotone on this graph, test above).
    below = [e.alpha for e in result.evaluations if e.value < target - tolerance]
    above = [e.alpha for e in result.evaluations if e.value > target + tolerance]
    assert max(below) < true_alpha < min(above)
    assert max(below) < result.alpha < min(above)


def test_config_arg_errors_list_valid_values():
    from gssm_jax.configs.calibrate import get_config

    config = get_config("graph=chain,measure=entropy,size=cpu")
    assert (config.calibration.graphs, config.calibration.measures) == (("chain",), ("entropy",))
    assert (config.calibration.reference_alpha_x, config.calibration.reference_alpha_z) == (None, None)  # family's
    assert get_config("size=paper").calibration.batch_size == 1024
    assert get_config("graph=eight_by_four,size=paper").calibration.length == 4096
    with pytest.raises(ValueError, match="valid values are four_by_four, eight_by_four, chain"):
        get_config("graph=4x4")
    with pytest.raises(ValueError, match="valid values are entropy, gzip, zlib, bz2, lzma, both"):
        get_config("measure=gz")
    with pytest.raises(ValueError, match="key in graph, measure, size"):
        get_config("seeds=3")
    with pytest.raises(ValueError, match="graph is given twice"):
        get_config("graph=chain,graph=four_by_four")


def test_calibrate_and_experiment1_configs_share_one_schema():
    from gssm_jax.configs import calibrate, experiment1

    standalone = calibrate.get_config("graph=chain").calibration
    sweep = experiment1.get_config("graph=chain").calibration
    assert set(standalone.keys()) == set(sweep.keys())
    for field in standalone.keys():
        assert type(standalone[field]) is type(sweep[field]) or None in (standalone[field], sweep[field]), field


def test_tolerances_are_in_each_measures_unit():
    from gssm_jax.configs.calibrate import TINY_TOLERANCES, TOLERANCES

    # Entropy in nats/token: 0.005 and 0.1 bits/token, as before the change of unit, rounded.
    assert TOLERANCES["entropy"] == pytest.approx(0.005 * difficulty.NATS_PER_BIT, rel=0.02)
    assert TINY_TOLERANCES["entropy"] == pytest.approx(0.1 * difficulty.NATS_PER_BIT, rel=0.02)
    assert difficulty.unit("entropy") == "nats/token" and difficulty.unit("gzip") == "bytes/token"
    assert all(difficulty.unit(name) == "bits/token" for name in difficulty.COMPRESSORS)


def test_search_stops_at_a_jump_and_says_not_converged():
    # A step at alpha = 0.01 from 0 to 1 with target 0.5: no alpha is within tolerance, the bracket shrinks.
    calls = []

    def objective(alpha):
        calls.append(alpha)
        return float(alpha > 0.01)

    result = difficulty.find_alpha(objective, 0.5, tolerance=0.01, log_alpha_tolerance=1e-3)
    assert not result.converged and abs(math.log(result.alpha / 0.01)) < 1e-2
    assert "jumps over the target 0.5" in result.reason
    assert len(calls) < 6 + 30  # stopped by the bracket width, not by max_iterations


def test_known_points_join_the_monotonicity_check_and_win_when_closer():
    def objective(alpha):
        return 2 + 0.5 * math.log(alpha)

    on_target = difficulty.Evaluation(0.02, objective(0.02))
    result = difficulty.find_alpha(objective, on_target.value, tolerance=0.05, known=[on_target])
    assert result.alpha == 0.02 and result.value == on_target.value and result.converged and result.monotone
    assert on_target in result.evaluations
    # A known point above the curve makes it non-monotone; it is far from the target, so it is not the result.
    wiggle = difficulty.find_alpha(objective, on_target.value, tolerance=0.05,
                                   known=[difficulty.Evaluation(0.05, 4.0)])
    assert not wiggle.monotone and wiggle.largest_decrease > 1 and wiggle.alpha != 0.05


def test_pair_uses_the_reference_on_the_small_alpha_x_curve():
    # The reference (alpha_X = small) lies on every seed's small-alpha_X curve: a known point of each search,
    # measured once (the target is the mean over seeds of its values).
    measurer = difficulty.Measurer(TINY_GRAPH, seeds=(0, 1), batch_size=BATCH_SIZE, length=LENGTH)
    reference = {"alpha_X": 1e-3, "alpha_Z": 0.07}
    pairs = difficulty.calibrate_pair(measurer, measure="entropy", tolerance=0.007, reference=reference,
                                      grid_points=4)
    values = measurer(reference, "entropy")
    assert pairs.target == values.mean
    for seed, value in zip((0, 1), values.per_seed, strict=True):
        pair = pairs.pairs[seed]
        assert difficulty.Evaluation(0.07, value) in pair.small_alpha_x.evaluations
        assert all(e.alpha != 0.07 for e in pair.small_alpha_z.evaluations)
        assert pair.matched and abs(pair.small_alpha_z.value - pairs.target) <= 0.007


def test_eight_by_four_cpu_sizes_depend_on_the_measure():
    from gssm_jax.configs.calibrate import CPU_COMPRESSION_SIZES, CPU_SIZES, get_config

    def shape(calibration):
        return len(calibration.seeds), calibration.batch_size, calibration.length

    gzip = get_config("graph=eight_by_four,measure=gzip").calibration
    assert shape(gzip) == CPU_COMPRESSION_SIZES["eight_by_four"]
    assert not gzip.compression_table  # it would compute the entropy of every setting at these sizes
    for arg in ("graph=eight_by_four,measure=entropy", "graph=eight_by_four"):
        calibration = get_config(arg).calibration
        assert shape(calibration) == CPU_SIZES["eight_by_four"]
        assert calibration.compression_table
    assert len(get_config("graph=four_by_four,measure=gzip").calibration.seeds) == CPU_SIZES["four_by_four"][0]
