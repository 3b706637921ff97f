"""Calibrates the Experiment 1 pair of a graph family on each measure; writes JSON, markdown and a PNG.

  python -m experiments.calibrate --config=configs/calibrate.py:graph=four_by_four --workdir=/tmp/cal_4x4

For each measure: the target is the difficulty of the reference setting (or config.target); the small
alpha_X side gets alpha_Z calibrated and the small alpha_Z side gets alpha_X calibrated. Then a
compression-performance table compares, at every setting, the entropy rate with zlib, bz2 and lzma
(and a trained model's cross-entropy when config.model_results names its result.json).
Outputs in the workdir: calibration.json, calibration.md, calibration.png.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gssm_jax import files
from gssm_jax.cli import common as cli  # noqa: E402
from gssm_jax.difficulty import (  # noqa: E402  # noqa: E402
    MEASURES,
    NATS_PER_BIT,
    CalibratedPair,
    Measurer,
    calibrate_pair,
    check_measure,
    compression_performance,
)
from gssm_jax.model.families import get_family  # noqa: E402
from gssm_jax.model.graph import GraphSpec  # noqa: E402
from gssm_jax.training import run_files as metrics

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/calibrate.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (overrides config.workdir).")
flags.mark_flags_as_required(["config"])
MODEL_LOSS_KEY = "eval/loss_nats_per_token"


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print) -> dict:
    """Runs the calibration of `config` and writes calibration.{json,md,png} to `workdir`.

    Returns:
      the dict saved as calibration.json.
    """
    family = get_family(config.graph)
    measures = [m.strip() for m in config.measures.split(",") if m.strip()]
    for measure in measures:
        check_measure(measure)
    if config.target is not None and len(measures) != 1:
        raise ValueError("config.target is in one measure's unit; give a single measure (config.measures=entropy)")
    measurer = Measurer(family, seeds=range(config.seeds), batch_size=config.batch_size, length=config.length)
    reference = {"alpha_X": config.reference_alpha_x, "alpha_Z": config.reference_alpha_z}
    pairs: dict[str, CalibratedPair] = {}
    for measure in measures:
        pairs[measure] = calibrate_pair(
            measurer, measure=measure, tolerance=config.search.tolerance[measure], small=config.small,
            target=config.target, reference=reference, bounds=(config.search.min_alpha, config.search.max_alpha),
            grid_points=config.search.grid_points, log=log)
    settings = {"reference": reference}
    for measure, pair in pairs.items():
        for side in ("small_alpha_x", "small_alpha_z"):
            calibrated = getattr(pair, side)
            settings[f"{measure}/{side}"] = {**calibrated.fixed, calibrated.free: calibrated.alpha}
    model_losses = read_model_results(config.model_results, settings)
    performance = {}
    if config.compression_table:
        log("compression performance of every setting")
        performance = {label: compression_performance(measurer, alphas) for label, alphas in settings.items()}
    result = {
        "graph": family.name, "description": family.description, "seeds": list(measurer.seeds),
        "batch_size": config.batch_size, "length": config.length, "config": config.to_dict(),
        "pairs": {measure: pair.to_json() for measure, pair in pairs.items()},
        "compression_performance": {
            label: {"alphas": settings[label], "model_bits_per_token": model_losses.get(label),
                    **{m: {"mean": d.mean, "stderr": d.stderr, "unit": MEASURES[m]} for m, d in row.items()}}
            for label, row in performance.items()},
    }
    os.makedirs(workdir, exist_ok=True)
    files.write_json(os.path.join(workdir, "calibration.json"), result)
    vocab_size = GraphSpec.from_config(family.config(*family.reference)).vocab_size
    markdown = report_markdown(result, math.log2(vocab_size))
    files.write_text(os.path.join(workdir, "calibration.md"), markdown)
    plot_curves(pairs, os.path.join(workdir, "calibration.png"), title=family.name)
    log(markdown)
    return result


def read_model_results(spec: str, settings: Mapping[str, dict]) -> dict[str, float]:
    """`row=path,...` -> {row: model cross-entropy in bits/token} from each run's result.json."""
    losses = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        row, separator, path = item.partition("=")
        if not separator or row not in settings:
            raise ValueError(f"config.model_results item {item!r}: expected row=path with row in {', '.join(settings)}")
        path = os.path.join(path, metrics.RESULT_FILE) if os.path.isdir(path) else path
        with open(path) as file:
            result = json.load(file)
        if MODEL_LOSS_KEY not in result:
            raise ValueError(f"config.model_results: {path} has no {MODEL_LOSS_KEY!r}; is it a training run's result?")
        losses[row] = result[MODEL_LOSS_KEY] / NATS_PER_BIT
    return losses


def _pm(mean: float, stderr: float) -> str:
    return f"{mean:.4f} ± {stderr:.4f}" if math.isfinite(stderr) else f"{mean:.4f}"


def report_markdown(result: dict, log2_vocab: float) -> str:
    """The calibration.md text: the pairs per measure, then the compression-performance table."""
    lines = [f"# Calibration: {result['graph']} ({result['description']})", "",
             f"Graph seeds {result['seeds']}, one batch of {result['batch_size']} x {result['length']} tokens per "
             "seed and trial (the same keys at every trial). ± is the standard error over seeds.", "",
             "| measure | side | alpha_X | alpha_Z | difficulty | target | SE of log10 alpha | converged | monotone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for measure, pair in result["pairs"].items():
        for side in ("small_alpha_x", "small_alpha_z"):
            c = pair[side]
            alphas = {**c["fixed"], c["free"]: c["alpha"]}
            monotone = "yes" if c["monotone"] else f"no (drop {c['largest_decrease']:.3g})"
            lines.append(f"| {measure} ({pair['unit'].split(' ')[0]}) | {side} | {alphas['alpha_X']:.4g} | "
                         f"{alphas['alpha_Z']:.4g} | {_pm(c['mean'], c['stderr'])} | "
                         f"{_pm(pair['target'], pair['target_stderr'])} | {c['log10_alpha_stderr']:.3f} | "
                         f"{'yes' if c['converged'] else 'NO'} | {monotone} |")
    lines += ["", f"## Compression performance (bits/token; in parentheses: fraction of log2 V = {log2_vocab:.3g})",
              "", "| setting | alpha_X | alpha_Z | entropy rate | zlib-9 | bz2-9 | lzma-9 | seed gzip (bytes/token) "
              "| model |",
              "|---|---|---|---|---|---|---|---|---|"]
    if not result["compression_performance"]:
        lines[-4:] = ["(not measured: config.compression_table is False)"]
    for label, row in result["compression_performance"].items():
        cells = [f"{_pm(row[m]['mean'], row[m]['stderr'])} ({row[m]['mean'] / log2_vocab:.3f})"
                 for m in ("entropy", "zlib", "bz2", "lzma")]
        model = row["model_bits_per_token"]
        lines.append(f"| {label} | {row['alphas']['alpha_X']:.4g} | {row['alphas']['alpha_Z']:.4g} | "
                     + " | ".join(cells) + f" | {_pm(row['gzip']['mean'], row['gzip']['stderr'])} | "
                     + (f"{model:.4f}" if model is not None else "–") + " |")
    lines += ["", "model: a trained model's held-out cross-entropy (config.model_results), bits/token.", ""]
    return "\n".join(lines)


def plot_curves(pairs: Mapping[str, CalibratedPair], path: str, title: str) -> None:
    """One panel per measure: difficulty vs the free alpha for both sides, the target, the calibrated points."""
    figure, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4), squeeze=False)
    for axis, (measure, pair) in zip(axes[0], pairs.items(), strict=True):
        for side, label in ((pair.small_alpha_x, "small alpha_X, alpha_Z free"),
                            (pair.small_alpha_z, "small alpha_Z, alpha_X free")):
            evaluations = side.evaluations
            line = axis.errorbar([e.alpha for e in evaluations], [e.mean for e in evaluations],
                                 yerr=[0 if math.isnan(e.stderr) else e.stderr for e in evaluations], marker=".",
                                 capsize=2, label=label)
            axis.plot([side.alpha], [side.mean], "o", markersize=9, fillstyle="none", color=line[0].get_color())
        axis.axhline(pair.target, color="gray", linestyle="--", label="target")
        axis.set(xscale="log", xlabel="free alpha", ylabel=f"{measure} [{MEASURES[measure].split(' ')[0]}]",
                 title=f"{title}: {measure}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    workdir = cli.resolve_workdir(config.workdir, _WORKDIR.value)
    logging.info("The config:\n%s", config)
    try:
        run(config, workdir, log=logging.info)
    except ValueError as error:  # unreachable target, bad measure or model_results: one line
        raise SystemExit(f"error: {' '.join(str(error).split())}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
