"""The Experiment 1 report: tables, verdicts and PNG plots from the run directories of a sweep.

Reads `WORKDIR/runs/<graph>/<side>/seed<k>/<model>/` (the run-directory contract of `gssm_jax.train`:
`result.json`, `metrics.jsonl`, `per_position.npz`) and `WORKDIR/calibration/*.json` (written by
`gssm_jax.sweep.calibrate_graph`), and writes `WORKDIR/report.md` with `excess_loss.png`,
`loss_curves.png` and `per_position.png`. Loss values are nats per token throughout.

For each (graph, model size) the two sides' final excess losses across graph seeds are compared
with Welch's two-sided t-test (`gssm_jax.statistics`); each side's mean has a Student-t interval.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from gssm_jax import files
from gssm_jax.analysis.statistics import Interval, TTest, confidence_interval, welch_t_test
from gssm_jax.training import run_files as metrics

SIDES = ("small_alpha_x", "small_alpha_z")
SIDE_LABELS = {"small_alpha_x": "small alpha_X (easy to infer)", "small_alpha_z": "small alpha_Z (easy to predict)"}
SIDE_COLORS = {"small_alpha_x": "tab:blue", "small_alpha_z": "tab:orange"}
EXCESS = "eval/excess_loss_nats_per_token"
_RUN_PATH = re.compile(r"runs/(?P<graph>[^/]+)/(?P<side>[^/]+)/seed(?P<seed>\d+)/(?P<model>[^/]+)$")


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: its cell, `result.json`, eval records of `metrics.jsonl` and `per_position.npz` arrays."""

    graph: str
    side: str
    seed: int
    model: str
    path: str
    result: dict
    evals: tuple[dict, ...]
    per_position: dict[str, np.ndarray] | None


def load_runs(workdir: str) -> list[Run]:
    """Every finished run (one with `result.json`) under `workdir/runs`, sorted by graph, model, side, seed."""
    runs = []
    for result_path in glob.glob(os.path.join(workdir, "runs", "*", "*", "seed*", "*", metrics.RESULT_FILE)):
        path = os.path.dirname(result_path)
        match = _RUN_PATH.search(path.replace(os.sep, "/"))
        if match is None:
            continue
        per_position = None
        if os.path.exists(os.path.join(path, metrics.PER_POSITION_FILE)):
            with np.load(os.path.join(path, metrics.PER_POSITION_FILE)) as saved:
                per_position = {name: saved[name] for name in saved.files}
        evals = tuple(record for record in metrics.read_metrics(path) if EXCESS in record)
        runs.append(Run(match["graph"], match["side"], int(match["seed"]), match["model"], path,
                        metrics.read_result(path), evals, per_position))
    return sorted(runs, key=lambda run: (run.graph, run.model, run.side, run.seed))


def unfinished_runs(workdir: str) -> list[str]:
    """Run directories under `workdir/runs` without `result.json` (interrupted or still training)."""
    paths = glob.glob(os.path.join(workdir, "runs", "*", "*", "seed*", "*"))
    return sorted(path for path in paths if not os.path.exists(os.path.join(path, metrics.RESULT_FILE)))


def load_calibrations(workdir: str) -> dict[str, dict]:
    """`{graph: calibration record}` from `workdir/calibration/<graph>.<measure>.json`."""
    records = {}
    for path in sorted(glob.glob(os.path.join(workdir, "calibration", "*.json"))):
        with open(path) as file:
            record = json.load(file)
        records[record["settings"]["graph"]] = record
    return records


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Both sides of one (graph, model size): final excess loss per seed, intervals and Welch's test.

    Attributes:
      excess: `{side: per-seed final excess loss (nats/token), seed order}`.
      seeds: `{side: seeds}`.
      intervals: `{side: Student-t interval of the mean excess loss}`.
      entropy: `{side: mean exact entropy rate of the held-out sequences (nats/token)}`.
      test: Welch's test of small_alpha_x minus small_alpha_z.
      significance_level: level at which `significant` is decided.
    """

    graph: str
    model: str
    excess: dict[str, tuple[float, ...]]
    seeds: dict[str, tuple[int, ...]]
    intervals: dict[str, Interval]
    entropy: dict[str, float]
    test: TTest
    significance_level: float

    @property
    def lower_side(self) -> str:
        """The side with the lower mean excess loss."""
        return "small_alpha_x" if self.test.difference < 0 else "small_alpha_z"

    @property
    def significant(self) -> bool:
        return self.test.significant(self.significance_level)


def compare(runs: Sequence[Run], *, significance_level: float = 0.05, confidence: float = 0.95) -> list[Comparison]:
    """One Comparison per (graph, model) that has finished runs on both sides."""
    comparisons = []
    for graph, model in sorted({(run.graph, run.model) for run in runs}):
        cell = {side: [run for run in runs if (run.graph, run.model, run.side) == (graph, model, side)]
                for side in SIDES}
        if not all(cell.values()):
            continue
        excess = {side: tuple(float(run.result[EXCESS]) for run in cell[side]) for side in SIDES}
        comparisons.append(Comparison(
            graph=graph, model=model, excess=excess,
            seeds={side: tuple(run.seed for run in cell[side]) for side in SIDES},
            intervals={side: confidence_interval(excess[side], confidence) for side in SIDES},
            entropy={side: float(np.mean([run.result["eval/entropy_nats_per_token"] for run in cell[side]]))
                     for side in SIDES},
            test=welch_t_test(excess["small_alpha_x"], excess["small_alpha_z"], confidence),
            significance_level=significance_level))
    return comparisons


def _interval_text(interval: Interval) -> str:
    if not math.isfinite(interval.low):
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def answer_table(comparisons: Sequence[Comparison]) -> str:
    """Markdown: per (graph, model) both sides' mean excess loss with CIs, the difference, Welch's p, the verdict."""
    level = comparisons[0].intervals["small_alpha_x"].level if comparisons else 0.95
    lines = [f"| graph | model | small alpha_X: excess loss [{level:.0%} CI] | small alpha_Z: excess loss "
             f"[{level:.0%} CI] | difference X - Z [{level:.0%} CI] | Welch p | seeds | lower excess loss |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        test = c.test
        difference = (f"{test.difference:+.4f} [{test.low:+.4f}, {test.high:+.4f}]" if math.isfinite(test.low)
                      else f"{test.difference:+.4f}")
        verdict = f"{c.lower_side}{'' if c.significant else ' (not significant)'}"
        lines.append(f"| {c.graph} | {c.model} | {_interval_text(c.intervals['small_alpha_x'])} | "
                     f"{_interval_text(c.intervals['small_alpha_z'])} | {difference} | {test.p_value:.3g} | "
                     f"{len(c.seeds['small_alpha_x'])} + {len(c.seeds['small_alpha_z'])} | {verdict} |")
    return "\n".join(lines)


def verdict(comparison: Comparison) -> str:
    """Which side has the lower excess loss, by how much, and whether Welch's test finds it significant."""
    c, test = comparison, comparison.test
    other = "small_alpha_z" if c.lower_side == "small_alpha_x" else "small_alpha_x"
    text = (f"With model `{c.model}`, the {SIDE_LABELS[c.lower_side]} side has the lower mean excess loss: "
            f"{c.intervals[c.lower_side].mean:.4f} vs {c.intervals[other].mean:.4f} nats/token "
            f"(difference X - Z {test.difference:+.4f}, {len(c.seeds['small_alpha_x'])} and "
            f"{len(c.seeds['small_alpha_z'])} graph seeds; held-out entropy {c.entropy['small_alpha_x']:.4f} vs "
            f"{c.entropy['small_alpha_z']:.4f} nats/token). ")
    if not math.isfinite(test.p_value):
        return text + "Welch's t-test is undefined here (fewer than 2 seeds per side or no spread), so no significance."
    outcome = "is significant" if c.significant else "is not significant"
    relation = "<" if c.significant else ">="
    return text + (f"Welch's two-sided t-test: t = {test.statistic:.2f}, {test.dof:.1f} degrees of freedom, "
                   f"p = {test.p_value:.3g} {relation} {c.significance_level:g}, so the difference {outcome} at "
                   f"the {c.significance_level:g} level.")


def graph_dependence(comparisons: Sequence[Comparison]) -> str:
    """Whether the answer depends on the graph, per model size, from the per-graph significant verdicts."""
    sentences = []
    for model in sorted({c.model for c in comparisons}):
        rows = [c for c in comparisons if c.model == model]
        winners = {c.graph: c.lower_side for c in rows if c.significant}
        unresolved = [c.graph for c in rows if not c.significant]
        prefix = f"Model `{model}`: " if len({c.model for c in comparisons}) > 1 else ""
        if len(set(winners.values())) > 1:
            by_side = {side: [g for g, s in winners.items() if s == side] for side in SIDES}
            sentences.append(prefix + "**the answer depends on the graph**: small alpha_X is significantly better on "
                             f"{', '.join(by_side['small_alpha_x'])} and small alpha_Z on "
                             f"{', '.join(by_side['small_alpha_z'])}.")
        elif winners and not unresolved:
            side = next(iter(winners.values()))
            sentences.append(prefix + f"**the answer does not depend on the graph**: {SIDE_LABELS[side]} has "
                             f"significantly lower excess loss on every graph ({', '.join(winners)}).")
        elif winners:
            side = next(iter(winners.values()))
            same = [c.graph for c in rows if not c.significant and c.lower_side == side]
            other = [c.graph for c in rows if not c.significant and c.lower_side != side]
            directions = [f"the same way on {', '.join(same)}" if same else "",
                          f"the other way on {', '.join(other)}" if other else ""]
            sentences.append(prefix + f"{SIDE_LABELS[side]} is significantly better on {', '.join(winners)}; on "
                             f"{', '.join(unresolved)} the difference is not significant (the point estimate points "
                             f"{' and '.join(filter(None, directions))}), so dependence on the graph is not "
                             "established.")
        else:
            sentences.append(prefix + "no graph shows a significant difference, so at this budget the experiment "
                             "does not establish a preference, nor a dependence on the graph.")
    return " ".join(sentences)


# ---- plots (matplotlib Figure objects, no pyplot state; shown inline by notebooks) ----------------
def _figure(num_panels: int, title: str):
    from matplotlib.figure import Figure  # noqa: PLC0415 (optional dependency: the `report` extra)

    figure = Figure(figsize=(4.5 * max(num_panels, 1), 3.6), layout="constrained")
    axes = figure.subplots(1, max(num_panels, 1), squeeze=False)[0]
    figure.suptitle(title)
    return figure, axes


def plot_excess_loss(comparisons: Sequence[Comparison]):
    """Final excess loss per (graph, model) and side: per-seed points and the mean with its confidence interval."""
    figure, (axis,) = _figure(1, "Final excess loss over the entropy rate, per side")
    for index, c in enumerate(comparisons):
        for offset, side in ((-0.15, "small_alpha_x"), (0.15, "small_alpha_z")):
            interval = c.intervals[side]
            error = [[interval.mean - interval.low], [interval.high - interval.mean]] if math.isfinite(
                interval.low) else None
            axis.errorbar([index + offset], [interval.mean], yerr=error, fmt="o", capsize=4, color=SIDE_COLORS[side],
                          label=SIDE_LABELS[side] if index == 0 else None)
            axis.plot([index + offset] * len(c.excess[side]), c.excess[side], ".", color=SIDE_COLORS[side], alpha=0.5)
    axis.set_xticks(range(len(comparisons)), [f"{c.graph}\n{c.model}" for c in comparisons])
    axis.axhline(0.0, color="gray", linewidth=0.8)
    level = f"{comparisons[0].intervals['small_alpha_x'].level:.0%} CI" if comparisons else "CI"
    axis.set(ylabel=f"excess loss (nats/token), mean and {level}")
    axis.legend(fontsize="small")
    return figure


def plot_loss_curves(runs: Sequence[Run]):
    """Held-out loss against tokens seen for every run, with each side's exact entropy rate as a dashed line."""
    graphs = sorted({run.graph for run in runs})
    figure, axes = _figure(len(graphs), "Held-out loss vs the entropy rate (dashed)")
    models = sorted({run.model for run in runs})
    styles = {model: ("-", "--", ":", "-.")[index % 4] for index, model in enumerate(models)}
    for axis, graph in zip(axes[:len(graphs)], graphs, strict=True):
        for side in SIDES:
            chosen = [run for run in runs if run.graph == graph and run.side == side]
            for run in chosen:
                tokens = [record["tokens_seen"] for record in run.evals]
                axis.plot(tokens, [record["eval/loss_nats_per_token"] for record in run.evals],
                          styles.get(run.model, "-"), color=SIDE_COLORS[side], alpha=0.6, marker=".")
            if chosen:
                entropy = float(np.mean([run.result["eval/entropy_nats_per_token"] for run in chosen]))
                axis.axhline(entropy, color=SIDE_COLORS[side], linestyle=(0, (4, 3)), label=SIDE_LABELS[side])
        axis.set(title=graph, xlabel="training tokens seen", ylabel="held-out loss (nats/token)")
        axis.legend(fontsize="small")
    return figure


def plot_per_position(runs: Sequence[Run]):
    """Final per-position model loss (mean over seeds) and the Bayes-optimal loss (dashed), per graph and side."""
    graphs = sorted({run.graph for run in runs})
    figure, axes = _figure(len(graphs), "Loss per position at the end of training; dashed: Bayes-optimal")
    for axis, graph in zip(axes[:len(graphs)], graphs, strict=True):
        for side in SIDES:
            for model in sorted({run.model for run in runs}):
                chosen = [run.per_position for run in runs
                          if (run.graph, run.side, run.model) == (graph, side, model) and run.per_position]
                if not chosen:
                    continue
                axis.plot(np.mean([p["model_loss"][-1] for p in chosen], axis=0), color=SIDE_COLORS[side],
                          label=f"{SIDE_LABELS[side]}, {model}")
                axis.plot(np.mean([p["optimal_loss"] for p in chosen], axis=0), color=SIDE_COLORS[side],
                          linestyle=(0, (4, 3)))
        axis.set(title=graph, xlabel="position in the sequence", ylabel="loss (nats/token)")
        axis.legend(fontsize="small")
    return figure


# ---- the report ----------------------------------------------------------------------------------
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


def runs_table(runs: Sequence[Run]) -> str:
    lines = ["| graph | side | seed | model | steps | loss | entropy rate | excess loss ± SE | parameters | "
             "wall time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        r = run.result
        lines.append(f"| {run.graph} | {run.side} | {run.seed} | {run.model} | {r['final_step']} | "
                     f"{r['eval/loss_nats_per_token']:.4f} | {r['eval/entropy_nats_per_token']:.4f} | "
                     f"{r[EXCESS]:.4f} ± {r['eval/excess_loss_standard_error']:.4f} | {r['num_parameters']} | "
                     f"{r['wall_time_s']:.0f} |")
    return "\n".join(lines)


def write_report(workdir: str, *, significance_level: float = 0.05, confidence: float = 0.95) -> str:
    """Writes `workdir/report.md` and its PNG plots from the finished runs; returns the report's path."""
    runs = load_runs(workdir)
    comparisons = compare(runs, significance_level=significance_level, confidence=confidence)
    calibrations = load_calibrations(workdir)
    unfinished = unfinished_runs(workdir)
    plots = {"excess_loss.png": plot_excess_loss(comparisons), "loss_curves.png": plot_loss_curves(runs),
             "per_position.png": plot_per_position(runs)}
    for name, figure in plots.items():
        figure.savefig(os.path.join(workdir, name), dpi=110)
    lines = ["# Experiment 1: easy to infer (small alpha_X) or easy to predict (small alpha_Z)?", "",
             f"{len(runs)} finished runs in `{workdir}`"
             + (f"; {len(unfinished)} unfinished (rerun the command to finish them)." if unfinished else "."), "",
             "## Answer", "", answer_table(comparisons), "", graph_dependence(comparisons), ""]
    for graph in sorted({c.graph for c in comparisons}):
        lines += [f"### {graph}", ""]
        if graph in calibrations:
            lines += [calibration_text(calibrations[graph]), ""]
        lines += [verdict(c) for c in comparisons if c.graph == graph] + [""]
    lines += ["## Method", "",
              "Excess loss = the model's held-out cross-entropy minus the exact entropy rate (forward algorithm) of "
              "the same held-out sequences, in nats per token, at the end of training. Each side's mean over graph "
              f"seeds has a two-sided {confidence:.0%} Student-t confidence interval. The sides are compared per "
              f"graph and model size with Welch's unequal-variance two-sided t-test at level {significance_level:g}; "
              f"the {len(comparisons)} tests are not corrected for multiplicity (the chance of at least one false "
              f"positive among them is up to {1 - (1 - significance_level) ** max(len(comparisons), 1):.0%}).", "",
              "## Plots", "", "![excess loss](excess_loss.png)", "", "![loss curves](loss_curves.png)", "",
              "![per-position loss](per_position.png)", "", "## Runs", "", runs_table(runs), ""]
    if unfinished:
        lines += ["Unfinished runs: " + ", ".join(f"`{os.path.relpath(p, workdir)}`" for p in unfinished), ""]
    path = os.path.join(workdir, "report.md")
    files.write_text(path, "\n".join(lines))
    return path
