"""The sweep's learning rate: a small grid tried on a validation split, one rate per (measure, graph, model entry).

For every (measure, graph, model entry) the first `config.experiment1.tuning_seeds` seeds of every side train at
every peak rate of `config.experiment1.learning_rates` (tuning cells, `WORKDIR/tuning/...`). `choose` reads each
run's final validation loss (`eval/validation_loss_nats_per_token`: sequences of the training stream that no step
trained on, never the held-out set), averages it over the tuning runs of a rate, and keeps the rate with the
lowest mean; a run that failed (e.g. diverged) counts as +inf. Every seed's main run then trains at that rate,
and the tuning run at the chosen rate *is* the main run of its seed (linked, not trained again). The choice is
written to `WORKDIR/learning_rates.json`:

    {"<measure>/<graph>/<model>": {"grid": [rate, ...], "seeds": [k, ...],
                                   "validation_loss_nats_per_token": {"<rate>": mean or null}, "chosen": rate}}

A grid of one rate trains no tuning runs: that rate is the choice.
"""

from __future__ import annotations

import dataclasses
import math
import os

import ml_collections
import numpy as np

from gssm_jax import files
from gssm_jax.experiment1.plan import Cell
from gssm_jax.training import run_directory

LEARNING_RATES_FILE = "learning_rates.json"
VALIDATION = "eval/validation_loss_nats_per_token"


def learning_rates(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The grid of peak learning rates, sorted."""
    return tuple(sorted(float(rate) for rate in config.experiment1.learning_rates))


def tuning_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The seeds the grid is tried on: the first `tuning_seeds` of the sweep's (none with a single rate)."""
    if len(learning_rates(config)) < 2:
        return ()
    return tuple(int(seed) for seed in config.experiment1.seeds[:config.experiment1.tuning_seeds])


def key(cell: Cell) -> str:
    """The (measure, graph, model entry) one rate is chosen for."""
    return f"{cell.measure}/{cell.graph}/{cell.model}"


def tuning_cells(config: ml_collections.ConfigDict, cells: list[Cell]) -> list[Cell]:
    """One tuning cell per rate of the grid for every main cell of a tuning seed."""
    seeds = tuning_seeds(config)
    return [dataclasses.replace(cell, learning_rate=rate) for cell in cells if cell.seed in seeds
            for rate in learning_rates(config)]


def _validation_loss(run_dir: str) -> float:
    """The finished run's final validation loss, +inf when it has none (failed, diverged, unfinished)."""
    if not run_directory.is_finished(run_dir):
        return math.inf
    value = run_directory.read_result(run_dir).get(VALIDATION)
    return float(value) if value is not None and math.isfinite(value) else math.inf


def choose(config: ml_collections.ConfigDict, workdir: str, cells: list[Cell]) -> dict[str, float]:
    """`{key: chosen rate}` for every (measure, graph, model entry) of the main `cells`; writes learning_rates.json.

    With a grid of one rate every key gets it (nothing is written).
    """
    grid, seeds = learning_rates(config), tuning_seeds(config)
    keys = sorted({key(cell) for cell in cells})
    if not seeds:
        return {name: grid[len(grid) // 2] for name in keys}
    record, chosen = {}, {}
    for name in keys:
        tuned = [cell for cell in tuning_cells(config, cells) if key(cell) == name]
        means = {rate: float(np.mean([_validation_loss(cell.run_dir(workdir)) for cell in tuned
                                      if cell.learning_rate == rate])) for rate in grid}
        chosen[name] = min(grid, key=lambda rate: (means[rate], rate))
        record[name] = {"grid": list(grid), "seeds": list(seeds),
                        "validation_loss_nats_per_token": {f"{rate:g}": means[rate] if math.isfinite(means[rate])
                                                           else None for rate in grid},
                        "chosen": chosen[name]}
    files.write_json(os.path.join(workdir, LEARNING_RATES_FILE), record)
    return chosen
