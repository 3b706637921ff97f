"""Learning-curve summaries: tokens to reach by hand, the convergence check on synthetic curves, bands."""

import math

import numpy as np
import pytest
from scipy import stats

from gssm_jax.experiment1 import curves

TOKENS = np.arange(1, 21) * 1000.0  # 20 evals; the last fifth (>= 16,000 tokens) holds 5 of them
CHECK = {"window": 0.2, "level": 0.05, "min_drop": 0.05}


def test_tokens_to_reach_interpolates_between_the_evals_around_the_first_crossing():
    tokens = np.array([1000.0, 2000.0, 3000.0, 4000.0])
    excess = np.array([0.5, 0.2, 0.05, 0.3])  # crosses 0.1 between 2000 (0.2) and 3000 (0.05), later rises again
    assert curves.tokens_to_reach(tokens, excess, 0.1) == pytest.approx(2000 + (0.2 - 0.1) / (0.2 - 0.05) * 1000)
    assert curves.tokens_to_reach(tokens, excess, 0.5) == 1000.0  # already there at the first eval: an upper bound
    assert curves.tokens_to_reach(tokens, excess, 0.2) == 2000.0
    assert curves.tokens_to_reach(tokens, excess, 0.01) == math.inf  # never reached: censored


def test_slope_and_standard_error_match_the_least_squares_formulas():
    rng = np.random.default_rng(0)
    excess = 0.5 - 1e-5 * TOKENS + rng.normal(0, 0.003, TOKENS.size)
    fit = curves.convergence(TOKENS, excess, **CHECK)
    x, y = TOKENS[-5:] / 1e6, excess[-5:]
    sxx = np.sum((x - x.mean()) ** 2)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / sxx
    residuals = y - (y.mean() + slope * (x - x.mean()))
    stderr = math.sqrt(np.sum(residuals**2) / 3 / sxx)
    assert fit.points == 5
    assert fit.slope_per_million_tokens == pytest.approx(slope, rel=1e-10)
    assert fit.stderr_per_million_tokens == pytest.approx(stderr, rel=1e-10)
    assert fit.p_value == pytest.approx(stats.t.cdf(slope / stderr, 3), rel=1e-10)


def test_a_curve_still_falling_at_the_end_is_flagged():
    rng = np.random.default_rng(1)
    excess = 2.0 * np.exp(-TOKENS / 30_000) + rng.normal(0, 0.002, TOKENS.size)  # time constant > the run
    fit = curves.convergence(TOKENS, excess, **CHECK)
    assert fit.still_falling is True and fit.slope_per_million_tokens < 0 and fit.drop_fraction > 0.05


def test_a_flat_end_is_not_flagged_even_when_its_creep_is_significant():
    # 0.1 + 0.9 exp(-t / 2000): at the end it still falls significantly (no noise, only curvature) but by 0.3%.
    excess = 0.1 + 0.9 * np.exp(-TOKENS / 2000)
    fit = curves.convergence(TOKENS, excess, **CHECK)
    assert fit.p_value < 0.05 and fit.drop_fraction < 0.01 and fit.still_falling is False


def test_noise_hides_a_small_slope():
    rng = np.random.default_rng(2)
    excess = 0.3 - 2e-6 * TOKENS + rng.normal(0, 0.05, TOKENS.size)
    fit = curves.convergence(TOKENS, excess, **CHECK)
    assert fit.p_value > 0.05 and fit.still_falling is False


def test_flat_noisy_curves_are_flagged_at_the_stated_rate():
    # Pure noise around a plateau with min_drop = 0: the flag is the one-sided slope test alone, so it fires on
    # 5% of curves; 4000 curves give a binomial standard deviation of 0.0034, and 4.5 of them fail w.p. < 1e-5.
    rng = np.random.default_rng(3)
    flags = [curves.convergence(TOKENS, 0.2 + rng.normal(0, 0.01, TOKENS.size), window=0.2, level=0.05,
                                min_drop=0.0).still_falling for _ in range(4000)]
    assert abs(np.mean(flags) - 0.05) < 4.5 * math.sqrt(0.05 * 0.95 / 4000)


def test_too_few_points_in_the_window_are_not_checked():
    fit = curves.convergence(np.array([100.0, 200.0, 300.0]), np.array([0.5, 0.4, 0.3]), **CHECK)
    assert fit.points == 1 and fit.still_falling is None and math.isnan(fit.stderr_per_million_tokens)


def test_band_is_the_pointwise_t_interval_on_shared_tokens():
    first = (np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.3, 0.2]))
    second = (np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.7, 0.5, 0.4, 0.3]))  # an extra point is left out
    third = (np.array([1.0, 2.0, 3.0]), np.array([0.6, 0.4, 0.3]))
    band = curves.band([first, second, third], 0.95)
    np.testing.assert_array_equal(band.tokens, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(band.mean, [0.6, 0.4, 0.3])
    half_width = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # sample std 0.1 at every point
    np.testing.assert_allclose(band.high - band.mean, half_width)
    np.testing.assert_allclose(band.mean - band.low, half_width)


RULE = {"min_gain": 0.1, "noise": 2.0}


def test_doubling_gain_is_the_relative_drop_between_the_cooled_down_ends():
    gain = curves.doubling_gain(1e8, 0.5, 2e8, 0.4, 0.01, **RULE)
    assert gain.gain == pytest.approx(0.2) and gain.still_improving
    assert not curves.doubling_gain(1e8, 0.5, 2e8, 0.46, 0.01, **RULE).still_improving  # 8% < 10%
    assert not curves.doubling_gain(1e8, 0.05, 2e8, 0.03, 0.015, **RULE).still_improving  # 40%, but 0.02 < 2 SE
    assert curves.doubling_gain(1e8, 0.05, 2e8, 0.03, 0.009, **RULE).still_improving
    flat = curves.doubling_gain(1e8, -0.001, 2e8, -0.002, 0.001, **RULE)  # at the entropy rate already
    assert math.isnan(flat.gain) and not flat.still_improving


def the_flat_cosine_run() -> tuple[np.ndarray, np.ndarray]:
    """The issue's run: a cosine-schedule curve that falls only 3.4% over its last fifth (1.38 -> 1.33)."""
    excess = np.where(TOKENS < 16_000, 2.0 - 0.62 * TOKENS / 16_000, 1.38 - 0.05 * (TOKENS - 16_000) / 4_000)
    return TOKENS, excess


def test_a_run_that_halves_its_excess_with_4x_the_tokens_is_still_improving():
    tokens, excess = the_flat_cosine_run()
    assert 1 - excess[-1] / excess[tokens >= 16_000][0] == pytest.approx(0.05 / 1.38)  # 3.6% (the issue: 3.4%)
    slope_only = curves.run_improvement(tokens, excess, [], window=0.2, level=0.05, min_drop=0.05, **RULE)
    assert slope_only.method == "end slope" and slope_only.still_improving is False  # the end slope cannot see it
    # Full cool-downs at B/2 and B: excess 1.33 sqrt 2 = 1.88 and 1.33 (halving with 4x the tokens: gain 29.3%).
    cooldowns = [(10_000.0, 1.33 * math.sqrt(2), 0.01), (20_000.0, 1.33, 0.01)]
    found = curves.run_improvement(tokens, excess, cooldowns, window=0.2, level=0.05, min_drop=0.05, **RULE)
    assert found.method == "cool-down" and found.still_improving is True
    assert found.gain.gain == pytest.approx(1 - 2**-0.5) and found.gain.tokens_half == 10_000


def test_the_branch_nearest_half_the_budget_is_compared_with_the_end():
    cooldowns = [(2_500.0, 3.0, 0.01), (10_000.0, 1.0, 0.01), (20_000.0, 0.95, 0.01)]
    found = curves.run_improvement(TOKENS, np.linspace(3, 0.95, TOKENS.size), cooldowns, window=0.2, level=0.05,
                                   min_drop=0.05, **RULE)
    assert found.gain.excess_half == 1.0 and found.still_improving is False  # 5% from B/2, whatever B/4 was


def test_a_side_is_judged_on_its_mean_cooled_down_excess():
    runs = [curves.run_improvement(TOKENS, np.ones(TOKENS.size), [(10_000.0, half, 0.02), (20_000.0, 1.0, 0.02)],
                                   window=0.2, level=0.05, min_drop=0.05, **RULE) for half in (1.05, 1.25)]
    side = curves.side_improvement(runs, **RULE)
    assert [run.still_improving for run in runs] == [False, True]
    assert side.gain.excess_half == pytest.approx(1.15) and side.gain.gain == pytest.approx(1 - 1 / 1.15)
    assert side.gain.stderr_full == pytest.approx(math.sqrt(2 * 0.02**2) / 2)  # of the mean of 2 independent runs
    assert side.still_improving and (side.runs_improving, side.runs_checked) == (1, 2)
    # Without cool-down branches the side follows its runs' end slopes: at least half still falling.
    falling = curves.run_improvement(TOKENS, 2.0 * np.exp(-TOKENS / 30_000), [], window=0.2, level=0.05,
                                     min_drop=0.05, **RULE)
    flat = curves.run_improvement(TOKENS, 0.1 + 0.9 * np.exp(-TOKENS / 2000), [], window=0.2, level=0.05,
                                  min_drop=0.05, **RULE)
    assert curves.side_improvement([falling, flat], **RULE).still_improving is True
    assert curves.side_improvement([flat, flat, falling], **RULE).still_improving is False
    assert curves.side_improvement([falling, runs[0]], **RULE).method == "end slope"  # mixed: the fallback
