"""Train-step throughput and compiled memory of every learner at parameter-matched widths.

  python -m benchmarks.learners [--lengths=256,2048] [--kinds=...] [--methods=auto] [--tokens_per_step=8192]

Each learner gets the width whose parameter count matches the `base` config's transformer
(width 64, depth 2: `registry.matched_widths`), the same depth and the same tokens per step
(batch = tokens_per_step / length), so the rows compare architectures at equal size and work. The
baseline is the transformer, measured in the same run. Memory is XLA's compiled buffer assignment
for the step (arguments + outputs + temporaries - donated aliases), known without running it.
`--methods=associative,sequential,chunked` times each linear-recurrence method of
`gssm_jax.learners.recurrence` (the LSTM's recurrence is sequential only).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from gssm_jax import parallel
from gssm_jax.configs.base import get_config
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners import count_parameters, registry
from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config

_LENGTHS = flags.DEFINE_list("lengths", ["256", "2048"], "Sequence lengths T.")
_KINDS = flags.DEFINE_list("kinds", list(registry.KINDS), "Learners to time.")
_METHODS = flags.DEFINE_list("methods", ["auto"], "Linear-recurrence methods to time (recurrent kinds).")
_TOKENS = flags.DEFINE_integer("tokens_per_step", 8192, "Tokens per step; batch = tokens_per_step / length.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per row (after one warm-up).")


def benchmark(kind: str, length: int, method: str, tokens_per_step: int, repetitions: int) -> dict:
    """Seconds per train step (median), compiled memory (bytes) and parameters of one learner."""
    config = get_config()
    graph = GraphSpec.from_config(config.graph)
    width = registry.matched_widths(graph.vocab_size, config.model, (kind,))[kind].width
    config.model.kind, config.model.width, config.model.scan = kind, width, method
    mesh = parallel.data_parallel_mesh()
    optimizer, schedule = make_optimizer(config.optimizer, 1000)
    graphdef, state = init_state(model_config(config, graph), 0, optimizer)
    state = jax.device_put(state, parallel.replicated(mesh))
    train_step = make_train_step(graphdef, optimizer, schedule, mesh)
    batch_size = tokens_per_step // length
    tokens = jax.device_put(np.random.default_rng(0).integers(0, graph.vocab_size, (batch_size, length), np.uint8),
                            parallel.batch_sharded(mesh))
    memory = train_step.lower(state, tokens).compile().memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes)
    parameters = count_parameters(state["params"])
    state, metrics = train_step(state, tokens)  # warm-up: compilation
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        state, metrics = train_step(state, tokens)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {"width": width, "parameters": parameters, "seconds": seconds, "peak_bytes": peak,
            "tokens_per_second": batch_size * length / seconds}


def main(argv):
    del argv
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; {_TOKENS.value} tokens per step; "
          f"median of {_STEPS.value} steps")
    print("| T | learner | scan | width | parameters | tokens/s | step ms | compiled memory MiB | vs transformer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for length in map(int, _LENGTHS.value):
        baseline = None
        for kind in _KINDS.value:
            methods = ["-"] if kind in ("transformer", "lstm") else _METHODS.value
            for method in methods:
                row = benchmark(kind, length, "auto" if method == "-" else method, _TOKENS.value, _STEPS.value)
                if kind == "transformer":
                    baseline = row["tokens_per_second"]
                ratio = f"{row['tokens_per_second'] / baseline:.2f}x" if baseline else "-"
                print(f"| {length} | {kind} | {method} | {row['width']} | {row['parameters']:,} | "
                      f"{row['tokens_per_second']:,.0f} | {row['seconds'] * 1e3:.0f} | "
                      f"{row['peak_bytes'] / 2**20:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    app.run(main)
