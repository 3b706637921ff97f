"""The finished runs of a sweep, read from their run directories (no JAX, no training stack).

A run directory ends in `<graph>/<side>/seed<k>/<model>/` anywhere under `WORKDIR/runs/` (the sweep
writes `WORKDIR/runs/<measure>/<graph>/<side>/seed<k>/<model>/`; older sweeps had no `<measure>/` level).
Each run is grouped by `Group`: its graph, matching measure, learner and model size. The measure is the
`<measure>/` folder when there is one (a run shared by two measures is a link in the second one's folder),
else the run's `config.json` `experiment1.cell.measure` or `calibration.measure`, else `DEFAULT_MEASURE`;
the learner and model size are `experiment1.cell.learner` and `.size` (or `model.kind` and the folder name;
`DEFAULT_LEARNER` when absent). The n-gram floors the sweep writes per seed folder are read by `load_floors`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import NamedTuple

import numpy as np

from gssm_jax.experiment1.floors import FLOOR_FILE
from gssm_jax.training import evaluation, run_directory

EXCESS = "eval/excess_loss_nats_per_token"
ENTROPY = "eval/entropy_nats_per_token"
DEFAULT_MEASURE = "entropy"  # the sweep's default calibration.measure
DEFAULT_LEARNER = "transformer"  # the only learner before config.model.kind existed
_RUN_PATH = re.compile(r"(?:^|/)(?P<graph>[^/]+)/(?P<side>[^/]+)/seed(?P<seed>\d+)/(?P<model>[^/]+)$")


class Group(NamedTuple):
    """What two runs must share to be compared: graph family, matching measure, learner, model size."""

    graph: str
    measure: str
    learner: str
    model: str


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run.

    Attributes:
      group, side, seed: where it sits in the sweep.
      path: its run directory.
      result: its `result.json`.
      tokens: float64 (evals,) training tokens seen at each eval record of `metrics.jsonl`.
      excess: float64 (evals,) held-out excess loss at those evals, nats/token.
      per_position: the arrays of `per_position.npz` (`steps`, `model_loss`, `optimal_loss`), or None.
    """

    group: Group
    side: str
    seed: int
    path: str
    result: dict
    tokens: np.ndarray
    excess: np.ndarray
    per_position: dict[str, np.ndarray] | None

    @property
    def final_excess(self) -> float:
        """Excess loss at the end of training, nats/token."""
        return float(self.result[EXCESS])

    @property
    def entropy(self) -> float:
        """Exact entropy rate of the held-out sequences, nats/token."""
        return float(self.result[ENTROPY])


def _group(path: str, graph: str, model: str, measure: str | None) -> Group:
    config_path = os.path.join(path, run_directory.CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as file:
            config = json.load(file)
    cell = config.get("experiment1", {}).get("cell", {})
    measure = measure or cell.get("measure") or config.get("calibration", {}).get("measure", DEFAULT_MEASURE)
    learner = cell.get("learner") or config.get("model", {}).get("kind", DEFAULT_LEARNER)
    return Group(graph, measure, learner, cell.get("size", model))


def load_run(path: str, measure: str | None = None) -> Run | None:
    """The finished run in `path`, or None when `path` is not a `<graph>/<side>/seed<k>/<model>` run directory.

    measure: the matching measure of the run's `runs/<measure>/` folder, if any (else read from config.json).
    """
    match = _RUN_PATH.search(path.replace(os.sep, "/"))
    if match is None or not os.path.exists(os.path.join(path, run_directory.RESULT_FILE)):
        return None
    per_position = None
    if os.path.exists(os.path.join(path, run_directory.PER_POSITION_FILE)):
        with np.load(os.path.join(path, run_directory.PER_POSITION_FILE)) as saved:
            per_position = {name: saved[name] for name in saved.files}
    evals = [record for record in run_directory.read_metrics(path) if EXCESS in record]
    return Run(_group(path, match["graph"], match["model"], measure), match["side"], int(match["seed"]), path,
               run_directory.read_result(path), np.array([record["tokens_seen"] for record in evals], np.float64),
               np.array([record[EXCESS] for record in evals], np.float64), per_position)


def _run_dirs(workdir: str) -> list[str]:
    """Every directory under `workdir/runs` that looks like `.../seed<k>/<model>` (not a seed folder's loss cache)."""
    pattern = os.path.join(workdir, "runs", "**", "seed*", "*")
    return sorted(path for path in glob.glob(pattern, recursive=True)
                  if os.path.isdir(path) and os.path.basename(path) != evaluation.OPTIMAL_CACHE_DIR)


def _folder_measure(workdir: str, path: str) -> str | None:
    """The `<measure>` of `workdir/runs/<measure>/<graph>/<side>/seed<k>/<model>`, None without that level."""
    parts = os.path.relpath(path, os.path.join(workdir, "runs")).split(os.sep)
    return parts[0] if len(parts) == 5 else None


def load_runs(workdir: str) -> list[Run]:
    """Every finished run (one with `result.json`) under `workdir/runs`, sorted by group, side and seed."""
    runs = [load_run(path, _folder_measure(workdir, path)) for path in _run_dirs(workdir)]
    return sorted((run for run in runs if run is not None), key=lambda run: (run.group, run.side, run.seed))


class FloorKey(NamedTuple):
    """Where an n-gram floor sits: the data of one (measure, graph, side, seed)."""

    measure: str
    graph: str
    side: str
    seed: int


def load_floors(workdir: str) -> dict[FloorKey, dict]:
    """`{FloorKey: the ngram.json record}` of every `workdir/runs/<measure>/<graph>/<side>/seed<k>/ngram.json`."""
    floors = {}
    for path in sorted(glob.glob(os.path.join(workdir, "runs", "*", "*", "*", "seed*", FLOOR_FILE))):
        if not os.path.exists(path):  # a link to a floor not computed yet
            continue
        measure, graph, side, seed = os.path.relpath(path, os.path.join(workdir, "runs")).split(os.sep)[:4]
        with open(path) as file:
            floors[FloorKey(measure, graph, side, int(seed.removeprefix("seed")))] = json.load(file)
    return floors


def unfinished_runs(workdir: str) -> list[str]:
    """Run directories under `workdir/runs` without `result.json` (interrupted or still training)."""
    return [path for path in _run_dirs(workdir) if not os.path.exists(os.path.join(path, run_directory.RESULT_FILE))]


def load_calibrations(workdir: str) -> dict[tuple[str, str], dict]:
    """`{(graph, measure): calibration record}` from `workdir/calibration/<graph>.<measure>.json`."""
    records = {}
    for path in sorted(glob.glob(os.path.join(workdir, "calibration", "*.json"))):
        with open(path) as file:
            record = json.load(file)
        records[record["settings"]["graph"], record["settings"]["measure"]] = record
    return records
