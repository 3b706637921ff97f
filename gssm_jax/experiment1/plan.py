"""The plan of the Experiment 1 sweep: its cells, their run directories and training configs.

A *cell* is (matching measure, graph family, side, graph seed, model entry); its run directory is
`WORKDIR/runs/<measure>/<graph>/<side>/seed<k>/<model>/` (the run directory format of `gssm_jax.training`),
where `<model>` names an entry of `config.experiment1.models` (a learner at a model size,
`gssm_jax.experiment1.learners`). A *tuning* cell also names a peak learning rate; its run directory is
`WORKDIR/tuning/<measure>/<graph>/<side>/seed<k>/<model>/lr<rate>/` (`gssm_jax.experiment1.tuning`).
A run whose `result.json` exists is finished. A run directory trained with different settings (e.g. after a
calibration change) is an error, so results of two configurations never mix in one report.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from gssm_jax.errors import UserError
from gssm_jax.experiment1.learners import resolved_model
from gssm_jax.gssm.families import get_family
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.training import run_directory


class SweepError(UserError):
    """A sweep that cannot continue safely (stale run directories, failed runs); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the sweep: the sides of `measure`'s pair of `graph`, graph seed `seed`, learner `model`."""

    measure: str
    graph: str
    side: str
    seed: int
    model: str
    learning_rate: float | None = None  # a tuning run at this peak rate; None: a main run, at the chosen rate

    @property
    def name(self) -> str:
        name = f"{self.measure}/{self.graph}/{self.side}/seed{self.seed}/{self.model}"
        return name if self.learning_rate is None else f"tuning/{name}/lr{self.learning_rate:g}"

    @property
    def program(self) -> tuple[str, str]:
        """Cells with equal programs (graph family, model entry: the same length, learner and shapes) differ only in
        kernels, seeds and learning rate, so they can train as one ensemble."""
        return self.graph, self.model

    def seed_dir(self, workdir: str) -> str:
        """The folder of this (measure, graph, side, seed): every learner's run, and the n-gram floor."""
        return os.path.join(workdir, "runs", self.measure, self.graph, self.side, f"seed{self.seed}")

    def run_dir(self, workdir: str) -> str:
        if self.learning_rate is None:
            return os.path.join(self.seed_dir(workdir), self.model)
        return os.path.join(workdir, "tuning", self.measure, self.graph, self.side, f"seed{self.seed}", self.model,
                            f"lr{self.learning_rate:g}")

    def main(self) -> Cell:
        """The main cell of the same (measure, graph, side, seed, model)."""
        return dataclasses.replace(self, learning_rate=None)


def plan_cells(config: ml_collections.ConfigDict) -> list[Cell]:
    """Every cell of the config, measure- then graph-major (measures x graphs x sides x seeds x models)."""
    sweep = config.experiment1
    return [Cell(measure, graph, side, int(seed), model) for measure in config.calibration.measures
            for graph in sweep.graphs for side in sweep.sides for seed in sweep.seeds for model in sweep.models]


def run_config(config: ml_collections.ConfigDict, cell: Cell, alphas: dict[str, float], workdir: str,
               learning_rate: float | None = None) -> ml_collections.ConfigDict:
    """The training config of one cell: `config`'s training fields with the cell's graph, seeds, model and peak
    learning rate (the tuning cell's own, else `learning_rate`, else config.optimizer.learning_rate).

    `run.experiment1.cell` records where the run sits in the sweep (measure, graph, side, seed, model entry,
    its size and learner kind) for the report.
    """
    run = ml_collections.ConfigDict(config.to_dict())
    run.graph = get_family(cell.graph).config(alphas["alpha_X"], alphas["alpha_Z"])
    run.seed = cell.seed
    run.data.length = config.experiment1.lengths[cell.graph]
    # Seed k on both sides shares kernel key, data stream and initialisation: a paired design.
    run.data.data_seed = config.data.data_seed + cell.seed
    run.model.init_seed = cell.seed
    entry = config.experiment1.models[cell.model]
    run.model.update(resolved_model(entry, config.model, GraphSpec.from_config(run.graph).vocab_size))
    rate = cell.learning_rate if cell.learning_rate is not None else learning_rate
    if rate is not None:
        run.optimizer.learning_rate = float(rate)
    run.experiment1.cell = {"measure": cell.measure, "graph": cell.graph, "side": cell.side, "seed": cell.seed,
                            "model": cell.model, "size": entry["size"], "learner": entry["kind"]}
    run.workdir = cell.run_dir(workdir)
    return run


def _signature(config: dict) -> dict:
    """The fields that make two runs comparable (a finished run with other values would corrupt the report)."""
    graph = GraphSpec.from_config(config["graph"])
    return {"graph": [(node.name, node.states, round(node.alpha, 12), node.parents) for node in graph.nodes],
            "seed": config["seed"], "length": config["data"]["length"], "batch_size": config["data"]["batch_size"],
            "model": {"kind": config["model"].get("kind", "transformer"),
                      **{key: config["model"][key] for key in ("width", "depth", "heads")}},
            "num_steps": config["train"]["num_steps"], "learning_rate": config["optimizer"]["learning_rate"]}


def check_run_dir(run: ml_collections.ConfigDict) -> None:
    """Raises SweepError when `run.workdir` already holds a run trained with different settings."""
    path = os.path.join(run.workdir, run_directory.CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as file:
        existing = _signature(json.load(file))
    planned = _signature(json.loads(run.to_json()))
    differing = sorted(key for key in planned if planned[key] != existing.get(key))
    if differing:
        raise SweepError(f"{run.workdir} was trained with other {', '.join(differing)} than this config plans "
                         f"(e.g. after a calibration change); use a new --workdir or delete that run directory")

