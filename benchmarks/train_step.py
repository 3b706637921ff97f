"""Train-step throughput at the issue-11 shapes: `auto` attention against today's `xla` in the same run.

  python -m benchmarks.train_step [--steps=10] [--devices=1] [--hugepages] [--shapes=s256_e64,...] [--kinds=...]

Shapes (float32, batch 16, vocab 32 (gssm_jax/configs/base.py's graph), 4 layers, 4 heads, AdamW), as timed for
composable-llm's PyTorch anchor by /work/shared/tools/anchor_train_throughput.py:
  s256_e64 (T=256, width 64), s256_e128 (T=256, width 128), s2048_e64 (T=2048, width 64).
Each shape also times every other learner of `gssm_jax.learners.registry` (`--kinds`) at the width that matches
the shape's transformer in parameters (`registry.matched_widths`; same depth, batch and optimizer), with its
kind's default scan. Each cell (shape, attention or learner) runs in its own subprocess, so peak RSS is per
cell. A row reports tokens/s (median step), the ratio to the `xla` cell of the same shape, peak RSS (MiB),
compile time, the implementation `auto` resolved to (a learner: its width and parameters), and the share of
(step + sampling) spent sampling the batch on device.
--devices splits the batch over that many CPU devices; --hugepages runs each cell with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge pages for XLA's buffers: no page fault per 4 KiB
of temporaries on every step; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

SHAPES = {"s256_e64": (256, 64), "s256_e128": (256, 128), "s2048_e64": (2048, 64)}
ANCHOR = {"s256_e64": 25_404, "s256_e128": 10_631, "s2048_e64": 9_713}  # torch.compile tokens/s, same CPU
BATCH, DEPTH, HEADS = 16, 4, 4

_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per cell (after one warm-up step); T=2048 xla runs 2.")
_DEVICES = flags.DEFINE_integer("devices", 1, "CPU devices the batch is split over.")
_HUGEPAGES = flags.DEFINE_bool("hugepages", False, "Run cells with GLIBC_TUNABLES=glibc.malloc.hugetlb=1.")
_SHAPES = flags.DEFINE_list("shapes", list(SHAPES), "Shapes to run.")
_KINDS = flags.DEFINE_list("kinds", [], "Learners other than the transformer (default: every registry kind).")
_CELL = flags.DEFINE_string("cell", "", "Internal: run one cell 'shape:attention' or 'shape:kind' in this process.")
ATTENTIONS = ("xla", "auto")


def _median_seconds(function, repetitions: int) -> float:
    times = []
    for repetition in range(repetitions):
        start = time.perf_counter()
        function(repetition)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_cell(shape: str, name: str, steps: int) -> dict:
    """Times one cell in this process: the transformer with attention `name`, or learner `name`; returns its row."""
    import jax

    from gssm_jax import parallel, sampling
    from gssm_jax.configs.base import get_config
    from gssm_jax.data import OnTheFlyBatches
    from gssm_jax.gssm.graph import GraphSpec
    from gssm_jax.gssm.kernels import sample_kernels
    from gssm_jax.learners import count_parameters, registry, transformer
    from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config

    length, width = SHAPES[shape]
    config = get_config()
    config.model.update(width=width, depth=DEPTH, heads=HEADS)
    config.data.update(batch_size=BATCH, length=length)
    graph = GraphSpec.from_config(config.graph)
    if name in ATTENTIONS:
        config.model.attention = name
    else:
        config.model.width = registry.matched_widths(graph.vocab_size, config.model, (name,))[name].width
        config.model.kind = name
    mesh = parallel.data_parallel_mesh()
    shape_config = model_config(config, graph)
    optimizer, schedule = make_optimizer(config.optimizer, 1000)
    graphdef, state = init_state(shape_config, 0, optimizer)
    holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
    step = make_train_step(graphdef, optimizer, schedule, mesh)
    data = OnTheFlyBatches(graph, sampling.sampling_tables(graph, sample_kernels(jax.random.key(0), graph)),
                              BATCH, length, jax.random.key(1), mesh)
    tokens = data.batch(0)
    started = time.perf_counter()
    compiled = step.lower(holder["state"], tokens).compile()
    compile_s = time.perf_counter() - started

    def train_once(_):
        holder["state"], metrics = compiled(holder["state"], tokens)
        jax.block_until_ready(metrics)

    train_once(0)  # warm-up: first touch of the buffers
    step_s = _median_seconds(train_once, steps)
    sample_s = _median_seconds(lambda index: jax.block_until_ready(data.batch(index + 1)), steps)
    resolved = (transformer.check_attention(shape_config, length).name if name in ATTENTIONS
                else f"width {config.model.width}, {count_parameters(state['params']):,} parameters")
    return {"shape": shape, "attention": name, "resolved": resolved,
            "devices": jax.device_count(), "tokens_per_s": BATCH * length / step_s, "step_s": step_s,
            "compile_s": compile_s, "sampling_share": sample_s / (step_s + sample_s),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}


def _subprocess_cell(shape: str, name: str) -> dict:
    steps = 2 if (shape == "s2048_e64" and name == "xla") else _STEPS.value
    env = dict(os.environ)
    if _DEVICES.value > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_DEVICES.value}"
    if _HUGEPAGES.value:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    command = [sys.executable, "-m", "benchmarks.train_step", f"--cell={shape}:{name}", f"--steps={steps}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        return {"shape": shape, "attention": name, "error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CELL.value:
        shape, name = _CELL.value.split(":")
        print(json.dumps(run_cell(shape, name, _STEPS.value)))
        return
    print(f"{_DEVICES.value} CPU device(s), hugepages={_HUGEPAGES.value}, batch {BATCH}, {DEPTH} layers, "
          f"{HEADS} heads, float32; median of {_STEPS.value} steps (T=2048 xla: 2)")
    from gssm_jax.learners import registry

    kinds = _KINDS.value or [kind for kind in registry.KINDS if kind != "transformer"]
    header = ("| shape | attention or learner (resolved) | tokens/s | vs xla | anchor (torch.compile) | peak RSS MiB | "
              "compile s | sampling share |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for shape in _SHAPES.value:
        rows = [_subprocess_cell(shape, name) for name in (*ATTENTIONS, *kinds)]
        baseline = rows[0].get("tokens_per_s")
        for row in rows:
            if "error" in row:
                print(f"| {shape} | {row['attention']} | error: {row['error'][:80]} | | | | | |")
                continue
            ratio = f"{row['tokens_per_s'] / baseline:.2f}x" if baseline else "-"
            print(f"| {shape} | {row['attention']} ({row['resolved']}) | {row['tokens_per_s']:,.0f} | {ratio} | "
                  f"{ANCHOR[shape]:,} | {row['peak_rss_mib']:,.0f} | {row['compile_s']:.1f} | "
                  f"{row['sampling_share']:.1%} |", flush=True)


if __name__ == "__main__":
    app.run(main)
