"""The one calibration pipeline: `config.calibration` -> both sides' alphas of a graph, cached in the workdir.

`gssm-calibrate` and the Experiment 1 sweep both call `calibrate_graph`, so a calibration computed by
one is reused by the other: the record of (graph, measure) is cached in
`WORKDIR/calibration/<graph>.<measure>.json` and reused only while its `settings` (everything the result
depends on, see `calibration_settings`) equal the config's. The schema of `config.calibration` is
written once, in `gssm_jax.configs.common.calibration_config`. `run_calibration` is `gssm-calibrate`:
every graph and measure of the config, plus the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections

from gssm_jax import files
from gssm_jax.difficulty.sides import SIDES
from gssm_jax.errors import UserError, check_names
from gssm_jax.gssm.families import get_family
from gssm_jax.gssm.graph import GraphSpec

Log = Callable[[str], None]
# Bracketing steps after the grid, per side, in the calibrations recorded in benchmarks/RESULTS.md (19-26
# trials per measure with a 6-point grid): used only for the time estimate logged before a calibration.
EXPECTED_REFINEMENTS = 5


def check_calibration(config: ml_collections.ConfigDict, graphs_field: str = "config.calibration.graphs") -> None:
    """Refuses a `config.calibration` that cannot run, before anything is sampled or compiled.

    Args:
      graphs_field: the field the graphs come from, named in the error (the sweep's are config.experiment1.graphs).

    Raises:
      UserError: one line naming the field and the fix.
    """
    from gssm_jax.difficulty.measures import MEASURES  # noqa: PLC0415 (keeps this module free of JAX)

    calibration = config.calibration
    graphs, measures, seeds = tuple(calibration.graphs), tuple(calibration.measures), tuple(calibration.seeds)
    check_names(graphs_field, graphs, get_family)
    unknown = [measure for measure in measures if measure not in MEASURES]
    if not measures or unknown:
        raise UserError(f"config.calibration.measures={measures}: valid measures are {', '.join(MEASURES)}")
    if len(set(seeds)) < 2:
        raise UserError(f"config.calibration.seeds={seeds}: give at least 2 distinct graph seeds (the standard "
                        "error of a difficulty is over seeds)")
    if calibration.target is not None and len(measures) != 1:
        raise UserError("config.calibration.target is in one measure's unit; give a single measure "
                        "(--config.calibration.measures=entropy,)")
    for field, value, smallest in (("batch_size", calibration.batch_size, 1), ("length", calibration.length, 0),
                                   ("grid_points", calibration.grid_points, 2)):
        if value < smallest:
            raise UserError(f"config.calibration.{field}={value} must be >= {smallest}")
    if not 0 < calibration.min_alpha < calibration.max_alpha or not calibration.small > 0:
        raise UserError(f"config.calibration: need 0 < min_alpha ({calibration.min_alpha}) < max_alpha "
                        f"({calibration.max_alpha}) and small ({calibration.small}) > 0")


def calibration_path(workdir: str, graph: str, measure: str) -> str:
    """The cache file of the calibration of `graph` on `measure`."""
    return os.path.join(workdir, "calibration", f"{graph}.{measure}.json")


def calibration_length(config: ml_collections.ConfigDict, graph: str) -> int:
    """Tokens per sequence of the calibration of `graph`: `config.calibration.length`, or if 0 the graph's
    training length (`config.experiment1.lengths`) or, without an experiment, the family's seed length."""
    if config.calibration.length:
        return int(config.calibration.length)
    if "experiment1" in config:
        return int(config.experiment1.lengths[graph])
    return get_family(graph).length


def calibration_settings(config: ml_collections.ConfigDict, graph: str, measure: str) -> dict[str, Any]:
    """What the calibration of `graph` on `measure` depends on (a cached record is reused only when equal)."""
    calibration = config.calibration
    settings = {"graph": graph, "measure": measure, "small": calibration.small,
                "seeds": [int(seed) for seed in calibration.seeds], "batch_size": calibration.batch_size,
                "length": calibration_length(config, graph), "tolerance": calibration.tolerance[measure],
                "grid_points": calibration.grid_points, "bounds": [calibration.min_alpha, calibration.max_alpha]}
    if calibration.target is not None:
        settings["target"] = calibration.target
    reference = (calibration.reference_alpha_x, calibration.reference_alpha_z)
    if reference != (None, None):
        family_reference = get_family(graph).reference
        settings["reference"] = {"alpha_X": reference[0] if reference[0] is not None else family_reference[0],
                                 "alpha_Z": reference[1] if reference[1] is not None else family_reference[1]}
    return settings


def cached_record(config: ml_collections.ConfigDict, graph: str, measure: str, workdir: str) -> dict | None:
    """The cached record of (graph, measure) if its settings equal the config's, else None."""
    path = calibration_path(workdir, graph, measure)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        record = json.load(file)
    return record if record.get("settings") == calibration_settings(config, graph, measure) else None


def calibrate_graph(config: ml_collections.ConfigDict, graph: str, measure: str, workdir: str, log: Log = print,
                    measurer: Any = None) -> dict:
    """Both sides' alphas of `graph` at equal difficulty on `measure`, from the cache or computed and cached.

    Args:
      measurer: a `gssm_jax.difficulty.Measurer` of this graph at the config's seeds and batch shape, to share
        its sampled batches between measures (default: a new one).

    Returns:
      the calibration record (see `compute_calibration`).
    """
    cached = cached_record(config, graph, measure, workdir)
    if cached is not None:
        return cached
    path = calibration_path(workdir, graph, measure)
    if os.path.exists(path):
        log(f"calibration {graph} ({measure}): cached settings differ from the config, recalibrating")
    start = time.time()
    record = compute_calibration(calibration_settings(config, graph, measure), log, measurer)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, record)
    log(f"calibration {graph} ({measure}): done in {time.time() - start:.0f} s -> {path}")
    return record


def compute_calibration(settings: dict[str, Any], log: Log = print, measurer: Any = None) -> dict:
    """Runs `gssm_jax.difficulty.calibrate_pair` on the family `settings["graph"]` (see `calibration_settings`).

    Returns:
      `{"settings", "target", "target_stderr", "unit", "alphas": {side: {"alpha_X", "alpha_Z"}},
      "difficulty": {side: {"mean", "stderr"}}, "pair": CalibratedPair.to_json()}`; difficulty in `unit`.
    """
    from gssm_jax import difficulty  # noqa: PLC0415 (JAX work only when not cached)

    graph, measure = settings["graph"], settings["measure"]
    log(f"calibration {graph} ({measure}, seeds {settings['seeds']}, "
        f"{settings['batch_size']}x{settings['length']} tokens per seed)")
    if measurer is None:
        measurer = difficulty.Measurer(get_family(graph), seeds=settings["seeds"], batch_size=settings["batch_size"],
                                       length=settings["length"])
    _log_estimate(settings, measurer, log)
    pair = difficulty.calibrate_pair(measurer, measure=measure, tolerance=settings["tolerance"],
                                      small=settings["small"], target=settings.get("target"),
                                      reference=settings.get("reference"), bounds=tuple(settings["bounds"]),
                                      grid_points=settings["grid_points"], log=log)
    record = {"settings": settings, "target": pair.target, "target_stderr": pair.target_stderr,
              "unit": difficulty.MEASURES[measure], "alphas": {}, "difficulty": {}, "pair": pair.to_json()}
    for side in SIDES:
        result = getattr(pair, side.name)
        record["alphas"][side.name] = side.alphas(result.alpha, settings["small"])
        record["difficulty"][side.name] = {"mean": result.mean, "stderr": result.stderr}
        log(f"calibration {graph} ({measure}): {side.name}: {side.free}={result.alpha:.4g} -> {result.mean:.4f} +- "
            f"{result.stderr:.4f} (target {pair.target:.4f}, converged={result.converged})")
    return record


def _log_estimate(settings: dict[str, Any], measurer: Any, log: Log) -> None:
    """Times the first trial (the reference setting, kept in the measurer's cache) and logs the total to expect."""
    if "target" in settings:
        return
    reference = settings.get("reference", get_family(settings["graph"]).reference_alphas)
    start = time.time()
    measurer(reference, settings["measure"])
    seconds = time.time() - start
    trials = 1 + len(SIDES) * (settings["grid_points"] + EXPECTED_REFINEMENTS)
    log(f"calibration {settings['graph']} ({settings['measure']}): the first trial took {seconds:.0f} s (with "
        f"compilation, {len(measurer.measures) or 1} measure(s)); ~{trials} trials -> about "
        f"{trials * seconds / 60:.0f} min in all (less where settings are cached)")


def run_calibration(config: ml_collections.ConfigDict, workdir: str, log: Log = print) -> dict:
    """`gssm-calibrate`: calibrates every graph of `config.calibration` on every measure, writes the report.

    Writes calibration.json, calibration.md and calibration.png (`gssm_jax.experiment1.calibration_report`) to
    `workdir`, and caches every record like the sweep does.

    Returns:
      the dict saved as calibration.json: `{"config": config.calibration, "graphs": {graph: {"description",
      "vocab_size", "seeds", "batch_size", "length", "pairs": {measure: calibration record},
      "compression_performance": {row: {"alphas", "model_bits_per_token", measure: {"mean", "stderr", "unit"}}}}}}`.
    """
    from gssm_jax import difficulty  # noqa: PLC0415 (JAX work only when called)
    from gssm_jax.experiment1 import calibration_report  # noqa: PLC0415 (matplotlib)

    check_calibration(config)
    calibration = config.calibration
    measures = tuple(calibration.measures)
    result = {"config": calibration.to_dict(), "graphs": {}}
    for graph in calibration.graphs:
        family = get_family(graph)
        measurer = difficulty.Measurer(family, seeds=calibration.seeds, batch_size=calibration.batch_size,
                                       length=calibration_length(config, graph), measures=measures)
        pairs = {measure: calibrate_graph(config, graph, measure, workdir, log, measurer) for measure in measures}
        reference = next(iter(pairs.values()))["settings"].get("reference", family.reference_alphas)
        settings = {"reference": reference, **{f"{measure}/{side.name}": record["alphas"][side.name]
                                               for measure, record in pairs.items() for side in SIDES}}
        model_losses = calibration_report.read_model_results(calibration.model_results, settings)
        performance = {}
        if calibration.compression_table:
            log(f"{graph}: compression performance of every setting")
            performance = {label: difficulty.compression_performance(measurer, alphas)
                           for label, alphas in settings.items()}
        vocab_size = GraphSpec.from_config(family.config(*family.reference)).vocab_size
        result["graphs"][graph] = {
            "description": family.description, "vocab_size": vocab_size,
            "seeds": list(measurer.seeds), "batch_size": measurer.batch_size, "length": measurer.length,
            "pairs": pairs,
            "compression_performance": {
                label: {"alphas": settings[label], "model_bits_per_token": model_losses.get(label),
                        **{m: {"mean": d.mean, "stderr": d.stderr, "unit": difficulty.MEASURES[m]}
                           for m, d in row.items()}}
                for label, row in performance.items()},
        }
    os.makedirs(workdir, exist_ok=True)
    files.write_json(os.path.join(workdir, "calibration.json"), result)
    markdown = calibration_report.report_markdown(result)
    files.write_text(os.path.join(workdir, "calibration.md"), markdown)
    calibration_report.plot_curves(result, os.path.join(workdir, "calibration.png"))
    log(markdown)
    return result
