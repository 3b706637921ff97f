"""Finite-data throughput: dataset generation to disk, and training batches read from file vs sampled on the fly.

  python -m benchmarks.data                       # 4x4/V32 graph, T=2048, 2048 train sequences
  python -m benchmarks.data --num_sequences=16384 --shard_size=4096

Rows:
* generate_dataset: sequences sampled on device shard by shard, written as uint8 .npy with sha256 and
  fsync (steady state: from the end of the first shard, which includes compilation, to the end);
* numpy reference -> disk: the seed-order numpy sampler (`gssm_jax.reference`) writing the same
  number of sequences as uint8 .npy with fsync, in batches of `shard_size`;
* device_batch from file: one training batch (shuffled rows of the memory-mapped train split placed on
  every device) vs `sample_tokens` of the same batch on the fly (compiled, blocked until ready).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from gssm_jax import data, parallel, reference
from gssm_jax.graph import GraphSpec, experiment1_graph_config
from gssm_jax.kernels import sample_kernels
from gssm_jax.sampler import sample_tokens


def _reference_to_disk(graph: GraphSpec, directory: pathlib.Path, num_sequences: int, length: int,
                       shard_size: int) -> float:
    """Seconds for the numpy reference to sample and write `num_sequences` sequences."""
    rng = reference.seed_generator(0)
    tables = reference.draw_tables(rng, graph)
    start = time.perf_counter()
    for index, rows in enumerate(data.shard_rows(num_sequences, shard_size)):
        tokens = reference.sample(rng, graph, tables, rows, length).astype(np.uint8)
        with open(directory / f"reference_{index:05d}.npy", "wb") as file:
            np.save(file, tokens)
            file.flush()
            os.fsync(file.fileno())
    return time.perf_counter() - start


def _batch_seconds(make_batch, repeats: int) -> float:
    jax.block_until_ready(make_batch(0))  # compile / warm the page cache
    start = time.perf_counter()
    for step in range(1, repeats + 1):
        jax.block_until_ready(make_batch(step))
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sequences", type=int, default=2048, help="training sequences generated")
    parser.add_argument("--length", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--shard_size", type=int, default=512, help="sequences per shard (sampled at once)")
    parser.add_argument("--batch_size", type=int, default=64, help="training batch for the read-vs-sample rows")
    args = parser.parse_args()
    graph_config = experiment1_graph_config(4, 4, 32, alpha_x=1e-3, alpha_z=0.125)
    graph = GraphSpec.from_config(graph_config)
    megabytes = args.num_sequences * args.length / 1e6  # uint8 tokens

    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        times = []
        start = time.perf_counter()
        dataset = data.generate_dataset(
            scratch / "dataset", graph_config, seed=0, data_seed=1, num_train=args.num_sequences, num_test=0,
            length=args.length, shard_size=args.shard_size, progress=lambda _: times.append(time.perf_counter()))
        total_seconds = time.perf_counter() - start
        steady_sequences = args.num_sequences - args.shard_size
        steady_seconds = times[-1] - times[0]
        reference_seconds = _reference_to_disk(graph, scratch, args.num_sequences, args.length, args.shard_size)

        sharding = parallel.batch_sharded(parallel.data_parallel_mesh())
        kernels = sample_kernels(jax.random.key(0), graph)
        read_seconds = _batch_seconds(lambda step: data.device_batch(
            dataset.train, step, batch_size=args.batch_size, seed=0, num_sequences=args.num_sequences,
            sharding=sharding), repeats=20)
        sample_seconds = _batch_seconds(lambda step: sample_tokens(
            jax.random.fold_in(jax.random.key(1), step), graph, kernels, args.batch_size, args.length,
            sharding=sharding), repeats=5)

    print(f"4x4-state / V=32 graph, T={args.length}, {args.num_sequences} sequences ({megabytes:.0f} MB uint8), "
          f"shard_size={args.shard_size}, {jax.device_count()} {jax.devices()[0].platform} device(s)\n")
    print("| what | sequences/s | MB/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    reference_rate = args.num_sequences / reference_seconds
    rows = [
        ("numpy reference -> disk", reference_rate),
        ("generate_dataset, total (incl. compile)", args.num_sequences / total_seconds),
        ("generate_dataset, steady state", steady_sequences / steady_seconds if steady_sequences else float("nan")),
    ]
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate * args.length / 1e6:,.1f} | {rate / reference_rate:.2f}x |")
    sample_rate = args.batch_size / sample_seconds
    print(f"\nTraining batch of {args.batch_size} x {args.length}:\n")
    print("| source | ms/batch | sequences/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| sample_tokens on the fly | {1e3 * sample_seconds:.1f} | {sample_rate:,.0f} | 1.00x |")
    print(f"| device_batch from file | {1e3 * read_seconds:.1f} | {args.batch_size / read_seconds:,.0f} | "
          f"{sample_seconds / read_seconds:.2f}x |")


if __name__ == "__main__":
    main()
