"""The one calibration pipeline: `config.calibration` -> each seed's pair of a graph, cached in the workdir.

`gssm-calibrate` and the Experiment 1 sweep both call `calibrate_graph`, so a calibration computed by
one is reused by the other: the record of (graph, measure) is cached in
`WORKDIR/calibration/<graph>.<measure>.json` and reused only while its `settings` (everything the result
depends on, see `calibration_settings`) equal the config's. The schema of `config.calibration` is
written once, in `gssm_jax.configs.common.calibration_config`. `run_calibration` is `gssm-calibrate`:
every graph and measure of the config, plus the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from gssm_jax import files
from gssm_jax.difficulty.sides import SIDES
from gssm_jax.errors import UserError, check_names
from gssm_jax.gssm.families import get_family
from gssm_jax.gssm.graph import GraphSpec

Log = Callable[[str], None]
# Refinement trials after the grid, per seed and side (each seed's own search), as measured in the lockstep
# calibrations of the size=cpu and size=tiny configs: used only for the time estimate logged before a calibration.
EXPECTED_REFINEMENTS = 3
# Grid points of each side timed for the estimate (a trial's cost grows with alpha: zlib, sampling).
PROBES = 2


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
    # "matching": each seed's two sides are matched to the target (a record of the older mean matching differs).
    settings = {"graph": graph, "measure": measure, "matching": "per seed", "small": calibration.small,
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
    """Both sides of every seed's pair of `graph` at equal difficulty on `measure`, from the cache or computed
    and cached.

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
    record = compute_calibration(calibration_settings(config, graph, measure), log, measurer)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, record)
    log(f"calibration {graph} ({measure}): written to {path}")
    return record


def compute_calibration(settings: dict[str, Any], log: Log = print, measurer: Any = None,
                        clock: Callable[[], float] = time.perf_counter) -> dict:
    """Runs `gssm_jax.difficulty.calibrate_pair` on the family `settings["graph"]` (see `calibration_settings`).

    Args:
      clock: seconds (a fake one in tests); the measurer's own clock times its trials for the estimate.

    Returns:
      the calibration record: `{"settings", "reference" (None for a given target), "target" (the mean over
      seeds of the reference's difficulty), "target_stderr", "unit", "trials", "seconds":
      {"estimated", "measured"}, "pairs": {"<seed>": {"small_alpha_x": {"alpha_X", "alpha_Z", "difficulty",
      "converged", "reason", "monotone", "largest_decrease", "evaluations": [[alpha, difficulty]...]},
      "small_alpha_z": {...}, "mismatch": difficulty_x - difficulty_z, "matched", "reason"}}}`; difficulties
      in `unit` (entropy in nats/token). An unmatched pair (`"matched": false`) says why in its "reason".
    """
    from gssm_jax import difficulty  # noqa: PLC0415 (JAX work only when not cached)

    start = clock()
    graph, measure = settings["graph"], settings["measure"]
    log(f"calibration {graph} ({measure}, seeds {settings['seeds']}, "
        f"{settings['batch_size']}x{settings['length']} tokens per seed)")
    if measurer is None:
        measurer = difficulty.Measurer(get_family(graph), seeds=settings["seeds"], batch_size=settings["batch_size"],
                                       length=settings["length"])
    reference = None if "target" in settings else settings.get("reference", get_family(graph).reference_alphas)
    estimated = _estimate(settings, reference, measurer, log, clock, start)
    pairs = difficulty.calibrate_pair(measurer, measure=measure, tolerance=settings["tolerance"],
                                      small=settings["small"], target=settings.get("target"), reference=reference,
                                      bounds=tuple(settings["bounds"]), grid_points=settings["grid_points"], log=log)
    unit = difficulty.unit(measure)
    for seed, pair in pairs.pairs.items():
        sides = ", ".join(f"{side.name} {side.free}={getattr(pair, side.name).alpha:.4g} -> "
                          f"{getattr(pair, side.name).value:.4f}" for side in SIDES)
        log(f"calibration {graph} ({measure}): seed {seed}: {sides}; mismatch {pair.mismatch:+.4f} {unit}"
            + ("" if pair.matched else f"; UNMATCHED: {pair.reason}"))
    measured = clock() - start
    log(f"calibration {graph} ({measure}): {len(pairs.pairs) - len(pairs.unmatched)} of {len(pairs.pairs)} pairs "
        f"matched within {settings['tolerance']:g} {unit} of the target {pairs.target:.4f}; done in {measured:.1f} s "
        f"(estimated {_seconds_text(estimated)})")
    return {"settings": settings, "reference": dict(reference) if reference else None, "target": pairs.target,
            "target_stderr": pairs.target_stderr, "unit": difficulty.MEASURES[measure], "trials": pairs.trials,
            "seconds": {"estimated": estimated, "measured": measured}, "pairs": pairs.to_json()["pairs"]}


def estimate_seconds(elapsed: float, seconds_per_seed: Mapping[str, float], seeds: int, grid_left: Mapping[str, int],
                     refining: Mapping[str, int], refinements: float = EXPECTED_REFINEMENTS) -> float:
    """The time a calibration will take: `elapsed` so far, plus for each side its compiled seconds per seed times
    the seed measurements still to come: every seed at each grid point not measured yet, then `refinements` for
    each of the `refining` seeds (those whose grid is not measured yet or misses the target within reach)."""
    return elapsed + sum(seconds * (seeds * grid_left[side] + refining[side] * refinements)
                         for side, seconds in seconds_per_seed.items())


def _estimate(settings: dict[str, Any], reference: Mapping[str, float] | None, measurer: Any, log: Log,
              clock: Callable[[], float], start: float) -> float:
    """Measures the reference and, per side, grid points (the middle ones first: a typical cost; the search reuses
    them) until `PROBES` are timed after compilation, then logs and returns the estimated total seconds (nan when
    nothing could be timed)."""
    from gssm_jax.difficulty.search import grid  # noqa: PLC0415

    measure, seeds, tolerance = settings["measure"], measurer.seeds, settings["tolerance"]
    compiling = not measurer.seconds_per_seed
    target = settings["target"] if reference is None else measurer(reference, measure).mean
    alphas = grid(settings["bounds"], settings["grid_points"])
    alphas = sorted(alphas, key=lambda alpha: abs(alphas.index(alpha) - (len(alphas) - 1) / 2))
    per_seed, grid_left, refining = {}, {}, {}
    for side in SIDES:
        points, timed = [side.alphas(alpha, settings["small"]) for alpha in alphas], []
        for point in points:
            if len(timed) == PROBES:
                break
            if not measurer.is_cached({seed: point for seed in seeds}, measure):
                measurer(point, measure)
                if len(measurer.seconds_per_seed) >= 2:  # the measurer's first measurement includes compilation
                    timed.append(measurer.seconds_per_seed[-1])
        if not timed and len(measurer.seconds_per_seed) >= 2:
            timed = [measurer.seconds_per_seed[-1]]  # the grid was measured (e.g. for another measure)
        if timed:
            per_seed[side.name] = sum(timed) / len(timed)
        grid_left[side.name] = sum(not measurer.is_cached({seed: p for seed in seeds}, measure) for p in points)
        refining[side.name] = 0
        for seed in seeds:  # a seed whose measured grid holds a match, or cannot reach the target, is done there
            if not all(measurer.is_cached({seed: point}, measure) for point in points):
                refining[side.name] += 1
                continue
            values = [measurer.per_seed({seed: point}, measure)[seed] for point in points]
            reachable = min(values) - tolerance <= target <= max(values) + tolerance
            refining[side.name] += reachable and all(abs(value - target) > tolerance for value in values)
    if len(per_seed) < len(SIDES):
        return math.nan
    estimated = estimate_seconds(clock() - start, per_seed, len(seeds), grid_left, refining)
    compiled = ", ".join(f"{seconds * len(seeds):.2f} s ({side})" for side, seconds in per_seed.items())
    first = (f"the first trial took {measurer.seconds_per_seed[0] * len(seeds):.1f} s with compilation, "
             if compiling else "")
    log(f"calibration {settings['graph']} ({measure}): {first}a compiled trial of all {len(seeds)} seeds takes "
        f"{compiled}; expect about {_seconds_text(estimated)} in all")
    return estimated


def _seconds_text(seconds: float) -> str:
    return "?" if not math.isfinite(seconds) else f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_calibration(config: ml_collections.ConfigDict, workdir: str, log: Log = print) -> dict:
    """`gssm-calibrate`: calibrates every graph of `config.calibration` on every measure, writes the report.

    Writes calibration.json, calibration.md and calibration.png (`gssm_jax.experiment1.calibration_report`) to
    `workdir`, and caches every record like the sweep does.

    Returns:
      the dict saved as calibration.json: `{"config": config.calibration, "graphs": {graph: {"description",
      "vocab_size", "seeds", "batch_size", "length", "calibrations": {measure: calibration record},
      "compression_performance": {row: {"alphas": {"<seed>": {"alpha_X", "alpha_Z"}}, "model_nats_per_token",
      measure: {"mean", "stderr", "unit"}}}}}}`; a calibrated row holds the matched seeds only.
    """
    from gssm_jax import compilation_cache, difficulty  # noqa: PLC0415 (JAX work only when called)
    from gssm_jax.experiment1 import calibration_report  # noqa: PLC0415 (matplotlib)

    check_calibration(config)
    compilation_cache.enable()
    calibration = config.calibration
    measures = tuple(calibration.measures)
    result = {"config": calibration.to_dict(), "graphs": {}}
    for graph in calibration.graphs:
        family = get_family(graph)
        measurer = difficulty.Measurer(family, seeds=calibration.seeds, batch_size=calibration.batch_size,
                                       length=calibration_length(config, graph), measures=measures)
        records = {measure: calibrate_graph(config, graph, measure, workdir, log, measurer) for measure in measures}
        reference = next(iter(records.values()))["settings"].get("reference", family.reference_alphas)
        settings = {"reference": {str(seed): dict(reference) for seed in measurer.seeds}}
        for measure, record in records.items():
            for side in SIDES:
                matched = {seed: {name: pair[side.name][name] for name in ("alpha_X", "alpha_Z")}
                           for seed, pair in record["pairs"].items() if pair["matched"]}
                if matched:
                    settings[f"{measure}/{side.name}"] = matched
        model_losses = calibration_report.read_model_results(calibration.model_results, settings)
        performance = {}
        if calibration.compression_table:
            log(f"{graph}: compression performance of every setting")
            performance = {label: difficulty.compression_performance(
                measurer, {int(seed): a for seed, a in alphas.items()}) for label, alphas in settings.items()}
        vocab_size = GraphSpec.from_config(family.config(*family.reference)).vocab_size
        result["graphs"][graph] = {
            "description": family.description, "vocab_size": vocab_size,
            "seeds": list(measurer.seeds), "batch_size": measurer.batch_size, "length": measurer.length,
            "calibrations": records,
            "compression_performance": {
                label: {"alphas": settings[label], "model_nats_per_token": model_losses.get(label),
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
