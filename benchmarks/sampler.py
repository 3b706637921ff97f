"""Sampler throughput: `sample_tokens` vs the numpy reference, measured in the same run.

    python -m benchmarks.sampler            # batch 128 and 1024, length 2048, both seed graphs
    python -m benchmarks.sampler --quick    # length 256, one repeat

On CPU, XLA's thread pool can be slower than one thread on this loop of many small ops, and it
suffers most when other processes hold the cores: compare with `taskset -c 0 python -m
benchmarks.sampler` (the numpy reference is single-threaded either way).

Columns: compile time (s, first call minus a second call), the one-off build of the inverse-CDF
tables (`tables.sampling_tables`, s), tokens/s of the JAX sampler given those tables (best of the
repeats) and of `reference.sample`, their ratio, and the random-bit ceiling: the JAX sampler needs
one 32-bit threefry word per node per token (whole pairs of words), so at the measured threefry rate (words/s, same
implementation, no sampling) it could reach at most `rate / words_per_token` tokens/s.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gssm_jax import threefry
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import conditional_tables, sample_kernels
from gssm_jax.sampling import numpy_sampler, sampler, tables

GRAPHS = {"4x4/V32": (4, 32), "8x4/V64": (8, 64)}


def _seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        best = min(best, time.perf_counter() - start)
    return best


def threefry_words_per_second(batch: int, length: int, words_per_step: int) -> float:
    """Rate of the sampler's threefry alone, in the sampler's shape: a scan over steps of (batch, words)."""
    rows = jnp.arange(batch, dtype=jnp.uint32)
    pairs = -(-words_per_step // 2)

    @jax.jit
    def words(key_words):
        def step(checksum, t):
            high, low = threefry.threefry_2x32((key_words[0], key_words[1]), rows[:, None],
                                              t * np.uint32(pairs) + jnp.arange(pairs, dtype=jnp.uint32))
            return checksum ^ jnp.bitwise_xor.reduce(high ^ low, axis=1), None
        return jax.lax.scan(step, rows, jnp.arange(length, dtype=jnp.uint32))[0]

    key_words = jnp.array([1, 2], jnp.uint32)
    jax.block_until_ready(words(key_words))
    return batch * length * 2 * pairs / _seconds(lambda: words(key_words), 2)


def measure(name: str, batch: int, length: int, repeats: int, reference_length: int) -> dict:
    num_hidden, vocab = GRAPHS[name]
    graph = GraphSpec.from_config(experiment1_graph_config(num_hidden, 4, vocab, 1e-3, 0.125))
    kernels = sample_kernels(jax.random.key(0), graph)
    jax.block_until_ready(tables.sampling_tables(graph, kernels))
    setup = _seconds(lambda: tables.sampling_tables(graph, kernels), repeats)
    thresholds = tables.sampling_tables(graph, kernels)
    start = time.perf_counter()
    jax.block_until_ready(sampler.sample_tokens(jax.random.key(1), graph, thresholds, batch, length))
    first = time.perf_counter() - start
    run = _seconds(lambda: sampler.sample_tokens(jax.random.key(2), graph, thresholds, batch, length), repeats)
    probabilities = {key: np.asarray(value, np.float64) for key, value in conditional_tables(graph, kernels).items()}
    reference_run = _seconds(lambda: numpy_sampler.sample(np.random.default_rng(3), graph, probabilities, batch,
                                                      reference_length), 1)
    ours = batch * length / run
    theirs = batch * reference_length / reference_run
    words_per_token = 2 * -(-len(graph.nodes) // 2)  # whole threefry pairs: an odd node count wastes one word
    ceiling = threefry_words_per_second(batch, min(length, 512), words_per_token) / words_per_token
    return {"graph": name, "batch": batch, "compile_s": first - run, "tables_s": setup, "jax": ours,
            "reference": theirs, "ratio": ours / theirs, "ceiling": ceiling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="length 256 and one repeat")
    parser.add_argument("--length", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024], help="batch sizes")
    args = parser.parse_args()
    length = 256 if args.quick else args.length
    repeats = 1 if args.quick else 3
    # The reference is timed on a shorter length: its cost is linear in length (a Python loop).
    reference_length = min(length, 512)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, length {length}")
    header = (f"{'graph':8} {'batch':>5} {'compile s':>9} {'tables s':>8} {'JAX Mtok/s':>10} {'numpy Mtok/s':>12} "
              f"{'ratio':>6} {'bit ceiling Mtok/s':>18} {'% of ceiling':>12}")
    print(header)
    for name in GRAPHS:
        for batch in args.batches:
            row = measure(name, batch, length, repeats, reference_length)
            print(f"{row['graph']:8} {row['batch']:5d} {row['compile_s']:9.2f} {row['tables_s']:8.3f} "
                  f"{row['jax'] / 1e6:10.2f} {row['reference'] / 1e6:12.2f} {row['ratio']:6.1f} "
                  f"{row['ceiling'] / 1e6:18.1f} {100 * row['jax'] / row['ceiling']:11.0f}%", flush=True)


if __name__ == "__main__":
    main()
