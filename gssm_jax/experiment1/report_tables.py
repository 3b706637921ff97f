"""Markdown tables of the Experiment 1 report: the two answers, learned, convergence, the memorisation baseline,
calibration pairs, learning rates and every run; and the same as JSON for `summary.json` (`summary_record`).
Losses in nats/token; bits in brackets where a measure is in bits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gssm_jax.difficulty.sides import SIDE_NAMES
from gssm_jax.experiment1 import curves
from gssm_jax.experiment1.comparisons import QUESTIONS, SIDE_LABELS, Comparison, SideSummary
from gssm_jax.experiment1.runs import EXCESS_STDERR, FloorKey, Run
from gssm_jax.statistics import Interval

SHORT = {side: SIDE_LABELS[side].split(" (")[0] for side in SIDE_NAMES}  # "small alpha_X"
NATS_PER_BIT = math.log(2)
VERDICT = {True: "**still improving**", False: "stopped improving", None: "not checked"}
SLOPE_VERDICT = {True: "**still falling**", False: "not falling", None: "not checked"}  # the end-slope fallback


def p_text(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def number(value: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1%}"


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


def difficulty_text(value: float, unit: str) -> str:
    """A calibration difficulty in its record's `unit`: entropy as nats/token (bits/token), others as measured."""
    name = unit.split(" ")[0]
    if name == "nats/token":
        return f"{value:.4f} nats/token ({value / NATS_PER_BIT:.4f} bits)"
    if name == "bits/token":
        return f"{value * NATS_PER_BIT:.4f} nats/token ({value:.4f} bits)"
    return f"{value:.4f} {name}"


def _head(c: Comparison) -> str:
    return f"| {c.group.graph} | {c.group.measure} | {c.group.learner} | {c.group.model} |"


def lower_cell(c: Comparison, question: str) -> str:
    """The lower side by the interval, bold when also Holm-significant; "CI includes 0" otherwise."""
    lower = c.lower(question)
    if lower is None:
        test = c.test(question)
        return "not compared" if test is None else "CI includes 0" if math.isfinite(test.low) else "no interval"
    return f"**{SHORT[lower]}**" if c.outcome(question) == lower else f"{SHORT[lower]} (not significant after Holm)"


def _tests_cells(c: Comparison, question: str) -> str:
    test = c.test(question)
    if test is None:
        return "not tested | not tested | n/a"
    smallest, adjusted = c.smallest_sign_flip_p(question)
    return (f"{p_text(test.t_p_value)} ({p_text(c.holm[question, 't'])}) | {p_text(test.permutation_p_value)} "
            f"({p_text(c.holm[question, 'sign_flip'])}) | {p_text(smallest)} ({p_text(adjusted)})")


def final_table(comparisons: Sequence[Comparison]) -> str:
    """Final excess per side (mean and CI over seeds), the mean paired difference with its CI, both tests, p floor."""
    level = f"{comparisons[0].settings.confidence:.0%} CI" if comparisons else "CI"
    lines = [f"| graph | measure | learner | model | pairs | small alpha_X [{level}] | small alpha_Z [{level}] | "
             f"paired X - Z [{level}] | paired t p (Holm) | sign-flip p (Holm) | smallest sign-flip p (Holm) | "
             "ends lower |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        x, z = (c.sides[side].final for side in SIDE_NAMES)
        lines.append(f"{_head(c)} {len(c.seeds)} | {interval_text(x)} | {interval_text(z)} | "
                     f"{difference_text(c.final.mean_difference, c.final.low, c.final.high)} | "
                     f"{_tests_cells(c, 'final')} | {lower_cell(c, 'final')} |")
    return "\n".join(lines)


def reach_table(comparisons: Sequence[Comparison]) -> str:
    """Tokens to reach the stated excess: per-side median (censored runs count as not reached), pair counts, tests."""
    target = comparisons[0].settings.reach_excess if comparisons else math.nan
    lines = [f"| graph | measure | learner | model | pairs | small alpha_X: median tokens to {target:g} (not reached) "
             f"| small alpha_Z: median tokens to {target:g} (not reached) | X first / Z first / tied | rank t p (Holm) "
             "| sign-flip p (Holm) | smallest sign-flip p (Holm) | learns faster |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        x, z = (c.sides[side].tokens_to_reach for side in SIDE_NAMES)
        cells = [f"{tokens_text(float(np.median(v)))} ({int(np.sum(~np.isfinite(v)))} of {v.size})" for v in (x, z)]
        counts = f"{int(np.sum(x < z))} / {int(np.sum(z < x))} / {int(np.sum(x == z))}"
        lines.append(f"{_head(c)} {len(c.seeds)} | {cells[0]} | {cells[1]} | {counts} | {_tests_cells(c, 'reach')} | "
                     f"{lower_cell(c, 'reach')} |")
    return "\n".join(lines)


def _side_rows(comparisons: Sequence[Comparison]):
    for c in comparisons:
        for side in SIDE_NAMES:
            yield c, side, c.sides[side], f"{_head(c)} {SHORT[side]} |"


def learned_table(comparisons: Sequence[Comparison]) -> str:
    """Per group and side: entropy rate, unigram excess, final excess, share of the learnable gap closed, learned."""
    lines = ["| graph | measure | learner | model | side | entropy rate | unigram model's excess | mean final excess | "
             "share of the learnable gap closed (G) | learned |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, _, s, head in _side_rows(comparisons):
        lines.append(f"{head} {s.entropy:.4f} | {number(s.unigram_excess)} | {s.final.mean:.4f} | "
                     f"{share(s.gap_share)} | {'yes' if s.learned else 'no'} |")
    return "\n".join(lines)


def improvement_text(s: SideSummary) -> str:
    """The side's verdict, with the method when it is the end-slope fallback."""
    if s.improvement.method == "end slope":
        return SLOPE_VERDICT[s.improvement.still_improving] + " (end slope: no cool-down branches)"
    return VERDICT[s.improvement.still_improving]


def convergence_table(comparisons: Sequence[Comparison]) -> str:
    """Per group and side: the cooled-down excess at half and at the whole budget, the gain, the verdict."""
    lines = ["| graph | measure | learner | model | side | tokens at B/2 | excess at B/2 (cooled down) | tokens at B | "
             "excess at B (cooled down) | gain from doubling | runs still improving (checked) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, _, s, head in _side_rows(comparisons):
        g = s.improvement.gain
        numbers = ("n/a | n/a | n/a | n/a | n/a" if g is None else
                   f"{tokens_text(g.tokens_half)} | {g.excess_half:.4f} | {tokens_text(g.tokens_full)} | "
                   f"{g.excess_full:.4f} ± {g.stderr_full:.4f} | {share(g.gain)}")
        lines.append(f"{head} {numbers} | {s.improvement.runs_improving} of {len(s.runs)} "
                     f"({s.improvement.runs_checked}) | {improvement_text(s)} |")
    return "\n".join(lines)


def baseline_table(comparisons: Sequence[Comparison], floors: Mapping[FloorKey, dict]) -> str:
    """Per group and side: the learner's mean final excess beside the n-gram baseline's on the same seeds' data."""
    lines = ["| graph | measure | learner | model | side | learner's final excess | n-gram baseline's excess | "
             "n-gram tokens counted | learner's tokens | runs below their baseline | beats the baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, side, s, head in _side_rows(comparisons):
        records = [floors.get(FloorKey(c.group.measure, c.group.graph, side, seed)) for seed in c.seeds]
        counted = sorted({record["train_tokens"] for record in records if record})
        beats = {True: "yes", False: "**no**", None: "n/a"}[s.beats_baseline]
        lines.append(f"{head} {s.final.mean:.4f} | {number(s.ngram_excess)} | "
                     f"{', '.join(map(tokens_text, counted)) or 'n/a'} | "
                     f"{tokens_text(float(np.mean([r.run.result['tokens_seen'] for r in s.runs])))} | "
                     f"{s.below_baseline} of {s.baselines} | {beats} |")
    return "\n".join(lines)


def matched_tokens_table(comparisons: Sequence[Comparison], floors: Mapping[FloorKey, dict]) -> str:
    """The n-gram baseline's curve (`floors`) beside the learner's eval curve at the same training tokens."""
    lines = ["| graph | measure | learner | model | side | training tokens | n-gram baseline's excess | "
             "learner's excess (during training) |", "|---|---|---|---|---|---|---|---|"]
    for c, side, s, head in _side_rows(comparisons):
        points: dict[float, tuple[list, list]] = {}
        for summary in s.runs:
            run, record = summary.run, floors.get(FloorKey(c.group.measure, c.group.graph, side, summary.run.seed))
            for point in (record or {}).get("curve", []):
                tokens = float(point["train_tokens"])
                inside = run.tokens.size and run.tokens[0] <= tokens <= run.tokens[-1]
                ngram, learner = points.setdefault(tokens, ([], []))
                ngram.append(point["nats_per_token"] - run.entropy)
                learner.append(float(np.interp(tokens, run.tokens, run.excess)) if inside else math.nan)
        first = max((summary.run.tokens[0] for summary in s.runs if summary.run.tokens.size), default=math.nan)
        for tokens, (ngram, learner) in sorted(points.items()):
            learner_text = (number(float(np.mean(learner))) if all(map(math.isfinite, learner)) else
                            f"n/a (first eval at {tokens_text(first)})" if tokens < first else "n/a")
            lines.append(f"{head} {tokens_text(tokens)} | {np.mean(ngram):.4f} | {learner_text} |")
    return "\n".join(lines)


def memorisation_table(floors: Mapping[FloorKey, dict]) -> str:
    """Per (measure, graph, side): the held-out k-gram contexts seen in the training tokens, mean over seeds."""
    data: dict[tuple[str, str, str], list[dict]] = {}
    for key, record in floors.items():
        if "memorisation" in record:
            data.setdefault((key.measure, key.graph, key.side), []).append(record)
    lines = ["| measure | graph | side | seeds | held-out k-gram contexts seen in the training tokens (k: share) | "
             "n-gram order chosen |", "|---|---|---|---|---|---|"]
    for (measure, graph, side), records in sorted(data.items()):
        orders = records[0]["memorisation"]["orders"]
        seen = np.mean([record["memorisation"]["heldout_contexts_seen"] for record in records], axis=0)
        cells = ", ".join(f"{k}: {value:.1%}" for k, value in zip(orders, seen, strict=True))
        chosen = ", ".join(str(order) for order in sorted({record["order"] for record in records}))
        lines.append(f"| {measure} | {graph} | {SHORT[side]} | {len(records)} | {cells} | {chosen} |")
    return "\n".join(lines)


def calibration_table(record: dict) -> str:
    """Target and each seed's pair: both sides' alphas and difficulty, the mismatch, whether matched (`calibration`)."""
    settings, unit = record["settings"], record["unit"]
    tolerance = f", tolerance {settings['tolerance']:g}" if "tolerance" in settings else ""
    lines = [f"Target {difficulty_text(record['target'], unit)} ({settings['measure']}{tolerance}).", "",
             "| seed | small alpha_X: alpha_Z | its difficulty | small alpha_Z: alpha_X | its difficulty | "
             "mismatch (X - Z) | matched |", "|---|---|---|---|---|---|---|"]
    for seed, pair in sorted(record.get("pairs", {}).items(), key=lambda item: int(item[0])):
        x, z = (pair[side] for side in SIDE_NAMES)
        lines.append(f"| {seed} | {x['alpha_Z']:.4g} | {difficulty_text(x['difficulty'], unit)} | {z['alpha_X']:.4g} | "
                     f"{difficulty_text(z['difficulty'], unit)} | {difficulty_text(pair['mismatch'], unit)} | "
                     f"{'yes' if pair['matched'] else '**no** (left out)'} |")
    return "\n".join(lines)


def learning_rate_table(learning_rates: Mapping[str, dict], runs: Sequence[Run]) -> str:
    """Per `<measure>/<graph>/<model entry>`: the grid, mean validation loss per rate, the choice, the runs' rates."""
    trained: dict[str, set] = {}
    for run in runs:
        key = f"{run.group.measure}/{run.group.graph}/{run.entry}"
        trained.setdefault(key, set()).add(run.result.get("learning_rate"))
    lines = ["| measure/graph/model | grid | validation loss per rate (nats/token) | chosen | runs trained at |",
             "|---|---|---|---|---|"]
    for key in sorted(set(learning_rates) | set(trained)):
        choice = learning_rates.get(key)
        runs_at = ", ".join("not recorded" if rate is None else f"{rate:g}"
                            for rate in sorted(trained.get(key, set()), key=lambda rate: (rate is None, rate or 0)))
        if choice is None:
            lines.append(f"| {key} | not chosen | n/a | n/a | {runs_at or 'n/a'} |")
            continue
        losses = ", ".join(f"{float(rate):g}: {loss:.4f}" for rate, loss in
                           choice["validation_loss_nats_per_token"].items())
        grid, chosen = sorted(choice["grid"]), choice["chosen"]
        edge = ("" if len(grid) < 2 or grid[0] < chosen < grid[-1] else
                " (the grid's largest: a larger rate may do better)" if chosen == grid[-1] else
                " (the grid's smallest: a smaller rate may do better)")
        lines.append(f"| {key} | {', '.join(f'{rate:g}' for rate in choice['grid'])} | {losses} | "
                     f"{chosen:g}{edge} | {runs_at or 'no finished run'} |")
    return "\n".join(lines)


def _check_text(i: curves.Improvement) -> str:
    if i.gain is not None:
        return f"{i.gain.excess_half:.4f} -> {i.gain.excess_full:.4f} ({share(i.gain.gain)})"
    if i.slope is not None and math.isfinite(i.slope.stderr_per_million_tokens):
        return f"slope {i.slope.slope_per_million_tokens:+.4f} ± {i.slope.stderr_per_million_tokens:.4f}"
    return "n/a"


def runs_table(comparisons: Sequence[Comparison]) -> str:
    """Every paired run: final excess ± its standard error, G, tokens to reach, the improvement check's numbers."""
    target = comparisons[0].settings.reach_excess if comparisons else math.nan
    lines = ["| graph | measure | learner | model | side | seed | steps | learning rate | entropy rate | "
             f"final excess ± SE | G | tokens to {target:g} | excess at B/2 -> B (gain) or end slope per M tokens | "
             "still improving | "
             "wall time (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, _, s, head in _side_rows(comparisons):
        for summary in s.runs:
            run, r, i = summary.run, summary.run.result, summary.improvement
            g = 1 - run.final_excess / summary.unigram_excess if summary.unigram_excess > 0 else math.nan
            check = _check_text(i)
            rate = r.get("learning_rate")
            lines.append(f"{head} {run.seed} | {r['final_step']} | {'n/a' if rate is None else f'{rate:g}'} | "
                         f"{run.entropy:.4f} | {run.final_excess:.4f} ± {r[EXCESS_STDERR]:.4f} | {share(g)} | "
                         f"{tokens_text(summary.tokens_to_reach)} | {check} | "
                         f"{(SLOPE_VERDICT if i.method == 'end slope' else VERDICT)[i.still_improving]} | "
                         f"{r['wall_time_s']:.0f} |")
    return "\n".join(lines)


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _side_record(s: SideSummary) -> dict:
    i = s.improvement
    gain = {} if i.gain is None else {key: _finite(value) for key, value in i.gain._asdict().items()}
    return {"final_excess_nats": s.final.mean, "gap_share": _finite(s.gap_share), "learned": s.learned,
            "ngram_excess_nats": _finite(s.ngram_excess), "beats_baseline": s.beats_baseline,
            "improvement": {"method": i.method, "still_improving": i.still_improving, **gain},
            "runs": [{"seed": r.run.seed, "path": r.run.path, "final_excess_nats": r.run.final_excess,
                      "tokens_to_reach": _finite(r.tokens_to_reach), "ngram_excess_nats": _finite(r.ngram_excess),
                      "improvement_method": r.improvement.method, "still_improving": r.improvement.still_improving}
                     for r in s.runs]}


def summary_record(comparisons: Sequence[Comparison]) -> dict:
    """JSON-able: every comparison's answers, p-values and caveats, every paired run's summary."""
    return {"comparisons": [
        {"group": c.group._asdict(), "seeds": list(c.seeds), "unpaired_seeds": list(c.unpaired),
         "unmatched_pairs": {str(seed): mismatch for seed, mismatch in c.unmatched.items()},
         "lower": {q: c.lower(q) for q in QUESTIONS}, "outcomes": {q: c.outcome(q) for q in QUESTIONS},
         "settled": c.settled, "smallest_sign_flip_p": c.smallest_sign_flip_p("final"),
         "holm": {f"{q}/{test}": _finite(value) for (q, test), value in c.holm.items()},
         "sides": {side: _side_record(c.sides[side]) for side in SIDE_NAMES}} for c in comparisons]}
