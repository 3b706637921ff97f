"""The members of one ensemble: each run's kernels, data and eval sets, stacked for the step program.

`Ensemble(runs)` holds M resolved runs that share a `Run.program_key()`: their mesh, step program and
timeline, the stacked inputs of their data streams (sampling tables and data keys, or the datasets read
K steps at a time on the host), their learning-rate tables, and their held-out and validation sets.
`Ensemble.run` trains every member for one call; `Ensemble.evaluate` scores every member.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gssm_jax import data, keys, parallel
from gssm_jax.gssm.initial_state import start_keywords
from gssm_jax.gssm.kernels import Kernels, sample_kernels
from gssm_jax.learners import count_parameters
from gssm_jax.sampling.tables import sampling_tables
from gssm_jax.training import evaluation, schedule, step
from gssm_jax.training.run import Run


class TrainingSource(NamedTuple):
    """A run's data: its kernels, training stream (`batch(step)`) and held-out tokens (eval.num_sequences, length).

    identity: what the held-out set's exact losses depend on (their cache key, `evaluation.cached_optimal_losses`).
    """

    kernels: Kernels
    stream: data.Batches
    heldout: jax.Array
    identity: dict


def training_source(run: Run, mesh: jax.sharding.Mesh) -> TrainingSource:
    """The `TrainingSource` of `run`, its stream's rows split over `mesh`'s "data" axis.

    "onfly": kernels from the kernel seed, fresh sequences every step (`data.OnTheFlyBatches`, the stream the
    step program samples inside), held-out set from the eval seed. "file": the dataset's kernels, a per-epoch
    shuffle of its first `num_sequences` training sequences, the first eval sequences of its test split.
    """
    source, length = run.data, run.data.length
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    if source.source == "onfly":
        kernels = sample_kernels(keys.kernel_key(run.kernel_seed), run.graph)
        stream = data.OnTheFlyBatches(run.graph, sampling_tables(run.graph, kernels), source.batch_size, length,
                                      keys.data_key(source.data_seed), mesh, **start_keywords(source.burn_in))
        heldout = evaluation.heldout_tokens(run.graph, kernels, run.eval.num_sequences, length, run.eval.eval_seed,
                                            source.burn_in)
        identity = {"graph": run.config["graph"], "seed": run.kernel_seed, "eval_seed": run.eval.eval_seed,
                    "num_sequences": run.eval.num_sequences, "length": length}
        return TrainingSource(kernels, stream, heldout, identity)
    dataset = source.dataset
    stream = data.FileBatches(dataset.train, source.batch_size, source.data_seed, source.num_sequences, sharding)
    heldout = jnp.asarray(dataset.test.take(np.arange(run.eval.num_sequences)))
    identity = {"dataset_test_sha256": [entry["sha256"] for entry in dataset.meta["shards"]["test"]],
                "num_sequences": run.eval.num_sequences}
    return TrainingSource(jax.tree.map(jnp.asarray, dataset.kernels), stream, heldout, identity)


def validation_tokens(run: Run, kernels: Kernels) -> jax.Array:
    """The validation split (eval.validation_sequences, length): sequences of the training stream's distribution
    that no step trains on (on the fly: from `keys.validation_key`; from a file: the last of the train split)."""
    if run.data.source == "onfly":
        return evaluation.validation_tokens(run.graph, kernels, run.eval.validation_sequences, run.data.length,
                                            run.data.data_seed, run.data.burn_in)
    train = run.data.dataset.train
    return jnp.asarray(train.take(np.arange(len(train) - run.eval.validation_sequences, len(train))))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


class Ensemble:
    """M runs with one `Run.program_key()`, trained in lockstep by one step program (a solo run: M = 1).

    Attributes:
      runs, mesh, program (`step.StepProgram`), timeline (`schedule.Timeline`), sources (`TrainingSource`s).
      stream: (source "onfly") the program's `stream` argument on the mesh: the members' stacked sampling
        tables and uint32 (M, 2) data-key words; None for source "file" (tokens are read per call).
    """

    def __init__(self, runs: Sequence[Run], devices: Sequence[jax.Device] | None = None):
        self.runs = tuple(runs)
        self.mesh = step.ensemble_mesh(len(runs), devices)
        self.program = step.step_program(step.ProgramShape.of(runs[0], len(runs)), self.mesh)
        self.timeline = schedule.timeline(runs[0])
        data_mesh = parallel.data_parallel_mesh(self.mesh.devices.reshape(-1))
        self.sources = [training_source(run, data_mesh) for run in runs]
        self.stream = None
        if runs[0].data.source == "onfly":
            words = [jax.random.key_data(keys.data_key(run.data.data_seed)) for run in runs]
            self.stream = jax.device_put((_stack([source.stream.tables for source in self.sources]), _stack(words)),
                                          self.program.members_sharding)
        self._rates = {None: self._rate_table(None)}
        chunk = min(runs[0].data.batch_size, runs[0].eval.num_sequences, runs[0].eval.validation_sequences)
        self._model_losses = evaluation.make_model_losses(self.program.graphdef, self.mesh, chunk)
        self._heldout = _stack([source.heldout for source in self.sources])
        self._validation = _stack([validation_tokens(run, source.kernels)
                                   for run, source in zip(runs, self.sources, strict=True)])
        self._optimal = None

    @property
    def members(self) -> int:
        return len(self.runs)

    def initial_state(self) -> Any:
        """The members' fresh states (each from its init seed), stacked and placed on the mesh."""
        return self.stack([step.init_state(run.shape, run.init_seed, self.program.optimizer)[1] for run in self.runs])

    def stack(self, states: Sequence[Any]) -> Any:
        """Member states -> the stacked state on the mesh (leading member axis)."""
        return jax.device_put(_stack(states), self.program.members_sharding)

    def member_states(self, state: Any) -> list[Any]:
        """The stacked state -> each member's state (host arrays), as a solo run's checkpoint holds it."""
        host = jax.device_get(state)
        return [jax.tree.map(lambda leaf, k=k: leaf[k], host) for k in range(self.members)]

    def num_parameters(self) -> int:
        return count_parameters(self.program.abstract_state()["params"]) // self.members

    def _rate_table(self, branch: schedule.Branch | None) -> np.ndarray:
        """float32 (num_steps, M): every member's learning rate at every step of the main run or `branch`."""
        decay = None if branch is None else (branch.fork, branch.end)
        return np.stack([schedule.rate_table(run.optimizer, run.num_steps, decay) for run in self.runs], axis=1)

    def _tokens(self, start: int, steps: int) -> jax.Array:
        """(file) tokens (steps, M, batch, length) of steps start .. start + steps - 1, read on the host."""
        runs, shape = self.runs, self.program.shape

        def block(index):
            step_rows, member_rows, rows, _ = index
            return np.stack([np.stack([
                run.data.dataset.train.take(data.batch_indices(
                    start + offset, batch_size=shape.batch_size, seed=run.data.data_seed,
                    num_sequences=run.data.num_sequences)[rows])
                for run in runs[member_rows]]) for offset in range(steps)[step_rows]])

        return jax.make_array_from_callback((steps, self.members, shape.batch_size, shape.length),
                                            self.program.stream_sharding(), block)

    def run(self, state: Any, start: int, steps: int, branch: schedule.Branch | None = None) -> tuple[Any, dict]:
        """Dispatches steps start .. start + steps - 1 of every member (of the main run, or of `branch`).

        Returns the new state (the old one is donated) and the metrics `{name: float32 (steps, M)}`, on device.
        """
        if branch not in self._rates:
            self._rates[branch] = self._rate_table(branch)
        stream = self.stream if self.stream is not None else self._tokens(start, steps)
        return self.program(steps, state, stream, self._rates[branch][start:start + steps])

    def optimal_losses(self) -> list[np.ndarray]:
        """Each member's Bayes-optimal losses of its held-out set (num_sequences, length), cached on disk."""
        if self._optimal is None:
            self._optimal = [evaluation.cached_optimal_losses(run.workdir, run.graph, source.kernels, source.heldout,
                                                              source.identity, run.data.burn_in)
                             for run, source in zip(self.runs, self.sources, strict=True)]
        return self._optimal

    def evaluate(self, state: Any) -> list[tuple[dict[str, float], np.ndarray]]:
        """Each member's `evaluation.summarize` of its held-out and validation sets under `state`."""
        heldout = self._model_losses(state["params"], self._heldout)
        validation = self._model_losses(state["params"], self._validation)
        return [evaluation.summarize(heldout[k], optimal, validation[k])
                for k, optimal in enumerate(self.optimal_losses())]
