"""Finite-data throughput: dataset generation to disk, and training batches read from file vs sampled on the fly.

  python -m benchmarks.data                       # 4x4/V32 graph, T=2048, 2048 train sequences
  python -m benchmarks.data --num_sequences=16384 --shard_size=4096

Rows:
* generate_dataset: sequences sampled on device shard by shard, written as uint8 .npy with sha256 and
  fsync (steady state: from the end of the first shard, which includes compilation, to the end);
* numpy reference -> disk: the numpy sampler in composable-llm's draw order
  (`gssm_jax.sampling.numpy_sampler`) writing the same
  number of sequences as uint8 .npy with fsync, in batches of `shard_size`;
* device_batch from file: one training batch (shuffled rows of the memory-mapped train split placed on
  every device) vs `sample_tokens` of the same batch on the fly (compiled, blocked until ready);
* training from file vs on the fly: the same model (the `base` config, size=cpu) trained for
  `--train_steps` steps from each source; tokens/s of the last logged interval (after compilation).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from gssm_jax import data, parallel
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.sampling import numpy_sampler, sample_tokens, sampling_tables
from gssm_jax.training import loop, run_directory


def _reference_to_disk(graph: GraphSpec, directory: pathlib.Path, num_sequences: int, length: int,
                       shard_size: int) -> float:
    """Seconds for the numpy reference to sample and write `num_sequences` sequences."""
    rng = numpy_sampler.seed_generator(0)
    tables = numpy_sampler.draw_tables(rng, graph)
    start = time.perf_counter()
    for index, rows in enumerate(data.shard_rows(num_sequences, shard_size)):
        tokens = numpy_sampler.sample(rng, graph, tables, rows, length).astype(np.uint8)
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


def _training_tokens_per_second(scratch: pathlib.Path, source: str, steps: int) -> float:
    """Steady-state training tokens/s of the size=cpu base config reading from `source`."""
    config = get_config("size=cpu")
    config.train.num_steps = steps
    config.train.log_every = steps // 3
    config.train.eval_every = steps
    config.train.checkpoint_every = steps
    config.optimizer.warmup_steps = 0
    if source == "file":
        path = scratch / "training_dataset"
        data.generate_dataset(path, config.graph, seed=config.seed, data_seed=config.data.data_seed,
                              num_train=1024, num_test=config.eval.num_sequences, length=config.data.length,
                              shard_size=256)
        config.data.source, config.data.path = "file", str(path)
    workdir = scratch / f"train_{source}"
    loop.train_and_evaluate(config, str(workdir))
    return run_directory.read_metrics(str(workdir))[-1]["train/tokens_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sequences", type=int, default=2048, help="training sequences generated")
    parser.add_argument("--length", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--shard_size", type=int, default=512, help="sequences per shard (sampled at once)")
    parser.add_argument("--batch_size", type=int, default=64, help="training batch for the read-vs-sample rows")
    parser.add_argument("--train_steps", type=int, default=60, help="steps of each training-throughput run")
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
        tables = sampling_tables(graph, sample_kernels(jax.random.key(0), graph))
        read_seconds = _batch_seconds(lambda step: data.device_batch(
            dataset.train, step, batch_size=args.batch_size, seed=0, num_sequences=args.num_sequences,
            sharding=sharding), repeats=20)
        sample_seconds = _batch_seconds(lambda step: sample_tokens(
            jax.random.fold_in(jax.random.key(1), step), graph, tables, args.batch_size, args.length,
            sharding=sharding), repeats=5)
        training = {source: _training_tokens_per_second(scratch, source, args.train_steps)
                    for source in ("onfly", "file")}

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

    print("\nTraining, same model (the base config, size=cpu), tokens/s of the last logged interval:\n")
    print("| source | tokens/s | ratio |")
    print("| --- | ---: | ---: |")
    for source in ("onfly", "file"):
        print(f"| {source} | {training[source]:,.0f} | {training[source] / training['onfly']:.2f}x |")


if __name__ == "__main__":
    main()
