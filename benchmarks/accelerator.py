"""Experiment 1 at `size=paper` on an accelerator: the train step of both seed graphs and its sampling share.

  python -m benchmarks.accelerator            # on a GPU/TPU: paper shapes, bfloat16
  python -m benchmarks.accelerator --quick    # anywhere (CPU: seconds): batch 8, T=256, float32

For each seed graph (four_by_four at T=2048, eight_by_four at T=4096) and the `base` model of
`experiment1:size=paper` (4 x 128, 8 heads, global batch 64, on every local device), one row: train-step
tokens/s (median of --steps steps on one fixed batch), model TFLOP/s, XLA's compiled memory of the step
(temporaries; peak bytes in use where the backend reports them), the on-device sampling of the next batch
(`data.OnTheFlyBatches`, seconds) and its share of step + sampling, and compile time.

Model FLOPs per token (forward + backward, matmuls only): 6 N for the N non-embedding parameters (the
token embedding is a lookup) plus 6 T W per layer for causal attention (QK^T and PV, 2 T W each on
average over positions, times 3 for the backward). The sampler alone at batch 1024 is
`python -m benchmarks.sampler`.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from gssm_jax import parallel
from gssm_jax.configs.experiment1 import get_config
from gssm_jax.data import OnTheFlyBatches
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.learners import count_parameters, transformer
from gssm_jax.sampling import sampling_tables
from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config

GRAPHS = ("four_by_four", "eight_by_four")


def _median_seconds(function, repetitions: int) -> float:
    times = []
    for repetition in range(repetitions):
        start = time.perf_counter()
        jax.block_until_ready(function(repetition))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(graph_name: str, steps: int, quick: bool) -> dict:
    """One row: the paper-size train step of `graph_name` (quick: a CPU-sized stand-in)."""
    config = get_config(f"graph={graph_name},size=paper")
    config.model.update(config.experiment1.models["base"])
    if quick:
        config.data.update(batch_size=8, length=256)
    else:
        config.model.dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    batch, length = config.data.batch_size, config.data.length
    graph = GraphSpec.from_config(config.graph)
    mesh = parallel.data_parallel_mesh()
    shape = model_config(config, graph)
    optimizer, schedule = make_optimizer(config.optimizer, 1000)
    graphdef, state = init_state(shape, 0, optimizer)
    holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
    data = OnTheFlyBatches(graph, sampling_tables(graph, sample_kernels(jax.random.key(0), graph)),
                           batch, length, jax.random.key(1), mesh)
    tokens = data.batch(0)
    started = time.perf_counter()
    compiled = make_train_step(graphdef, optimizer, schedule, mesh).lower(holder["state"], tokens).compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()

    def train_once(_):
        holder["state"], metrics = compiled(holder["state"], tokens)
        return metrics

    train_once(0)  # warm-up
    step_s = _median_seconds(train_once, steps)
    sample_s = _median_seconds(lambda index: data.batch(index + 1), steps)
    embedding = graph.vocab_size * config.model.width
    parameters = count_parameters(state["params"]) - embedding
    flops_per_token = 6 * parameters + 6 * length * config.model.width * config.model.depth
    tokens_per_s = batch * length / step_s
    in_use = jax.devices()[0].memory_stats() or {}
    return {"graph": graph_name, "T": length, "batch": batch, "dtype": config.model.dtype,
            "attention": transformer.check_attention(shape, length).name, "tokens_per_s": tokens_per_s,
            "tflops": tokens_per_s * flops_per_token / 1e12, "temp_gib": memory.temp_size_in_bytes / 2**30,
            "peak_gib": in_use.get("peak_bytes_in_use", float("nan")) / 2**30, "sample_s": sample_s,
            "sampling_share": sample_s / (sample_s + step_s), "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, T=256, float32 (runs on a CPU in seconds)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (after one warm-up)")
    arguments = parser.parse_args()
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}; jax {jax.__version__}")
    print("| graph | T | batch | dtype | attention | tokens/s | model TFLOP/s | XLA temp GiB | peak in use GiB | "
          "sampling s/batch | sampling share | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in GRAPHS:
        row = measure(name, arguments.steps, arguments.quick)
        print(f"| {name} | {row['T']} | {row['batch']} | {row['dtype']} | {row['attention']} | "
              f"{row['tokens_per_s']:,.0f} | {row['tflops']:.1f} | {row['temp_gib']:.2f} | {row['peak_gib']:.2f} | "
              f"{row['sample_s']:.3f} | {row['sampling_share']:.0%} | {row['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
