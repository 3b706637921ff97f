"""The report of `gssm-calibrate`: each seed's matched pair, the compression-performance table, the curves.

Input: the calibration records of `gssm_jax.experiment1.calibration.calibrate_graph` (one per graph and
measure) and, optionally, each graph's compression-performance rows. Output: `calibration.md` (markdown
tables: every seed's two sides, their difficulties and the pair's mismatch) and `calibration.png` (each
seed's difficulty against the free alpha, one panel per graph and measure). Difficulties are in each
measure's unit (`gssm_jax.difficulty.MEASURES`): entropy in nats/token, with bits in brackets where it sits
next to composable-llm's numbers (gzip in bytes/token, the compressors in bits/token).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from gssm_jax import files
from gssm_jax.difficulty.measures import NATS_PER_BIT, unit
from gssm_jax.difficulty.sides import SIDES
from gssm_jax.errors import UserError
from gssm_jax.training.run_directory import RESULT_FILE

MODEL_LOSS_KEY = "eval/loss_nats_per_token"
COMPRESSORS = ("zlib", "bz2", "lzma")


def read_model_results(spec: str, settings: Mapping[str, dict]) -> dict[str, float]:
    """`row=path,...` -> {row: model cross-entropy in nats/token} from each run's result.json (or run directory).

    Raises:
      UserError: a row that is not in `settings`, or a file without the model's held-out loss.
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
        losses[row] = float(result[MODEL_LOSS_KEY])
    return losses


def _pm(mean: float, stderr: float) -> str:
    return f"{mean:.4f} ± {stderr:.4f}" if math.isfinite(stderr) else f"{mean:.4f}"


def _nats_and_bits(nats: float, stderr: float = math.nan) -> str:
    return f"{_pm(nats, stderr)} [{nats / NATS_PER_BIT:.4f} bits]"


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.4g}" if low == high else f"{low:.4g}–{high:.4g}"


def pairs_markdown(measure: str, record: dict) -> list[str]:
    """One measure's pairs: a summary line, then one row per seed (both sides, the mismatch, matched or why not)."""
    pairs, settings, measure_unit = record["pairs"], record["settings"], unit(measure)
    target = _pm(record["target"], record["target_stderr"])
    if measure == "entropy":
        target += f" [{record['target'] / NATS_PER_BIT:.4f} bits]"
    matched = [pair for pair in pairs.values() if pair["matched"]]
    largest = max((abs(pair["mismatch"]) for pair in matched), default=math.nan)
    seconds = record["seconds"]
    reference = record["reference"]
    source = ("given" if reference is None
              else f"mean over seeds of alpha_X={reference['alpha_X']:g}, alpha_Z={reference['alpha_Z']:g}")
    lines = [f"**{measure}** ({measure_unit}): target {target} ({source}); {len(matched)} of {len(pairs)} pairs "
             f"matched within {settings['tolerance']:g}, largest |mismatch| {largest:.4f}; {record['trials']} "
             f"trials in {seconds['measured']:.1f} s (estimated {seconds['estimated']:.1f} s).", "",
             "| seed | small_alpha_x: alpha_Z | difficulty | small_alpha_z: alpha_X | difficulty | mismatch (x - z) "
             "| matched |", "|---|---|---|---|---|---|---|"]
    notes = []
    for seed, pair in pairs.items():
        x, z = pair["small_alpha_x"], pair["small_alpha_z"]
        lines.append(f"| {seed} | {x['alpha_Z']:.4g} | {x['difficulty']:.4f} | {z['alpha_X']:.4g} | "
                     f"{z['difficulty']:.4f} | {pair['mismatch']:+.4f} | "
                     f"{'yes' if pair['matched'] else 'NO: ' + pair['reason']} |")
        notes += [f"seed {seed} {side.name} (drop {pair[side.name]['largest_decrease']:.3g})" for side in SIDES
                  if not pair[side.name]["monotone"]]
    if notes:
        lines += ["", "Not monotone in the free alpha (a matched root may not be the only one): "
                  + ", ".join(notes) + "."]
    return [*lines, ""]


def performance_markdown(entry: dict) -> list[str]:
    """The compression-performance table of one graph (entropy in nats [bits] next to the compressors' bits)."""
    log2_vocab = math.log2(entry["vocab_size"])
    lines = [f"Compression performance, mean ± SE over seeds (entropy and model in nats/token [bits]; the "
             f"compressors in bits/token, in parentheses the fraction of log2 V = {log2_vocab:.3g} bits; gzip in "
             "composable-llm's bytes/token); a calibrated row holds its matched seeds at their own alphas:", ""]
    if not entry["compression_performance"]:
        return [*lines[:-2], "Compression performance: not measured (config.calibration.compression_table is "
                "False).", ""]
    lines += ["| setting | alpha_X | alpha_Z | entropy rate | zlib-9 | bz2-9 | lzma-9 | composable-llm gzip | model |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, row in entry["compression_performance"].items():
        alphas = list(row["alphas"].values())
        cells = [f"{_pm(row[m]['mean'], row[m]['stderr'])} ({row[m]['mean'] / log2_vocab:.3f})" for m in COMPRESSORS]
        model = row["model_nats_per_token"]
        lines.append(f"| {label} | {_span([a['alpha_X'] for a in alphas])} | {_span([a['alpha_Z'] for a in alphas])} "
                     f"| {_nats_and_bits(row['entropy']['mean'], row['entropy']['stderr'])} | " + " | ".join(cells)
                     + f" | {_pm(row['gzip']['mean'], row['gzip']['stderr'])} | "
                     + (_nats_and_bits(model) if model is not None else "–") + " |")
    return [*lines, "", "model: a trained model's held-out cross-entropy (config.calibration.model_results).", ""]


def graph_markdown(graph: str, entry: dict) -> list[str]:
    """The lines of one graph's section: its pairs per measure, then its compression-performance table."""
    lines = [f"## {graph} ({entry['description']})", "",
             f"Graph seeds {entry['seeds']}, one batch of {entry['batch_size']} x {entry['length']} tokens per seed "
             "and trial (the same keys at every trial). Each seed's two sides are searched to one target, the mean "
             "difficulty of the reference setting over the seeds; a pair is matched when both sides are within the "
             "tolerance of it, and an unmatched pair is not trained by the sweep.", ""]
    for measure, record in entry["calibrations"].items():
        lines += pairs_markdown(measure, record)
    return lines + performance_markdown(entry)


def report_markdown(result: dict) -> str:
    """The calibration.md text: one section per graph."""
    lines = ["# Calibration", ""]
    for graph, entry in result["graphs"].items():
        lines += graph_markdown(graph, entry)
    return "\n".join(lines)


def plot_curves(result: dict, path: str) -> None:
    """Each seed's difficulty against the free alpha on both sides (thin lines), the target and the calibrated
    points (circles; crosses for unmatched); one panel per (graph, measure), written to `path` (PNG)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (optional dependency: the `report` extra)

    panels = [(graph, measure, record) for graph, entry in result["graphs"].items()
              for measure, record in entry["calibrations"].items()]
    figure = Figure(figsize=(5.5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (graph, measure, record) in zip(axes, panels, strict=True):
        for color, side in zip(("C0", "C1"), SIDES, strict=True):
            for index, pair in enumerate(record["pairs"].values()):
                searched = pair[side.name]
                trials = sorted(searched["evaluations"])
                axis.plot([t[0] for t in trials], [t[1] for t in trials], color=color, linewidth=0.8, alpha=0.5,
                          label=f"{side.label}: {side.free} free" if index == 0 else None)
                axis.plot([searched[side.free]], [searched["difficulty"]], "o" if pair["matched"] else "x",
                          markersize=6, fillstyle="none", color=color)
        axis.axhline(record["target"], color="gray", linestyle="--", label="target (circle: matched seed)")
        axis.set(xscale="log", xlabel="free alpha", ylabel=f"{measure} [{unit(measure)}]",
                 title=f"{graph}: {measure}, one line per seed")
        axis.legend(fontsize=8)
    figure.tight_layout()
    files.write_figure(path, figure)
