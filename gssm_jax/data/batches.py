"""The training streams: one `Batches` protocol, sampled on the fly or read from a dataset on disk.

`batch(step)` returns the tokens `(batch_size, length)` of global step `step`, rows split over the
devices as the stream's sharding says. Both streams are pure functions of `(seed, step)`, so a run
resumed at any step sees exactly the batches an uninterrupted run would have seen.

* `OnTheFlyBatches`: fresh sequences every step, sampled on the devices from
  `keys.stream_key(key(data_seed), step)`, from the initial state of `config.data.initial_state`
  (`gssm_jax.gssm.initial_state`).
* `FileBatches`: the first `num_sequences` training sequences of a dataset, shuffled per epoch
  (`epoch_permutation`); each device reads only its own rows from disk.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import numpy as np

from gssm_jax import keys, parallel
from gssm_jax.data.load import ShardedSplit
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.initial_state import DEFAULT_BURN_IN, burn_in_steps
from gssm_jax.sampling.sampler import sample_tokens
from gssm_jax.sampling.tables import SamplingTables


class Batches(Protocol):
    """A training stream: `batch(step)` -> tokens (batch_size, length) of global step `step`."""

    def batch(self, step: int) -> jax.Array:
        ...


@dataclasses.dataclass(frozen=True)
class OnTheFlyBatches:
    """Fresh sequences every step, sampled on the mesh's devices from `keys.stream_key(data_key, step)`.

    `tables` are the kernels' `sampling_tables`, built once for the whole run; `initial_state` and `burn_in`
    are `config.data.initial_state` and `config.data.burn_in` (`sample_tokens`'s keywords; the defaults keep
    the zero state).
    """

    graph: GraphSpec
    tables: SamplingTables
    batch_size: int
    length: int
    data_key: jax.Array
    mesh: jax.sharding.Mesh
    initial_state: str = "zeros"
    burn_in: int = DEFAULT_BURN_IN

    def __post_init__(self):
        burn_in_steps(self.initial_state, self.burn_in)

    def batch(self, step: int) -> jax.Array:
        """Tokens (batch_size, length) of step `step`, rows split over the mesh's "data" axis."""
        return sample_tokens(keys.stream_key(self.data_key, step), self.graph, self.tables, self.batch_size,
                             self.length, sharding=parallel.batch_sharded(self.mesh),
                             initial_state=self.initial_state, burn_in=self.burn_in)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_sequences: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(num_sequences), int64, read-only.

    Drawn by `keys.epoch_generator(seed, epoch)`: pure in its arguments, the same on every host.
    """
    permutation = keys.epoch_generator(seed, epoch).permutation(num_sequences)
    permutation.flags.writeable = False
    return permutation


def batch_indices(step: int, *, batch_size: int, seed: int, num_sequences: int) -> np.ndarray:
    """Indices (batch_size,) int64 of the training sequences of global step `step`.

    The training stream is the concatenation of epochs 0, 1, 2, ..., epoch e being
    `epoch_permutation(seed, e, num_sequences)`; step s takes its positions s*batch_size ... (s+1)*batch_size - 1.
    So every sequence appears exactly once per epoch, and a batch that straddles an epoch boundary takes the
    end of one epoch and the start of the next. Pure in its arguments: resuming at any step is exact.
    """
    if num_sequences < 1:
        raise UserError(f"num_sequences={num_sequences}: need at least one training sequence")
    positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_sequences)
    indices = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        in_epoch = epochs == epoch
        indices[in_epoch] = epoch_permutation(seed, int(epoch), num_sequences)[offsets[in_epoch]]
    return indices


def check_num_sequences(split: ShardedSplit, num_sequences: int, field: str = "config.data.num_sequences") -> None:
    """One-line ValueError naming `field` if the split has fewer than `num_sequences` (>= 1) sequences."""
    if not 1 <= num_sequences <= len(split):
        raise UserError(f"{field}={num_sequences}: must be between 1 and the {len(split)} sequences of the split")


def file_batch(split: ShardedSplit, step: int, *, batch_size: int, seed: int, num_sequences: int) -> np.ndarray:
    """Tokens (batch_size, length) of global step `step`, from the first `num_sequences` sequences of `split`."""
    check_num_sequences(split, num_sequences)
    return split.take(batch_indices(step, batch_size=batch_size, seed=seed, num_sequences=num_sequences))


def device_batch(split: ShardedSplit, step: int, *, batch_size: int, seed: int, num_sequences: int,
                 sharding: jax.sharding.Sharding) -> jax.Array:
    """`file_batch` as a global array with `sharding`; each device's rows are read from disk for that device only."""
    check_num_sequences(split, num_sequences)
    indices = batch_indices(step, batch_size=batch_size, seed=seed, num_sequences=num_sequences)
    return jax.make_array_from_callback((batch_size, split.shape[1]), sharding,
                                        lambda index: split.take(indices[index[0]]))


@dataclasses.dataclass(frozen=True)
class FileBatches:
    """The training stream from a dataset: `batch(step)` is `device_batch` of the first `num_sequences`
    sequences of `split`, shuffled per epoch from `seed`; a drop-in for the on-the-fly stream."""

    split: ShardedSplit
    batch_size: int
    seed: int
    num_sequences: int
    sharding: jax.sharding.Sharding

    def __post_init__(self):
        check_num_sequences(self.split, self.num_sequences)

    def batch(self, step: int) -> jax.Array:
        """Tokens (batch_size, length) of step `step`, rows split as `sharding` says."""
        return device_batch(self.split, step, batch_size=self.batch_size, seed=self.seed,
                            num_sequences=self.num_sequences, sharding=self.sharding)
