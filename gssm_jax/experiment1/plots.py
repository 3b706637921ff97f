"""The report's figures (matplotlib Figure objects, no pyplot state; notebooks display them inline).

matplotlib is the optional `report` extra, imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gssm_jax.difficulty.sides import SIDE_NAMES
from gssm_jax.experiment1 import curves
from gssm_jax.experiment1.comparisons import SIDE_LABELS, Comparison
from gssm_jax.experiment1.runs import FloorKey, Run

SIDE_COLORS = dict(zip(SIDE_NAMES, ("tab:blue", "tab:orange"), strict=True))


def _figure(rows: int, columns: int, title: str, panel_width: float = 4.6):
    """A constrained-layout figure of rows x columns panels, never narrower than its title (a one-panel figure
    cut the title off at both ends)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (optional dependency: the `report` extra)

    width = max(panel_width * max(columns, 1), 0.11 * max(map(len, title.split("\n"))))  # ~0.11 in per character
    figure = Figure(figsize=(width, 3.8 * max(rows, 1) + 0.2 * title.count("\n")), layout="constrained")
    axes = figure.subplots(max(rows, 1), max(columns, 1), squeeze=False)
    figure.suptitle(title)
    return figure, axes


def _context(c: Comparison) -> str:
    return f"{c.group.measure}-matched\n{c.group.learner} {c.group.model}"


def _baseline_curve(c: Comparison, side: str, floors: Mapping[FloorKey, dict]) -> tuple[list, list]:
    """The n-gram baseline's mean excess at the training tokens of its curve (`floors`), over the paired seeds."""
    points: dict[float, list[float]] = {}
    for summary in c.sides[side].runs:
        record = floors.get(FloorKey(c.group.measure, c.group.graph, side, summary.run.seed)) or {}
        for point in record.get("curve", []):
            points.setdefault(float(point["train_tokens"]), []).append(point["nats_per_token"] - summary.run.entropy)
    tokens = sorted(points)
    return tokens, [float(np.mean(points[t])) for t in tokens]


def plot_learning_curves(comparisons: Sequence[Comparison], floors: Mapping[FloorKey, dict] | None = None):
    """Excess loss against tokens seen: per side the mean over paired seeds and its pointwise confidence band.

    One panel per graph (columns) and per (measure, learner, model size) (rows); open circles: the side's mean
    excess after a full cool-down (at half and at the whole budget); crosses: the n-gram memorisation baseline at
    matched token counts (`floors`); the dashed line is the stated excess whose first crossing is "tokens to
    reach". Log y axis when every mean is positive.
    """
    graphs = sorted({c.group.graph for c in comparisons})
    contexts = sorted({c.group[1:] for c in comparisons})
    level = comparisons[0].settings.confidence if comparisons else 0.95
    figure, axes = _figure(len(contexts), len(graphs), f"Learning curves: mean excess loss and {level:.0%} band "
                                                       "across seeds\no: after a full cool-down; x: n-gram baseline")
    for c in comparisons:
        axis = axes[contexts.index(c.group[1:]), graphs.index(c.group.graph)]
        positive = True
        for side in SIDE_NAMES:
            summary = c.sides[side]
            runs = [run_summary.run for run_summary in summary.runs if run_summary.run.tokens.size]
            if not runs:
                continue
            band = curves.band([(run.tokens, run.excess) for run in runs], level)
            axis.plot(band.tokens, band.mean, color=SIDE_COLORS[side], marker=".", label=SIDE_LABELS[side])
            if len(runs) > 1:
                axis.fill_between(band.tokens, band.low, band.high, color=SIDE_COLORS[side], alpha=0.2, linewidth=0)
            positive &= bool(np.all(band.mean > 0))
            gain = summary.improvement.gain
            if gain is not None:
                axis.plot([gain.tokens_half, gain.tokens_full], [gain.excess_half, gain.excess_full], "o",
                          markerfacecolor="none", markersize=8, color=SIDE_COLORS[side])
            tokens, excess = _baseline_curve(c, side, floors or {})
            if tokens:
                axis.plot(tokens, excess, "x", linestyle=(0, (1, 2)), color=SIDE_COLORS[side],
                          label=f"n-gram, {SIDE_LABELS[side].split(' (')[0]}")
                positive &= bool(np.all(np.array(excess) > 0))
        axis.axhline(c.settings.reach_excess, color="gray", linestyle=(0, (4, 3)), linewidth=0.9,
                     label=f"{c.settings.reach_excess:g} nats/token")
        if positive:
            axis.set_yscale("log")
        axis.set(title=f"{c.group.graph}, {_context(c)}", xlabel="training tokens seen",
                 ylabel="excess loss (nats/token)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    return figure


def plot_final_excess(comparisons: Sequence[Comparison]):
    """Final excess loss per group and side: each seed's pair joined by a line, each side's mean with its interval."""
    figure, ((axis,),) = _figure(1, 1, "Final excess loss, paired by seed",
                                 panel_width=max(4.6, 1.7 * len(comparisons)))
    for index, c in enumerate(comparisons):
        x, z = (c.sides[side].final_excess for side in SIDE_NAMES)
        for a, b in zip(x, z, strict=True):
            axis.plot([index - 0.15, index + 0.15], [a, b], color="gray", alpha=0.5, linewidth=0.8)
        for offset, side in zip((-0.15, 0.15), SIDE_NAMES, strict=True):
            interval = c.sides[side].final
            error = ([[interval.mean - interval.low], [interval.high - interval.mean]]
                     if math.isfinite(interval.low) else None)
            axis.errorbar([index + offset], [interval.mean], yerr=error, fmt="o", capsize=4, color=SIDE_COLORS[side],
                          label=SIDE_LABELS[side] if index == 0 else None)
            axis.plot([index + offset] * len(c.seeds), c.sides[side].final_excess, ".", color=SIDE_COLORS[side],
                      alpha=0.6)
    axis.set_xticks(range(len(comparisons)), [f"{c.group.graph}\n{_context(c)}" for c in comparisons],
                    fontsize="small")
    axis.axhline(0.0, color="gray", linewidth=0.8)
    level = f"{comparisons[0].settings.confidence:.0%} CI" if comparisons else "CI"
    axis.set(ylabel=f"final excess loss (nats/token), mean and {level}")
    if comparisons:
        axis.legend(fontsize="small")
    return figure


def plot_per_position(runs: Sequence[Run]):
    """Final per-position model loss (mean over seeds) and the Bayes-optimal loss (dashed), per graph and side."""
    graphs = sorted({run.group.graph for run in runs})
    figure, axes = _figure(1, len(graphs), "Loss per position at the end of training; dashed: Bayes-optimal")
    for axis, graph in zip(axes[0][:len(graphs)], graphs, strict=True):
        groups = sorted({run.group for run in runs if run.group.graph == graph})
        for group in groups:
            for side in SIDE_NAMES:
                chosen = [run.per_position for run in runs
                          if (run.group, run.side) == (group, side) and run.per_position]
                if not chosen:
                    continue
                label = SIDE_LABELS[side] + (f", {group.measure} {group.learner} {group.model}" if len(groups) > 1
                                             else "")
                axis.plot(np.mean([p["model_loss"][-1] for p in chosen], axis=0), color=SIDE_COLORS[side],
                          label=label)
                axis.plot(np.mean([p["optimal_loss"] for p in chosen], axis=0), color=SIDE_COLORS[side],
                          linestyle=(0, (4, 3)))
        axis.set(title=graph, xlabel="position in the sequence", ylabel="loss (nats/token)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    return figure
