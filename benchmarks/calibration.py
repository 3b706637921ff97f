"""Benchmark: the cost of difficulty trials and of a whole pair calibration on composable-llm's 4x4/V32 graph.

  python -m benchmarks.calibration [--graph=four_by_four] [--size=cpu] [--nopairs]

Rows:
* drawing one seed's kernels (all nodes, the reference alphas; mean over the seeds, after compilation):
  with `jax.random.loggamma` (the sampler used before) and with `gssm_jax.gssm.kernels.sample_log_gamma`.
  On eight_by_four X's kernel alone is 65536 x 64 gamma variates and dominates every trial that
  changes alpha_X;
* one trial = one setting measured on every seed's batch (the `calibrate` config's size): the reference is
  composable-llm's code path (numpy sampler `gssm_jax.sampling.numpy_sampler`, then zlib-9 of each batch one after the
  other); ours samples with the JAX sampler and compresses the seeds' batches on a thread pool;
* compression alone: zlib-9 of the seeds' batches, sequential vs `parallel_map` (zlib releases the GIL);
* a whole pair (both sides, from the reference's difficulty, cpu-size search) per measure, from a fresh
  `Measurer`. The first one includes the jit compilation of the sampler (and of the forward algorithm
  for entropy); the goal is under 300 s on 2 CPU cores.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from gssm_jax import difficulty, keys
from gssm_jax.configs.calibrate import get_config
from gssm_jax.difficulty import calibrate_pair
from gssm_jax.gssm import kernels
from gssm_jax.gssm.families import get_family
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.sampling import numpy_sampler

_GRAPH = flags.DEFINE_string("graph", "four_by_four", "Graph family.")
_SIZE = flags.DEFINE_string("size", "cpu", "The calibrate config's size: cpu, paper or tiny.")
_PAIRS = flags.DEFINE_bool("pairs", True, "Also time whole pair calibrations (long on eight_by_four).")
PAIR_BUDGET_S = 300.0


def _timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def main(argv):
    del argv
    config = get_config(f"graph={_GRAPH.value},size={_SIZE.value}").calibration
    family = get_family(config.graphs[0])
    seeds, batch_size, length = config.seeds, config.batch_size, config.length
    alphas = family.reference_alphas
    graph = GraphSpec.from_config(family.config(*family.reference))
    print(f"{family.name}: {len(seeds)} seeds x {batch_size} x {length} tokens per trial")

    def reference_trial():
        batches = [numpy_sampler.seed_batch(graph, seed, batch_size, length) for seed in seeds]
        return [difficulty.gzip_bytes_per_token(tokens) for tokens in batches]

    def our_trial(measure):
        measurer = difficulty.Measurer(family, seeds=seeds, batch_size=batch_size, length=length)
        return lambda: measurer(alphas, measure)

    def draw_kernels(dirichlet, kernel_seeds):
        for seed in kernel_seeds:
            for index, node in enumerate(graph.nodes):
                key = keys.node_kernel_key(keys.kernel_key(seed), index)
                dirichlet(key, node.alpha, graph.kernel_shape(node.name)).block_until_ready()

    def jax_loggamma_dirichlet(key, alpha, shape):
        return jax.nn.softmax(jax.random.loggamma(key, jnp.asarray(alpha, jnp.float32), shape), axis=-1)

    kernel_seconds = {}
    for label, dirichlet in (("jax.random.loggamma (before)", jax_loggamma_dirichlet),
                             ("kernels.sample_log_gamma (ours)", kernels.sample_dirichlet)):
        first_s, _ = _timed(lambda d=dirichlet: draw_kernels(d, [len(seeds)]))  # another seed; includes compilation
        kernel_seconds[label] = _timed(lambda d=dirichlet: draw_kernels(d, seeds))[0] / len(seeds)
        print(f"one seed's kernels with {label}: {kernel_seconds[label]:.3f} s (first call {first_s:.2f} s)")
    before = next(iter(kernel_seconds.values()))
    rows = [(f"one seed's kernels, {label}", seconds, before) for label, seconds in kernel_seconds.items()]
    our_trial("entropy")()  # compile the sampler and the forward algorithm outside the timings
    reference_s, _ = _timed(reference_trial)
    rows.append(("one gzip trial, reference (numpy sampler + sequential zlib)", reference_s, reference_s))
    rows.append(("one gzip trial, ours (JAX sampler + threaded zlib)", _timed(our_trial("gzip"))[0], reference_s))
    rows.append(("one entropy trial, ours (JAX sampler + forward algorithm)", _timed(our_trial("entropy"))[0],
                 reference_s))
    batches = [np.asarray(tokens) for _, tokens in
               difficulty.Measurer(family, seeds=seeds, batch_size=batch_size, length=length).batches(alphas)[1]]
    sequential_s, _ = _timed(lambda: [difficulty.gzip_bytes_per_token(tokens) for tokens in batches])
    parallel_s, _ = _timed(lambda: difficulty.parallel_map(difficulty.gzip_bytes_per_token, batches))
    rows.append(("zlib-9 of the seeds' batches, sequential", sequential_s, sequential_s))
    rows.append(("zlib-9 of the seeds' batches, thread pool", parallel_s, sequential_s))
    for measure in ("entropy", "gzip") if _PAIRS.value else ():
        measurer = difficulty.Measurer(family, seeds=seeds, batch_size=batch_size, length=length)
        seconds, pair = _timed(lambda m=measure, mm=measurer: calibrate_pair(
            mm, measure=m, tolerance=config.tolerance[m], grid_points=config.grid_points))
        rows.append((f"every seed's pair, {measure} ({pair.trials} trials)", seconds, PAIR_BUDGET_S))

    print(f"\n| {'what':<62} | seconds | speed-up vs reference (kernel rows: vs loggamma; pairs: vs 300 s) |")
    print(f"|{'-' * 64}|---------|----------------------------------------------------|")
    for label, seconds, baseline in rows:
        print(f"| {label:<62} | {seconds:7.2f} | {baseline / seconds:50.2f} |")
    print(f"\nzlib-9 throughput: {sum(t.size for t in batches) / sequential_s / 1e6:.2f} M tokens/s sequential "
          f"(int64 stream), {sum(t.size for t in batches) / parallel_s / 1e6:.2f} M tokens/s on the thread pool")


if __name__ == "__main__":
    app.run(main)
