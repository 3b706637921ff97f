"""Train-step throughput for a few model sizes, and the share of step time spent sampling the batch.

  python -m benchmarks.train_step [--steps=20] [--batch_size=32] [--length=128]

Each row times, on the default graph of `configs/base.py` (4 hidden nodes x 4 states, 32 tokens):
the jitted train step alone, the on-device sampling of its batch alone (`sample_tokens` with the
batch sharding), and the two together as the training loop runs them. The reference is the plain
numpy sampler (`gssm_jax.reference`) producing the same batch on the host, measured in the same run:
its time as a share of the step shows what on-device sampling saves. Target: sampling <= 5% of the
step time.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from gssm_jax import sampling as sampler
from gssm_jax.configs.base import get_config
from gssm_jax.data import OnTheFlyBatches
from gssm_jax.model.graph import GraphSpec
from gssm_jax.model.kernels import conditional_tables, sample_kernels
from gssm_jax.sampling import reference
from gssm_jax.training import mesh as parallel
from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config

_STEPS = flags.DEFINE_integer("steps", 20, "Timed repetitions per measurement (after one warm-up).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size, sequences.")
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per sequence.")

SIZES = {"small (64x2)": (64, 2, 4), "medium (128x4)": (128, 4, 4), "large (256x4)": (256, 4, 8)}


def _median_seconds(function, repetitions: int) -> float:
    jax.block_until_ready(function(0))  # warm-up: compilation
    times = []
    for repetition in range(1, repetitions + 1):
        start = time.perf_counter()
        jax.block_until_ready(function(repetition))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def benchmark_size(width: int, depth: int, heads: int, batch_size: int, length: int, repetitions: int) -> dict:
    """Times one model size; returns seconds per step of each part and the derived rates."""
    config = get_config()
    config.model.width, config.model.depth, config.model.heads = width, depth, heads
    config.data.batch_size, config.data.length = batch_size, length
    graph = GraphSpec.from_config(config.graph)
    kernels = sample_kernels(jax.random.key(config.seed), graph)
    mesh = parallel.data_parallel_mesh()
    data = OnTheFlyBatches(graph, sampler.sampling_tables(graph, kernels), batch_size, length,
                              jax.random.key(0), mesh)
    optimizer, schedule = make_optimizer(config.optimizer, 1000)
    graphdef, state = init_state(model_config(config, graph), 0, optimizer)
    holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
    train_step = make_train_step(graphdef, optimizer, schedule, mesh)
    fixed_batch = data.batch(0)

    def step_only(_):
        holder["state"], step_metrics = train_step(holder["state"], fixed_batch)
        return step_metrics

    def step_with_sampling(step):
        holder["state"], step_metrics = train_step(holder["state"], data.batch(step))
        return step_metrics

    tables = {name: np.asarray(table) for name, table in conditional_tables(graph, kernels).items()}
    rng = np.random.default_rng(0)
    seconds = {
        "step": _median_seconds(step_only, repetitions),
        "sample": _median_seconds(data.batch, repetitions),
        "loop": _median_seconds(step_with_sampling, repetitions),
        "numpy": _median_seconds(lambda _: reference.sample(rng, graph, tables, batch_size, length), repetitions),
    }
    return {"parameters": sum(leaf.size for leaf in jax.tree.leaves(holder["state"]["params"])), **seconds,
            "tokens_per_second": batch_size * length / seconds["loop"]}


def main(argv):
    del argv
    batch_size, length = _BATCH.value, _LENGTH.value
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; batch {batch_size} x {length} tokens; "
          f"median of {_STEPS.value} steps")
    header = ("| model (width x depth) | parameters | tokens/s (loop) | step ms | on-device sampling ms | "
              "sampling / (step + sampling) | numpy reference sampling ms | numpy / on-device |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (width, depth, heads) in SIZES.items():
        row = benchmark_size(width, depth, heads, batch_size, length, _STEPS.value)
        fraction = row["sample"] / (row["step"] + row["sample"])
        print(f"| {name} | {row['parameters']:,} | {row['tokens_per_second']:,.0f} | {row['step'] * 1e3:.1f} | "
              f"{row['sample'] * 1e3:.2f} | {fraction:.1%} | {row['numpy'] * 1e3:.2f} | "
              f"{row['numpy'] / row['sample']:.1f}x |")


if __name__ == "__main__":
    app.run(main)
