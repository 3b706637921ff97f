"""The finished runs of a sweep, read from their run directories (no JAX, no training stack).

A run directory ends in `<graph>/<side>/seed<k>/<model>/` anywhere under `WORKDIR/runs/` (the sweep
writes `WORKDIR/runs/<graph>/<side>/seed<k>/<model>/`; a layout that nests runs deeper, e.g. one folder
per matching measure, is read the same way). Each run is grouped by `Group`: its graph, matching measure
and learner (read from the run's `config.json`: `calibration.measure` and `model.kind`, defaulting to
`DEFAULT_MEASURE` and `DEFAULT_LEARNER` when absent) and its model size (the folder name).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import NamedTuple

import numpy as np

from gssm_jax.training import run_files

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


def _group(path: str, graph: str, model: str) -> Group:
    config_path = os.path.join(path, run_files.CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path) as file:
            config = json.load(file)
    measure = config.get("calibration", {}).get("measure", DEFAULT_MEASURE)
    learner = config.get("model", {}).get("kind", DEFAULT_LEARNER)
    return Group(graph, measure, learner, model)


def load_run(path: str) -> Run | None:
    """The finished run in `path`, or None when `path` is not a `<graph>/<side>/seed<k>/<model>` run directory."""
    match = _RUN_PATH.search(path.replace(os.sep, "/"))
    if match is None or not os.path.exists(os.path.join(path, run_files.RESULT_FILE)):
        return None
    per_position = None
    if os.path.exists(os.path.join(path, run_files.PER_POSITION_FILE)):
        with np.load(os.path.join(path, run_files.PER_POSITION_FILE)) as saved:
            per_position = {name: saved[name] for name in saved.files}
    evals = [record for record in run_files.read_metrics(path) if EXCESS in record]
    return Run(_group(path, match["graph"], match["model"]), match["side"], int(match["seed"]), path,
               run_files.read_result(path), np.array([record["tokens_seen"] for record in evals], np.float64),
               np.array([record[EXCESS] for record in evals], np.float64), per_position)


def _run_dirs(workdir: str) -> list[str]:
    """Every directory under `workdir/runs` that looks like `.../seed<k>/<model>`."""
    pattern = os.path.join(workdir, "runs", "**", "seed*", "*")
    return sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isdir(path))


def load_runs(workdir: str) -> list[Run]:
    """Every finished run (one with `result.json`) under `workdir/runs`, sorted by group, side and seed."""
    runs = [run for run in map(load_run, _run_dirs(workdir)) if run is not None]
    return sorted(runs, key=lambda run: (run.group, run.side, run.seed))


def unfinished_runs(workdir: str) -> list[str]:
    """Run directories under `workdir/runs` without `result.json` (interrupted or still training)."""
    return [path for path in _run_dirs(workdir) if not os.path.exists(os.path.join(path, run_files.RESULT_FILE))]


def load_calibrations(workdir: str) -> dict[tuple[str, str], dict]:
    """`{(graph, measure): calibration record}` from `workdir/calibration/<graph>.<measure>.json`."""
    records = {}
    for path in sorted(glob.glob(os.path.join(workdir, "calibration", "*.json"))):
        with open(path) as file:
            record = json.load(file)
        records[record["settings"]["graph"], record["settings"]["measure"]] = record
    return records
