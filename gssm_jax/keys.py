"""The key tree: which random key derives which stream. Every derivation in the library is defined here.

A run's randomness comes from four integer seeds of its config; everything else is derived:

    config.seed (graph seed s)
      kernel_key(s) = key(s)                               the kernels: node i (config order) draws from
        node_kernel_key(., i) = fold_in(key(s), i)         fold_in(key(s), i); a product node splits that key
                                                           into one key per input table (`model.kernels`)
      calibration_data_key(s) = fold_in(key(s), DATA_TAG)  the batch measured by `difficulty` at graph seed s
                                                           (DATA_TAG is far above any node index)
    config.data.data_seed (d)
      data_key(d) = key(d)
      stream_key(data_key(d), t) = fold_in(key(d), t)      on-the-fly training batch of step t
      validation_key(d) = fold_in(key(d), VALIDATION_TAG)  the validation split: sequences of the training
                                                           stream's distribution that no step trains on
                                                           (VALIDATION_TAG = 2**32 - 1, a step no run reaches)
      shard_key(d, split, i)                               dataset shard i of a split:
        = fold_in(fold_in(key(d), SPLIT_IDS[split]), i)    (`data.generate`)
      epoch_generator(d, epoch)                            file batches' order in an epoch: numpy PCG64 of
        = PCG64(SeedSequence([d, epoch]))                  (`data.batches.epoch_permutation`)
    config.eval.eval_seed (e)
      heldout_key(e) = key(e)                              the held-out sequences
      heldout_context_key(e) = fold_in(key(e), 1)          Monte Carlo draws of context kernels for the
                                                           held-out set's entropy (graphs with context nodes)
    config.model.init_seed                                 `nnx.Rngs(init_seed)`: the model's initial parameters

Inside the sampler, a batch is a pure function of its sampling key k (`sampling.sampler`):

      sampler_bits_key(k)                                  the uniform words: threefry-2x32 of k's words at
                                                           counter (0, BITS_TAG) (= fold_in(k, BITS_TAG) bits
                                                           for other key implementations)
      context_node_key(k, i) = fold_in(fold_in(k, CONTEXT_TAG), i)
      context_sequence_key(., b) = fold_in(., b)           context node i's kernel of sequence b

The Experiment 1 sweep gives seed k of a side `config.seed = k`, `data_seed = data.data_seed + k` and
`init_seed = k` on both sides (a paired design). Never renumber a tag: every seeded result (the README's
tables, cached calibrations, resumed runs) depends on them; `tests/test_pins.py` pins the values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gssm_jax.threefry import threefry_2x32

# fold_in tags; never renumber.
BITS_TAG = 0  # the sampler's random words
CONTEXT_TAG = 1  # the sampler's per-sequence context kernels
SPLIT_IDS = {"train": 0, "test": 1}  # dataset splits
# Calibration data of a graph seed. Kernels use fold_in(key(s), node_index) with node_index < number of
# nodes, so a large tag never collides with a kernel key.
DATA_TAG = 0x5EED_DA7A
HELDOUT_CONTEXT_TAG = 1  # Monte Carlo draws of the held-out set's context kernels
# The validation split of a data seed: the last uint32, which no training step t (fold_in(key(d), t)) reaches.
VALIDATION_TAG = 2**32 - 1


def kernel_key(seed: int) -> jax.Array:
    """Key of the kernels of graph seed `seed`: `sample_kernels(kernel_key(seed), graph)`."""
    return jax.random.key(seed)


def node_kernel_key(key: jax.Array, node_index: int) -> jax.Array:
    """Key of node `node_index`'s kernel (config order) under the kernels' key `key`."""
    return jax.random.fold_in(key, node_index)


def calibration_data_key(seed: int) -> jax.Array:
    """Key of the token batch measured at graph seed `seed` by `gssm_jax.difficulty`."""
    return jax.random.fold_in(jax.random.key(seed), DATA_TAG)


def data_key(data_seed: int) -> jax.Array:
    """The root of the training data: the on-the-fly stream and the dataset shards derive from it."""
    return jax.random.key(data_seed)


def stream_key(data_key: jax.Array, step: int | jax.Array) -> jax.Array:
    """Key of the on-the-fly training batch of step `step`, from `data_key(data_seed)`."""
    return jax.random.fold_in(data_key, step)


def validation_key(data_seed: int) -> jax.Array:
    """Key of the validation sequences of data seed `data_seed`: the training stream's distribution, untrained on."""
    return jax.random.fold_in(data_key(data_seed), VALIDATION_TAG)


def shard_key(data_seed: int, split: str, shard_index: int) -> jax.Array:
    """Key of dataset shard `shard_index` of `split` ("train" or "test")."""
    return jax.random.fold_in(jax.random.fold_in(data_key(data_seed), SPLIT_IDS[split]), shard_index)


def epoch_generator(data_seed: int, epoch: int) -> np.random.Generator:
    """The numpy generator that shuffles a dataset's training sequences in epoch `epoch` (the same on every host)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([data_seed, epoch])))


def heldout_key(eval_seed: int) -> jax.Array:
    """Key of the held-out sequences of a run."""
    return jax.random.key(eval_seed)


def heldout_context_key(eval_seed: int) -> jax.Array:
    """Key of the Monte Carlo kernel draws for the held-out set's entropy when the graph has context nodes."""
    return jax.random.fold_in(jax.random.key(eval_seed), HELDOUT_CONTEXT_TAG)


def context_node_key(key: jax.Array, node_index: int) -> jax.Array:
    """Key of context node `node_index`'s per-sequence kernels under the sampling key `key`."""
    return jax.random.fold_in(jax.random.fold_in(key, CONTEXT_TAG), node_index)


def context_sequence_key(node_key: jax.Array, row: int | jax.Array) -> jax.Array:
    """Key of the kernel of sequence `row` (global index) of a context node, from its `context_node_key`."""
    return jax.random.fold_in(node_key, row)


def sampler_bits_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two uint32 key words of the sampler's random words, derived from the sampling key `key`.

    For threefry keys (JAX's default) this is one threefry-2x32 block of the key at counter
    (0, BITS_TAG), in plain uint32 ops: `jax.random`'s own derivation compiles in ~0.3 s, a third of
    the sampler's compile time. Other key implementations go through `jax.random`.
    """
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    if words.shape != (2,) or words.dtype != jnp.uint32:
        return tuple(jax.random.bits(jax.random.fold_in(key, BITS_TAG), (2,), jnp.uint32))
    return threefry_2x32((words[0], words[1]), jnp.uint32(0), jnp.uint32(BITS_TAG))
