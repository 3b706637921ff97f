"""What a sweep wrote, read for the report: finished runs, n-gram baselines, calibrations, learning-rate choices.

No JAX, no training stack. The files, each written by one module:

* runs: `WORKDIR/runs/<measure>/<graph>/<side>/seed<k>/<model entry>/`, read through
  `gssm_jax.training.run_directory.read_run`; each run's group (`Group`: graph, matching measure, learner,
  model size) is its `<measure>/` folder (a run shared by two measures is a link in the second one's folder)
  and its config's `experiment1.cell` (`learner`, `size`), which the sweep writes;
* baselines (`floors`): `<seed folder>/ngram.json`, one per (measure, graph, side, seed): the n-gram model,
  the unigram model, the memorisation fractions and the n-gram curve (`load_floors`);
* calibrations (`calibration`): `WORKDIR/calibration/<graph>.<measure>.json`, each seed's pair and its mismatch;
* learning rates (`tuning`): `WORKDIR/learning_rates.json`, the grid and the choice per
  `<measure>/<graph>/<model entry>` (`load_learning_rates`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import NamedTuple

import numpy as np

from gssm_jax.errors import UserError
from gssm_jax.experiment1.floors import FLOOR_FILE
from gssm_jax.training import evaluation, run_directory

EXCESS = "eval/excess_loss_nats_per_token"
EXCESS_STDERR = "eval/excess_loss_standard_error"
ENTROPY = "eval/entropy_nats_per_token"
LEARNING_RATES_FILE = "learning_rates.json"


def _read_json(path: str):
    with open(path) as file:
        return json.load(file)


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
      group, side, seed, entry: where it sits in the sweep (`entry`: the model entry, its folder name).
      path: its run directory.
      result: its `result.json` (`cooldowns` and `learning_rate`, `gssm_jax.training.run_directory`).
      tokens: float64 (evals,) training tokens seen at each eval record.
      excess: float64 (evals,) held-out excess loss at those evals, nats/token.
      per_position: the arrays of `per_position.npz` (`steps`, `model_loss`, `optimal_loss`), or None.
      start: where its sequences start (`config.data.initial_state`, with the burn-in of "stationary").
    """

    group: Group
    side: str
    seed: int
    entry: str
    path: str
    result: dict
    tokens: np.ndarray
    excess: np.ndarray
    per_position: dict[str, np.ndarray] | None
    start: str = "zeros"

    @property
    def final_excess(self) -> float:
        """Excess loss at the end of training, nats/token."""
        return float(self.result[EXCESS])

    @property
    def entropy(self) -> float:
        """Exact entropy rate of the held-out sequences, nats/token."""
        return float(self.result[ENTROPY])

    @property
    def cooldowns(self) -> list[dict]:
        """`result.json["cooldowns"]` sorted by step, [] for a run without cool-down branches."""
        return sorted(self.result.get("cooldowns") or [], key=lambda record: record["step"])


def _parts(workdir: str, path: str) -> list[str]:
    return os.path.relpath(path, os.path.join(workdir, "runs")).split(os.sep)


def _run_dirs(workdir: str) -> list[str]:
    """Every `runs/<measure>/<graph>/<side>/seed<k>/<entry>` directory (not a seed folder's loss cache)."""
    pattern = os.path.join(workdir, "runs", "*", "*", "*", "seed*", "*")
    return sorted(path for path in glob.glob(pattern) if os.path.isdir(path)
                  and os.path.basename(path) != evaluation.OPTIMAL_CACHE_DIR
                  and _parts(workdir, path)[3].removeprefix("seed").isdigit())


def load_run(workdir: str, path: str) -> Run | None:
    """The finished run in `path` (a directory of `_run_dirs(workdir)`), None while it is unfinished."""
    measure, graph, side, seed, entry = _parts(workdir, path)
    if not run_directory.is_finished(path):
        return None
    files = run_directory.read_run(path)
    cell = (files.config or {}).get("experiment1", {}).get("cell")
    if not cell:
        raise UserError(f"{path}/{run_directory.CONFIG_FILE} has no experiment1.cell: not a run of the sweep; move it "
                        f"out of {os.path.join(workdir, 'runs')}")
    evals = [record for record in files.evals if EXCESS in record]
    tokens = np.array([record["tokens_seen"] for record in evals], np.float64)
    excess = np.array([record[EXCESS] for record in evals], np.float64)
    data = files.config.get("data", {})
    start = data.get("initial_state", "zeros")
    start += (f" after {data.get('burn_in')} unobserved steps" if start == "stationary" else
              " (every previous latent value 0, composable-llm's)")
    return Run(Group(graph, measure, cell["learner"], cell["size"]), side, int(seed.removeprefix("seed")), entry,
               path, files.result, tokens, excess, files.per_position, start)


def load_runs(workdir: str) -> list[Run]:
    """Every finished run under `workdir/runs`, sorted by group, side and seed."""
    runs = [load_run(workdir, path) for path in _run_dirs(workdir)]
    return sorted((run for run in runs if run is not None), key=lambda run: (run.group, run.side, run.seed))


def unfinished_runs(workdir: str) -> list[str]:
    """Run directories under `workdir/runs` without a result (interrupted or still training)."""
    return [path for path in _run_dirs(workdir) if not run_directory.is_finished(path)]


class FloorKey(NamedTuple):
    """Where an n-gram baseline sits: the data of one (measure, graph, side, seed)."""

    measure: str
    graph: str
    side: str
    seed: int


def load_floors(workdir: str) -> dict[FloorKey, dict]:
    """`{FloorKey: the ngram.json record}` of every `workdir/runs/<measure>/<graph>/<side>/seed<k>/ngram.json`."""
    floors = {}
    for path in sorted(glob.glob(os.path.join(workdir, "runs", "*", "*", "*", "seed*", FLOOR_FILE))):
        if os.path.exists(path):  # else a link to a baseline not computed yet
            measure, graph, side, seed = _parts(workdir, path)[:4]
            floors[FloorKey(measure, graph, side, int(seed.removeprefix("seed")))] = _read_json(path)
    return floors


def load_calibrations(workdir: str) -> dict[tuple[str, str], dict]:
    """`{(graph, measure): calibration record}` from `workdir/calibration/<graph>.<measure>.json`."""
    records = {}
    for path in sorted(glob.glob(os.path.join(workdir, "calibration", "*.*.json"))):
        record = _read_json(path)
        records[record["settings"]["graph"], record["settings"]["measure"]] = record
    return records


def load_learning_rates(workdir: str) -> dict[str, dict]:
    """`{"<measure>/<graph>/<model entry>": {"grid", "seeds", "validation_loss_nats_per_token", "chosen"}}`, or {}."""
    path = os.path.join(workdir, LEARNING_RATES_FILE)
    return _read_json(path) if os.path.exists(path) else {}
