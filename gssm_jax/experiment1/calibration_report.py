"""The report of `gssm-calibrate`: the calibrated pairs, the compression-performance table, the curves.

Input: the calibration records of `gssm_jax.experiment1.calibration.calibrate_graph` (one per graph and
measure) and, optionally, each graph's compression-performance rows. Output: `calibration.md`
(markdown tables) and `calibration.png` (difficulty against the free alpha, one panel per graph and
measure). Difficulties are in each measure's unit (`gssm_jax.difficulty.MEASURES`); ± is the standard
error over graph seeds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from gssm_jax import files
from gssm_jax.difficulty.measures import MEASURES, NATS_PER_BIT
from gssm_jax.difficulty.sides import SIDES
from gssm_jax.errors import UserError
from gssm_jax.training.run_directory import RESULT_FILE

MODEL_LOSS_KEY = "eval/loss_nats_per_token"
TABLE_MEASURES = ("entropy", "zlib", "bz2", "lzma")


def read_model_results(spec: str, settings: Mapping[str, dict]) -> dict[str, float]:
    """`row=path,...` -> {row: model cross-entropy in bits/token} from each run's result.json (or run directory).

    Raises:
      ValueError: a row that is not in `settings`, or a file without the model's held-out loss.
    """
    losses = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        row, separator, path = item.partition("=")
        if not separator or row not in settings:
            raise UserError(f"config.calibration.model_results item {item!r}: expected row=path with row in "
                            f"{', '.join(settings)}")
        path = os.path.join(path, RESULT_FILE) if os.path.isdir(path) else path
        with open(path) as file:
            result = json.load(file)
        if MODEL_LOSS_KEY not in result:
            raise UserError(f"config.calibration.model_results: {path} has no {MODEL_LOSS_KEY!r}; is it a training "
                            "run's result?")
        losses[row] = result[MODEL_LOSS_KEY] / NATS_PER_BIT
    return losses


def _pm(mean: float, stderr: float) -> str:
    return f"{mean:.4f} ± {stderr:.4f}" if math.isfinite(stderr) else f"{mean:.4f}"


def graph_markdown(graph: str, entry: dict) -> list[str]:
    """The lines of one graph's section: its pairs per measure, then its compression-performance table."""
    log2_vocab = math.log2(entry["vocab_size"])
    lines = [f"## {graph} ({entry['description']})", "",
             f"Graph seeds {entry['seeds']}, one batch of {entry['batch_size']} x {entry['length']} tokens per seed "
             "and trial (the same keys at every trial). ± is the standard error over seeds.", "",
             "| measure | side | alpha_X | alpha_Z | difficulty | target | SE of log10 alpha | converged | monotone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for measure, record in entry["pairs"].items():
        pair = record["pair"]
        for side in SIDES:
            c = pair[side.name]
            alphas = {**c["fixed"], c["free"]: c["alpha"]}
            monotone = "yes" if c["monotone"] else f"no (drop {c['largest_decrease']:.3g})"
            lines.append(f"| {measure} ({pair['unit'].split(' ')[0]}) | {side.name} | {alphas['alpha_X']:.4g} | "
                         f"{alphas['alpha_Z']:.4g} | {_pm(c['mean'], c['stderr'])} | "
                         f"{_pm(pair['target'], pair['target_stderr'])} | {c['log10_alpha_stderr']:.3f} | "
                         f"{'yes' if c['converged'] else 'NO'} | {monotone} |")
    lines += ["", f"Compression performance (bits/token; in parentheses: fraction of log2 V = {log2_vocab:.3g}):", ""]
    if not entry["compression_performance"]:
        return [*lines[:-1], "(not measured: config.calibration.compression_table is False)", ""]
    lines += ["| setting | alpha_X | alpha_Z | entropy rate | zlib-9 | bz2-9 | lzma-9 | seed gzip (bytes/token) "
              "| model |", "|---|---|---|---|---|---|---|---|---|"]
    for label, row in entry["compression_performance"].items():
        cells = [f"{_pm(row[m]['mean'], row[m]['stderr'])} ({row[m]['mean'] / log2_vocab:.3f})" for m in TABLE_MEASURES]
        model = row["model_bits_per_token"]
        lines.append(f"| {label} | {row['alphas']['alpha_X']:.4g} | {row['alphas']['alpha_Z']:.4g} | "
                     + " | ".join(cells) + f" | {_pm(row['gzip']['mean'], row['gzip']['stderr'])} | "
                     + (f"{model:.4f}" if model is not None else "–") + " |")
    return [*lines, "", "model: a trained model's held-out cross-entropy (config.calibration.model_results), "
            "bits/token.", ""]


def report_markdown(result: dict) -> str:
    """The calibration.md text: one section per graph."""
    lines = ["# Calibration", ""]
    for graph, entry in result["graphs"].items():
        lines += graph_markdown(graph, entry)
    return "\n".join(lines)


def plot_curves(result: dict, path: str) -> None:
    """Difficulty against the free alpha for both sides, the target and the calibrated points; one panel per
    (graph, measure), written to `path` (PNG)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (optional dependency: the `report` extra)

    panels = [(graph, measure, record["pair"]) for graph, entry in result["graphs"].items()
              for measure, record in entry["pairs"].items()]
    figure = Figure(figsize=(5.5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (graph, measure, pair) in zip(axes, panels, strict=True):
        for side in SIDES:
            calibrated = pair[side.name]
            evaluations = calibrated["evaluations"]
            line = axis.errorbar([e["alpha"] for e in evaluations], [e["mean"] for e in evaluations],
                                 yerr=[0 if math.isnan(e["stderr"]) else e["stderr"] for e in evaluations], marker=".",
                                 capsize=2, label=f"{side.label}: {side.free} free")
            axis.plot([calibrated["alpha"]], [calibrated["mean"]], "o", markersize=9, fillstyle="none",
                      color=line[0].get_color())
        axis.axhline(pair["target"], color="gray", linestyle="--", label="target")
        axis.set(xscale="log", xlabel="free alpha", ylabel=f"{measure} [{MEASURES[measure].split(' ')[0]}]",
                 title=f"{graph}: {measure}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    files.write_figure(path, figure)
