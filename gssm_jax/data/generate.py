"""Generating a dataset: sample every shard on device, write it atomically, resume an interrupted run.

Shard i of a split depends only on `(data_seed, split, i)` (`gssm_jax.keys.shard_key`), so a larger
dataset with the same shard size extends a smaller one. After each shard, `progress.json` records it;
rerunning an interrupted generation re-verifies the recorded shards and samples the rest. `meta.json`
is written last (format: `gssm_jax.data.format`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from gssm_jax import files, keys, parallel
from gssm_jax.data.format import (
    FORMAT_VERSION,
    KERNELS_FILE,
    META_FILE,
    PROGRESS_FILE,
    SPLITS,
    DatasetError,
    canonical_graph,
    check_same,
    file_sha256,
    kernels_bytes,
    library_version,
    npy_bytes,
    read_json,
    shard_file,
    shard_rows,
    token_dtype,
)
from gssm_jax.data.load import Dataset, load_dataset
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling.sampler import sample_tokens
from gssm_jax.sampling.tables import sampling_tables


class GenerationProgress(NamedTuple):
    """Reported after each finished shard: `file` (name), `sequences_done`/`sequences_total` (both splits),
    `from_disk` (True if the shard was already finished by an earlier, interrupted run)."""

    file: str
    sequences_done: int
    sequences_total: int
    from_disk: bool


def generate_dataset(directory: str | os.PathLike, graph_config: Any, *, seed: int, data_seed: int, num_train: int,
                     num_test: int, length: int, shard_size: int,
                     progress: Callable[[GenerationProgress], None] | None = None) -> Dataset:
    """Samples a dataset into `directory` (created if needed), resuming an interrupted generation.

    Args:
      directory: dataset directory.
      graph_config: graph config accepted by `GraphSpec.from_config`.
      seed: kernel seed: kernels = `sample_kernels(keys.kernel_key(seed), graph)`.
      data_seed: seed of the sequences (see `shard_key`).
      num_train, num_test: sequences in each split (num_train >= 1, num_test >= 0).
      length: tokens per sequence.
      shard_size: sequences per shard file; also the batch sampled on device at once.
      progress: called with a `GenerationProgress` after each shard.

    Returns:
      the finished dataset (loaded without re-verification).

    Raises:
      DatasetError: `directory` holds a finished or partial dataset with other parameters.
    """
    graph = GraphSpec.from_config(graph_config)
    for name, value, minimum in (("seed", seed, 0), ("data_seed", data_seed, 0), ("num_train", num_train, 1),
                                 ("num_test", num_test, 0), ("length", length, 1), ("shard_size", shard_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise DatasetError(f"{name}={value!r}: must be an integer >= {minimum}")
    parameters = {
        "format": FORMAT_VERSION, "graph": canonical_graph(graph), "seed": int(seed), "data_seed": int(data_seed),
        "num_sequences": {"train": int(num_train), "test": int(num_test)}, "length": int(length),
        "shard_size": int(shard_size),
    }
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DatasetError(f"{directory} is a file, not a directory; pass a dataset directory (--workdir)")
    with _writable(directory):
        directory.mkdir(parents=True, exist_ok=True)
        return _generate(directory, graph, parameters, progress)


@contextlib.contextmanager
def _writable(directory: pathlib.Path) -> Iterator[None]:
    """Turns a failure to create or write the dataset (read-only path, disk full) into one DatasetError line."""
    try:
        yield
    except OSError as error:
        where = error.filename or directory
        raise DatasetError(f"{where}: cannot write the dataset ({error.strerror or error}); pass a writable "
                           "directory with free space (--workdir)") from None


def _generate(directory: pathlib.Path, graph: GraphSpec, parameters: dict[str, Any],
              progress: Callable[[GenerationProgress], None] | None) -> Dataset:
    """`generate_dataset` once its arguments are checked and `directory` exists."""
    seed, data_seed, length = parameters["seed"], parameters["data_seed"], parameters["length"]
    shard_size = parameters["shard_size"]
    num_train, num_test = parameters["num_sequences"]["train"], parameters["num_sequences"]["test"]
    if (directory / META_FILE).exists():
        check_same(read_json(directory / META_FILE), parameters, f"{directory} holds a finished dataset")
        (directory / PROGRESS_FILE).unlink(missing_ok=True)
        return load_dataset(directory, verify=False)

    finished = _verified_progress(directory, parameters)
    dtype = token_dtype(graph.vocab_size)
    kernels = sample_kernels(keys.kernel_key(seed), graph)
    kernels_record = {"sha256": files.write_bytes(directory / KERNELS_FILE, kernels_bytes(graph, kernels))}
    jobs = [(split, index, rows) for split in SPLITS
            for index, rows in enumerate(shard_rows(parameters["num_sequences"][split], shard_size))]
    total = num_train + num_test
    done = 0
    for split, index, rows in jobs:
        if shard_file(split, index) in finished:
            done += rows
            if progress:
                progress(GenerationProgress(shard_file(split, index), done, total, True))

    tables = sampling_tables(graph, kernels)  # built once for all shards

    def sample(job: tuple[str, int, int]) -> jax.Array:
        split, index, rows = job
        return sample_tokens(keys.shard_key(data_seed, split, index), graph, tables, rows, length,
                             sharding=_local_batch_sharding(rows))

    pending = [job for job in jobs if shard_file(job[0], job[1]) not in finished]
    for (split, index, rows), tokens in _dispatched_ahead(pending, sample):
        name = shard_file(split, index)
        array = np.asarray(tokens).astype(dtype, copy=False)
        finished[name] = {"shape": list(array.shape), "sha256": files.write_bytes(directory / name, npy_bytes(array))}
        files.write_json(directory / PROGRESS_FILE, {"parameters": parameters, "shards": finished})
        done += rows
        if progress:
            progress(GenerationProgress(name, done, total, False))

    meta = {
        **parameters,
        "vocab_size": graph.vocab_size,
        "dtype": dtype.name,
        "library_version": library_version(),
        "jax_version": jax.__version__,
        "kernels": {"file": KERNELS_FILE, **kernels_record},
        "shards": {split: [{"file": shard_file(s, i), **finished[shard_file(s, i)]} for s, i, _ in jobs if s == split]
                   for split in SPLITS},
    }
    files.write_json(directory / META_FILE, meta)
    (directory / PROGRESS_FILE).unlink()
    return load_dataset(directory, verify=False)


def _dispatched_ahead(jobs: list, sample: Callable) -> Iterator[tuple[Any, jax.Array]]:
    """Yields `(job, sample(job))`, dispatching the next job to the device before yielding the current one,
    so sampling shard i+1 overlaps with writing shard i."""
    previous = None
    for job in jobs:
        current = (job, sample(job))
        if previous is not None:
            yield previous
        previous = current
    if previous is not None:
        yield previous


def _local_batch_sharding(rows: int) -> jax.sharding.Sharding | None:
    """Rows split across this host's devices when they divide evenly (samples are identical either way)."""
    devices = jax.local_devices()
    if len(devices) == 1 or rows % len(devices):
        return None
    return parallel.batch_sharded(parallel.data_parallel_mesh(devices))


def _verified_progress(directory: pathlib.Path, parameters: dict) -> dict[str, dict]:
    """Shards finished by an interrupted run with the same parameters whose files still match their checksum."""
    path = directory / PROGRESS_FILE
    if not path.exists():
        return {}
    record = read_json(path)
    check_same(record.get("parameters", {}), parameters, f"{directory} holds an unfinished dataset")
    return {name: entry for name, entry in record.get("shards", {}).items()
            if (directory / name).exists() and file_sha256(directory / name) == entry["sha256"]}

