"""Throughput of the exact forward algorithm (`gssm_jax.inference`) against numpy references.

  python -m benchmarks.forward [--quick] [--repetitions=2]

For composable-llm's 4x4-state/32-token graph (256 latent states) and 8x4-state/64-token graph (65,536
latent states), batch 64, length 2048 (4x4) / 512 (8x4; the cost per token does not depend on the
length), float32, side by side:

* **plain API, fresh process**: `gssm_jax.token_losses` in a subprocess that sets no XLA flag and no
  device count, exactly what a user gets (on a CPU: one piece of the batch per core, from a thread
  pool); its first call (compilation + one pass) and the best later call;
* **one jitted call**: the same pass as a single call on one CPU device (one thread runs its time
  loop: the library before issue 12, the per-sequence block pass on 8x4);
* **batched pass on the CPU** (`implementation="batched"`, the accelerator path forced), short run;
* a plain numpy factorised forward pass in float64 (`gssm_jax.inference.numpy_forward`) on the first
  `reference_steps` positions, and (4x4 only) a numpy dense pass over the (S, S) product transition.

Agreement: the largest difference over sequences of the mean per-token loss on the reference positions
between the plain API and the float64 reference, in nats/token. Targets (2 cores): 8x4 >= 15 k
tokens/s, 4x4 >= 3 M tokens/s, first call <= 10 s, agreement <= 1e-6 nats/token.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from gssm_jax import inference
from gssm_jax.gssm.graph import GraphSpec, experiment1_graph_config
from gssm_jax.gssm.kernels import conditional_tables, sample_kernels
from gssm_jax.inference import numpy_forward
from gssm_jax.sampling import sampler

_QUICK = flags.DEFINE_bool("quick", False, "Smoke test: length 256 and fewer reference steps.")
_REPETITIONS = flags.DEFINE_integer("repetitions", 2, "Timed repetitions of the JAX pass (best is reported).")
_CHILD = flags.DEFINE_string("child", None, "Internal: time the plain API on this graph in this process, print JSON.")
_LENGTH = flags.DEFINE_integer("length", 512, "Internal: sequence length of --child.")

GRAPHS = {"4x4/V32": (4, 32, 256, True), "8x4/V64": (8, 64, 16, False)}  # hidden, V, reference steps, dense
BATCH, QUICK_LENGTH = 64, 256
LENGTHS = {"4x4/V32": 2048, "8x4/V64": 512}
ALPHA_X, ALPHA_Z = 0.1, 0.1


def _best_seconds(function, repetitions: int) -> float:
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return min(times)


def _case(label: str, length: int):
    num_hidden, vocab, _, _ = GRAPHS[label]
    graph = GraphSpec.from_config(experiment1_graph_config(num_hidden, 4, vocab, ALPHA_X, ALPHA_Z))
    kernels = sample_kernels(jax.random.key(0), graph)
    return graph, kernels, sampler.sample_tokens(jax.random.key(1), graph, kernels, BATCH, length)


def plain_api(label: str, length: int, repetitions: int) -> dict:
    """In this (fresh) process: the first and best later call of `gssm_jax.token_losses`."""
    graph, kernels, tokens = _case(label, length)
    start = time.perf_counter()
    jax.block_until_ready(inference.token_losses(graph, kernels, tokens))
    first = time.perf_counter() - start
    seconds = _best_seconds(lambda: inference.token_losses(graph, kernels, tokens), repetitions)
    return {"first_s": first, "tokens_per_s": tokens.size / seconds}


def _fresh_process(label: str, length: int, repetitions: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.forward", f"--child={label}", f"--length={length}",
               f"--repetitions={repetitions}"]
    environment = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _timed_call(function, repetitions: int) -> tuple[float, float]:
    start = time.perf_counter()
    jax.block_until_ready(function())
    first = time.perf_counter() - start
    return first, _best_seconds(function, repetitions)


def benchmark_graph(label: str, length: int, repetitions: int, quick: bool) -> list[tuple[str, float, str]]:
    _, _, reference_steps, with_dense = GRAPHS[label]
    reference_steps = max(4, reference_steps // 4) if quick else reference_steps
    fresh = _fresh_process(label, length, repetitions)
    graph, kernels, tokens = _case(label, length)
    tables = {name: np.asarray(table, np.float64) for name, table in conditional_tables(graph, kernels).items()}
    jax_tables = inference._tables(graph, kernels)
    int_tokens = tokens.astype(np.int32)
    one_call = functools.partial(inference._chunked_forward, graph, jax_tables, int_tokens, implementation="cpu")
    one_first, one_seconds = _timed_call(one_call, repetitions)
    short = int_tokens[:, :max(8, length // 16)]
    batched = functools.partial(inference.token_losses, graph, kernels, short, implementation="batched")
    batched_first, batched_seconds = _timed_call(batched, 1)

    prefix = np.asarray(tokens[:, :reference_steps]).astype(np.int64)
    start = time.perf_counter()
    reference = numpy_forward.factorised_losses(graph, tables, prefix)
    numpy_rate = prefix.size / (time.perf_counter() - start)
    prefix_losses = np.asarray(inference.token_losses(graph, kernels, prefix))  # causal: the first losses
    agreement = np.max(np.abs(prefix_losses.mean(1) - reference.mean(1)))
    rate = fresh["tokens_per_s"]
    rows = [
        (f"{label} plain API, fresh process", rate,
         f"first call {fresh['first_s']:.1f} s; {rate / numpy_rate:.0f}x numpy; |diff| {agreement:.1e} nats/token"),
        (f"{label} one jitted call, one thread", tokens.size / one_seconds, f"first call {one_first:.1f} s"),
        (f"{label} batched pass forced on CPU", short.size / batched_seconds,
         f"first call {batched_first:.1f} s; length {short.shape[1]}"),
        (f"{label} numpy factorised float64", numpy_rate, f"{reference_steps} steps"),
    ]
    if with_dense:
        start = time.perf_counter()
        dense = numpy_forward.dense_losses(graph, tables, prefix)
        dense_rate = prefix.size / (time.perf_counter() - start)
        rows.append((f"{label} numpy dense (S, S) float64", dense_rate,
                     f"|diff| vs factorised {np.max(np.abs(dense - reference)):.1e} nats"))
    return rows


def main(argv) -> None:
    del argv
    if _CHILD.value:
        print(json.dumps(plain_api(_CHILD.value, _LENGTH.value, _REPETITIONS.value)))
        return
    print(f"forward algorithm, batch {BATCH}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"backend {jax.default_backend()}")
    print(f"{'pass':44s} {'tokens/s':>12s}  notes")
    for label in GRAPHS:
        length = QUICK_LENGTH if _QUICK.value else LENGTHS[label]
        for name, rate, notes in benchmark_graph(label, length, _REPETITIONS.value, _QUICK.value):
            print(f"{name:44s} {rate:12,.0f}  {notes}", flush=True)


if __name__ == "__main__":
    app.run(main)
