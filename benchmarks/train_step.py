"""Train-step throughput at the issue-11 shapes against composable-llm's PyTorch transformer timed in the same run.

  python -m benchmarks.train_step [--steps=10] [--devices=1] [--hugepages] [--shapes=s256_e64,...] [--kinds=...]
      [--members=2] [--anchor-dir=/tmp/anchor_head] [--anchor-python=/tmp/venv_anchor/bin/python]

Shapes (float32, batch 16, vocab 32 (gssm_jax/configs/base.py's graph), 4 layers, 4 heads, AdamW; the
anchor's shapes, `benchmarks.anchor.SHAPES`): s256_e64 (T=256, width 64), s256_e128 (T=256, width 128),
s2048_e64 (T=2048, width 64). Per shape, each cell in its own subprocess (peak RSS is per cell):
* xla, auto: our solo train step (`step.make_train_step`, the member step of the training programs) with
  that attention, on one fixed batch, median of --steps steps after a warm-up; the share of (step +
  sampling) that sampling the next batch on device would cost;
* ensemble: `--members` runs of the shape trained as one program (`step.StepProgram`, one step per call,
  tokens given, `auto` attention): aggregate and per-member tokens/s;
* every other learner of `gssm_jax.learners.registry` (`--kinds`) at the width matching the shape's
  transformer in parameters (`registry.matched_widths`; same depth, batch and optimizer);
* the anchor: composable-llm's `Transformer` and AdamW (`benchmarks.anchor`, torch.compile by default) under
  `--anchor-python`, from the tree at `--anchor-dir`; skipped with a one-line note when either is missing.
A row reports tokens/s, the ratio to the `xla` cell and to the anchor (the ensemble: aggregate / per member),
peak RSS (MiB), compile time (the anchor: its first step, torch.compile included) and the resolved choice.
--devices splits the batch over that many CPU devices (the ensemble: its members first, `step.ensemble_mesh`);
--hugepages runs each cell with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge pages for XLA's
buffers: no page fault per 4 KiB of temporaries on every step; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

from benchmarks import anchor, measure

ATTENTIONS = ("xla", "auto")
ENSEMBLE = "ensemble"


def _setup(shape: str, name: str):
    """(config, graph) of one cell: the shape's base config with attention or learner `name`."""
    from gssm_jax.configs.base import get_config  # noqa: PLC0415 (JAX is imported in the cells only)
    from gssm_jax.gssm.graph import GraphSpec  # noqa: PLC0415
    from gssm_jax.learners import registry  # noqa: PLC0415

    length, width = anchor.SHAPES[shape]
    config = get_config()
    config.model.update(width=width, depth=anchor.DEPTH, heads=anchor.HEADS)
    config.data.update(batch_size=anchor.BATCH, length=length)
    graph = GraphSpec.from_config(config.graph)
    if name in ATTENTIONS:
        config.model.attention = name
    elif name != ENSEMBLE:
        config.model.width = registry.matched_widths(graph.vocab_size, config.model, (name,))[name].width
        config.model.kind = name
    return config, graph


def run_cell(shape: str, name: str, steps: int, members: int) -> dict:
    """Times one cell in this process: attention `name`, learner `name`, or the ensemble; returns its row."""
    if name == ENSEMBLE:
        return run_ensemble(shape, steps, members)
    import jax  # noqa: PLC0415

    from gssm_jax import parallel, sampling  # noqa: PLC0415
    from gssm_jax.data import OnTheFlyBatches  # noqa: PLC0415
    from gssm_jax.gssm.kernels import sample_kernels  # noqa: PLC0415
    from gssm_jax.learners import count_parameters, transformer  # noqa: PLC0415
    from gssm_jax.training.step import init_state, make_optimizer, make_train_step, model_config  # noqa: PLC0415

    config, graph = _setup(shape, name)
    mesh = parallel.data_parallel_mesh()
    length = config.data.length
    shape_config = model_config(config, graph)
    optimizer, schedule = make_optimizer(config.optimizer, 1000)
    graphdef, state = init_state(shape_config, 0, optimizer)
    holder = {"state": jax.device_put(state, parallel.replicated(mesh))}
    step = make_train_step(graphdef, optimizer, schedule, mesh)
    data = OnTheFlyBatches(graph, sampling.sampling_tables(graph, sample_kernels(jax.random.key(0), graph)),
                           anchor.BATCH, length, jax.random.key(1), mesh)
    tokens = data.batch(0)
    started = time.perf_counter()
    compiled = step.lower(holder["state"], tokens).compile()
    compile_s = time.perf_counter() - started

    def train_once(_):
        holder["state"], metrics = compiled(holder["state"], tokens)
        jax.block_until_ready(metrics)

    train_once(0)  # warm-up: first touch of the buffers
    step_s = measure.median_seconds(train_once, steps)
    sample_s = measure.median_seconds(lambda index: jax.block_until_ready(data.batch(index + 1)), steps)
    resolved = (transformer.check_attention(shape_config, length).name if name in ATTENTIONS
                else f"width {config.model.width}, {count_parameters(state['params']):,} parameters")
    return {"shape": shape, "cell": name, "resolved": resolved, "members": 1,
            "devices": jax.device_count(), "tokens_per_s": anchor.BATCH * length / step_s, "step_s": step_s,
            "compile_s": compile_s, "sampling_share": sample_s / (step_s + sample_s),
            "peak_rss_mib": measure.peak_rss_mib()}


def run_ensemble(shape: str, steps: int, members: int) -> dict:
    """`members` runs of the shape in one step program (tokens given, one step per call); its row."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from gssm_jax.training import step  # noqa: PLC0415
    from gssm_jax.training.run import resolve  # noqa: PLC0415

    config, graph = _setup(shape, ENSEMBLE)
    run = resolve(config, None)
    shape_key = dataclasses.replace(step.ProgramShape.of(run, members), source="file")
    program = step.StepProgram(shape_key, step.ensemble_mesh(members))
    states = [step.init_state(run.shape, seed, program.optimizer)[1] for seed in range(members)]
    state = jax.device_put(jax.tree.map(lambda *leaves: jnp.stack(leaves), *states), program.members_sharding)
    tokens = np.random.default_rng(0).integers(0, graph.vocab_size, (1, members, anchor.BATCH, run.data.length))
    tokens = jax.device_put(tokens.astype(program.abstract_stream(1).dtype), program.stream_sharding())
    rates = jax.device_put(np.full((1, members), run.optimizer.learning_rate, np.float32), program.replicated)
    started = time.perf_counter()
    compiled = program.compiled(1)
    compile_s = time.perf_counter() - started
    holder = {"state": state}

    def train_once(_):
        holder["state"], metrics = compiled(holder["state"], tokens, rates)
        jax.block_until_ready(metrics)

    train_once(0)
    step_s = measure.median_seconds(train_once, steps)
    tokens_per_s = members * run.tokens_per_step / step_s
    return {"shape": shape, "cell": ENSEMBLE, "resolved": f"{members} members, auto attention", "members": members,
            "devices": jax.device_count(), "tokens_per_s": tokens_per_s, "step_s": step_s, "compile_s": compile_s,
            "sampling_share": float("nan"), "peak_rss_mib": measure.peak_rss_mib()}


def _subprocess_cell(options, shape: str, name: str) -> dict:
    steps = 2 if (shape == "s2048_e64" and name == "xla") else options.steps
    env = dict(os.environ)
    if options.devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={options.devices}"
    if options.hugepages:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    command = [sys.executable, "-m", "benchmarks.train_step", f"--cell={shape}:{name}", f"--steps={steps}",
               f"--members={options.members}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        return {"shape": shape, "cell": name, "error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def print_shape(options, shape: str, kinds: list[str], python: str, skipped: str | None) -> None:
    """The rows of one shape: our cells, then the anchor's (or the note saying why it was skipped)."""
    rows = [_subprocess_cell(options, shape, name) for name in (*ATTENTIONS, ENSEMBLE, *kinds)]
    anchor_row = None if skipped else anchor.measure(
        python, options.anchor_dir, shape, options.anchor_compile == "on", options.anchor_threads,
        options.anchor_steps, options.anchor_warmup)
    baseline = rows[0].get("tokens_per_s")
    reference = None if anchor_row is None else anchor_row.get("tokens_per_s")
    for row in rows:
        if "error" in row:
            print(f"| {shape} | {row['cell']} | error: {row['error'][:100]} | | | | | | |", flush=True)
            continue
        members, tokens_per_s = row["members"], row["tokens_per_s"]
        per_member = f"{tokens_per_s / members:,.0f}" if members > 1 else ""
        versus = _ratio(tokens_per_s, reference)
        if members > 1 and reference:
            versus += f" / {_ratio(tokens_per_s / members, reference)}"
        share = "-" if row["sampling_share"] != row["sampling_share"] else f"{row['sampling_share']:.1%}"
        print(f"| {shape} | {row['cell']} ({row['resolved']}) | {tokens_per_s:,.0f} | {per_member} | "
              f"{_ratio(tokens_per_s, baseline)} | {versus} | {row['peak_rss_mib']:,.0f} | {row['compile_s']:.1f} | "
              f"{share} |", flush=True)
    if skipped:
        print(f"| {shape} | composable-llm anchor: skipped, {skipped} | | | | | | | |", flush=True)
    elif "error" in anchor_row:
        print(f"| {shape} | composable-llm anchor | error: {anchor_row['error'][:100]} | | | | | | |", flush=True)
    else:
        print(f"| {shape} | composable-llm anchor (torch {anchor_row['torch']}, compile {options.anchor_compile}, "
              f"{anchor_row['threads']} threads) | {reference:,.0f} | | {_ratio(reference, baseline)} | 1.00x | "
              f"{anchor_row['peak_rss_mib']:,.0f} | {anchor_row['first_step_s']:.1f} (first step) | - |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell (after a warm-up); T=2048 xla: 2")
    parser.add_argument("--devices", type=int, default=1, help="CPU devices the batch is split over")
    parser.add_argument("--hugepages", action="store_true", help="cells with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    parser.add_argument("--shapes", default=",".join(anchor.SHAPES), help="shapes to run")
    parser.add_argument("--kinds", default="", help="learners other than the transformer (default: every kind)")
    parser.add_argument("--members", type=int, default=2, help="runs in the ensemble cell")
    parser.add_argument("--cell", default="", help="internal: run one cell 'shape:name' in this process")
    anchor.arguments(parser)
    options = parser.parse_args()
    if options.cell:
        shape, name = options.cell.split(":")
        print(json.dumps(run_cell(shape, name, options.steps, options.members)))
        return
    from gssm_jax.learners import registry  # noqa: PLC0415

    kinds = options.kinds.split(",") if options.kinds else [kind for kind in registry.KINDS if kind != "transformer"]
    python = anchor.default_python() if options.anchor_python is None else options.anchor_python
    skipped = anchor.unavailable(python, options.anchor_dir)
    print(f"CPU: {measure.cpu_model()}; {options.devices} CPU device(s), hugepages={options.hugepages}, batch "
          f"{anchor.BATCH}, {anchor.DEPTH} layers, {anchor.HEADS} heads, float32; median of {options.steps} steps "
          "(T=2048 xla: 2); every row measured in this run")
    header = ("| shape | cell (resolved) | tokens/s | per member | vs xla | vs anchor (ensemble: aggregate / per "
              "member) | peak RSS MiB | compile s | sampling share |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1), flush=True)
    for shape in options.shapes.split(","):
        print_shape(options, shape, kinds, python, skipped)


if __name__ == "__main__":
    main()
