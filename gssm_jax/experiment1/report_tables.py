"""Markdown tables of the Experiment 1 report: final excess, tokens to reach, convergence, n-gram floors, runs,
calibrations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gssm_jax.experiment1.comparisons import SIDES, Comparison, RunSummary
from gssm_jax.experiment1.runs import FloorKey
from gssm_jax.statistics import Interval

OUTCOME_TEXT = {"small_alpha_x": "small alpha_X", "small_alpha_z": "small alpha_Z"}


def p_text(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def tokens_text(value: float) -> str:
    """Tokens as 1.23M / 45.6k; +inf (censored) as "not reached"."""
    if not math.isfinite(value):
        return "not reached"
    return f"{value / 1e6:.3g}M" if value >= 1e6 else f"{value / 1e3:.3g}k"


def interval_text(interval: Interval, sign: str = "") -> str:
    if not math.isfinite(interval.low):
        return f"{interval.mean:{sign}.4f}"
    return f"{interval.mean:{sign}.4f} [{interval.low:{sign}.4f}, {interval.high:{sign}.4f}]"


def difference_text(mean: float, low: float, high: float) -> str:
    return f"{mean:+.4f}" + (f" [{low:+.4f}, {high:+.4f}]" if math.isfinite(low) else "")


def _head(c: Comparison) -> str:
    return f"| {c.group.graph} | {c.group.measure} | {c.group.learner} | {c.group.model} | {len(c.seeds)} |"


def _outcome_cell(c: Comparison, question: str) -> str:
    outcome = c.outcome(question)
    return f"**{OUTCOME_TEXT[outcome]}**" if outcome in OUTCOME_TEXT else outcome


def final_table(comparisons: Sequence[Comparison]) -> str:
    """Final excess loss per side (mean and CI over seeds), the mean paired difference with its CI, both tests."""
    level = f"{comparisons[0].settings.confidence:.0%} CI" if comparisons else "CI"
    lines = [f"| graph | measure | learner | model | pairs | small alpha_X [{level}] | small alpha_Z [{level}] | "
             f"paired X - Z [{level}] | paired t p (Holm) | sign-flip p (Holm) | ends lower |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        x, z = c.sides["small_alpha_x"].final, c.sides["small_alpha_z"].final
        test = c.final
        tests = ("not tested | not tested" if test is None else
                 f"{p_text(test.t_p_value)} ({p_text(c.holm['final', 't'])}) | "
                 f"{p_text(test.permutation_p_value)} ({p_text(c.holm['final', 'sign_flip'])})")
        if test is None:  # not tested: the plain mean of the paired differences, no interval
            mean = float(np.mean(c.sides["small_alpha_x"].final_excess - c.sides["small_alpha_z"].final_excess))
            difference = difference_text(mean, math.nan, math.nan)
        else:
            difference = difference_text(test.mean_difference, test.low, test.high)
        lines.append(f"{_head(c)} {interval_text(x)} | {interval_text(z)} | {difference} | {tests} | "
                     f"{_outcome_cell(c, 'final')} |")
    return "\n".join(lines)


def reach_table(comparisons: Sequence[Comparison]) -> str:
    """Tokens to reach the stated excess: per-side median (censored runs count as not reached), pair counts, tests."""
    target = comparisons[0].settings.reach_excess if comparisons else math.nan
    lines = [f"| graph | measure | learner | model | pairs | small alpha_X: median tokens to {target:g} "
             f"(not reached) | small alpha_Z: median tokens to {target:g} (not reached) | X first / Z first / tied | "
             "rank t p (Holm) | sign-flip p (Holm) | learns faster |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        cells = []
        for side in SIDES:
            values = c.sides[side].tokens_to_reach
            cells.append(f"{tokens_text(float(np.median(values)))} ({int(np.sum(~np.isfinite(values)))} of "
                         f"{values.size})")
        x, z = (c.sides[side].tokens_to_reach for side in SIDES)
        counts = f"{int(np.sum(x < z))} / {int(np.sum(z < x))} / {int(np.sum(x == z))}"
        test = c.test("reach")
        tests = ("not tested | not tested" if test is None else
                 f"{p_text(test.t_p_value)} ({p_text(c.holm['reach', 't'])}) | "
                 f"{p_text(test.permutation_p_value)} ({p_text(c.holm['reach', 'sign_flip'])})")
        lines.append(f"{_head(c)} {cells[0]} | {cells[1]} | {counts} | {tests} | {_outcome_cell(c, 'reach')} |")
    return "\n".join(lines)


def convergence_table(comparisons: Sequence[Comparison]) -> str:
    """Per group and side: entropy, mean final excess as a fraction of it, runs still falling, learned or not."""
    lines = ["| graph | measure | learner | model | side | entropy rate | mean final excess (% of entropy) | "
             "runs still falling (not checked) | learned |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        for side in SIDES:
            s = c.sides[side]
            lines.append(f"| {c.group.graph} | {c.group.measure} | {c.group.learner} | {c.group.model} | {side} | "
                         f"{s.entropy:.4f} | {s.final.mean:.4f} ({s.excess_fraction:.0%}) | "
                         f"{s.still_falling} of {len(s.runs)} ({s.unchecked}) | {'yes' if s.learned else '**no**'} |")
    return "\n".join(lines)


def _falling_text(summary: RunSummary) -> str:
    flag = summary.convergence.still_falling
    return "not checked" if flag is None else "**yes**" if flag else "no"


def runs_table(comparisons: Sequence[Comparison]) -> str:
    """Every paired run: final excess ± its standard error over held-out sequences, tokens to reach, end slope."""
    target = comparisons[0].settings.reach_excess if comparisons else math.nan
    lines = ["| graph | measure | learner | model | side | seed | steps | entropy rate | final excess ± SE | "
             f"tokens to {target:g} | slope over the last fifth (per M tokens) ± SE | one-sided p | still falling | "
             "wall time (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        for side in SIDES:
            for summary in c.sides[side].runs:
                run, fit, r = summary.run, summary.convergence, summary.run.result
                slope = ("n/a" if not math.isfinite(fit.stderr_per_million_tokens) else
                         f"{fit.slope_per_million_tokens:+.4f} ± {fit.stderr_per_million_tokens:.4f}")
                lines.append(f"| {c.group.graph} | {c.group.measure} | {c.group.learner} | {c.group.model} | {side} | "
                             f"{run.seed} | {r['final_step']} | {run.entropy:.4f} | {run.final_excess:.4f} ± "
                             f"{r['eval/excess_loss_standard_error']:.4f} | {tokens_text(summary.tokens_to_reach)} | "
                             f"{slope} | {p_text(fit.p_value)} | {_falling_text(summary)} | {r['wall_time_s']:.0f} |")
    return "\n".join(lines)


def floor_table(comparisons: Sequence[Comparison], floors: Mapping[FloorKey, dict]) -> str:
    """Per group and side: the learner's mean final excess beside the n-gram floor's on the same seeds' data.

    The floor's excess of a seed is its held-out loss minus the entropy rate of that seed's held-out set (read
    from the learner's run, which evaluates on the same sequences); seeds without a floor are left out.
    """
    lines = ["| graph | measure | learner | model | side | learner's final excess | n-gram floor's excess | "
             "n-gram orders | floors |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        for side in SIDES:
            learner, floor, orders = [], [], set()
            for summary in c.sides[side].runs:
                record = floors.get(FloorKey(c.group.measure, c.group.graph, side, summary.run.seed))
                learner.append(summary.run.final_excess)
                if record is not None:
                    floor.append(record["nats_per_token"] - summary.run.entropy)
                    orders.add(record["order"])
            floor_text = f"{np.mean(floor):.4f}" if floor else "n/a"
            lines.append(f"| {c.group.graph} | {c.group.measure} | {c.group.learner} | {c.group.model} | {side} | "
                         f"{np.mean(learner):.4f} | {floor_text} | {', '.join(map(str, sorted(orders))) or 'n/a'} | "
                         f"{len(floor)} of {len(learner)} |")
    return "\n".join(lines)


def calibration_text(record: dict) -> str:
    """One sentence: both sides' alphas and their measured difficulty at the calibration target."""
    settings, parts = record["settings"], []
    for side in SIDES:
        alphas, measured = record["alphas"][side], record["difficulty"][side]
        parts.append(f"{side} (alpha_X = {alphas['alpha_X']:.4g}, alpha_Z = {alphas['alpha_Z']:.4g}) measures "
                     f"{measured['mean']:.4f} ± {measured['stderr']:.4f}")
    return (f"Pair matched by {settings['measure']} to {record['target']:.4f} {record['unit'].split(' ')[0]} "
            f"(seeds {settings['seeds']}, {settings['batch_size']} x {settings['length']} tokens per seed, "
            f"tolerance {settings['tolerance']:g}): " + "; ".join(parts) + ".")
