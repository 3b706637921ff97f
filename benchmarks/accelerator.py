"""The training loop against its own step program, on an accelerator (issue 20 item 4: loop >= 90% of step + sampling).

  python -m benchmarks.accelerator            # accelerator: experiment1 size=gpu shapes (CPU: size=cpu shapes)
  python -m benchmarks.accelerator --quick    # seconds on a CPU: size=tiny shapes, four_by_four
  python -m benchmarks.accelerator --graphs=four_by_four --members=16 --loop-steps=100

One row per graph, for M runs of its Experiment 1 program (`--members`, default 1: a solo run; the configs the
sweep writes, `benchmarks.programs`):
* step + sampling: the bare step program of `gssm_jax.training.step` as the loop calls it (K steps per call,
  each step's batch sampled inside; median of `--repeats` x `--calls` calls after a warm-up; aggregate
  tokens/s over the members), its model TFLOP/s (6 N per token for the N non-embedding parameters, plus
  6 T W per layer for causal attention), its compiled memory per device and its compile time; the sampler
  alone (every member's batch of one step, jitted) as a share of a step;
* loop: `gssm_jax.training.loop.train_ensemble` of the same runs shortened to `--loop-steps` steps (default
  4 evaluations' worth, at least 20) with the size's evaluation, logging and checkpoint cadence and its
  cool-down branch (the warmup scaled with the run), run twice in fresh run directories, the second timed.
  *steady*: the tokens trained (branch steps included) between the first and the last metrics record over
  their elapsed time, evaluations, checkpoints and records inside; *end to end*: all tokens trained over the
  wall time of the whole call (setup, held-out set and its exact losses, compiled programs loaded, last
  evaluation, result);
* loop / step: steady loop tokens/s over the step program's (target >= 0.9 for a solo run).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp

from benchmarks import measure, programs
from gssm_jax.learners import transformer
from gssm_jax.training import loop, run_directory, schedule
from gssm_jax.training.run import resolve

GRAPHS = ("four_by_four", "eight_by_four")


def short_run(config, loop_steps: int | None):
    """`config` shortened to `loop_steps` steps (default: 4 evaluations, at least 20 steps, at most the run's),
    its evaluation, logging and checkpoint cadence kept, its warmup scaled with the run."""
    train, optimizer = config.train, config.optimizer
    eval_every, log_every, num_steps = train.eval_every, train.log_every, train.num_steps
    steps = loop_steps or min(num_steps, max(4 * eval_every, 20))
    train.num_steps, train.eval_every, train.log_every = steps, eval_every, log_every
    optimizer.warmup_steps = int(optimizer.warmup_steps * steps // num_steps)
    return config


def step_rates(configs, calls: int, repeats: int) -> dict:
    """The bare step program's row (`programs.TimedProgram`), with model TFLOP/s and the sampler's share."""
    timed = programs.TimedProgram(configs)
    row = timed.row(calls, repeats)
    ensemble, members = timed.ensemble, timed.ensemble.members
    run = ensemble.runs[0]
    sample = jax.jit(lambda stream, step: ensemble.program.sample(stream, jnp.full((members,), step, jnp.int32)))
    jax.block_until_ready(sample(ensemble.stream, 0))  # compiles
    sample_s = measure.median_seconds(lambda index: jax.block_until_ready(sample(ensemble.stream, index + 1)),
                                      max(repeats, 1))
    step_s = row["call_s"] / row["call_steps"]
    shape, length = run.shape, run.data.length
    parameters = ensemble.num_parameters() - run.graph.vocab_size * shape.width
    flops_per_token = 6 * parameters + 6 * length * shape.width * shape.depth
    attention = (transformer.check_attention(shape, length).name
                 if isinstance(shape, transformer.TransformerConfig) else "-")
    in_use = jax.devices()[0].memory_stats() or {}
    return {**row, "tflops": row["tokens_per_s"] * flops_per_token / 1e12, "sampling_share": sample_s / step_s,
            "attention": attention, "dtype": shape.dtype, "length": length, "batch": run.data.batch_size,
            "peak_gib": in_use.get("peak_bytes_in_use", float("nan")) / 2**30}


def loop_rates(config, members: int, root: str) -> dict:
    """The loop's steady and end-to-end tokens/s on `members` runs of `config` (the module docstring)."""
    configs = programs.member_configs(config, members, os.path.join(root, "warm"))
    started = time.perf_counter()
    loop.train_ensemble(configs)  # compiles every program the run uses
    warm_s = time.perf_counter() - started
    configs = programs.member_configs(config, members, os.path.join(root, "timed"))
    started = time.perf_counter()
    loop.train_ensemble(configs)
    wall_s = time.perf_counter() - started
    run = resolve(configs[0], None)
    branches = schedule.timeline(run).branches
    tokens_per_step = members * run.tokens_per_step
    trained = run.num_steps + sum(branch.end - branch.fork for branch in branches)
    records = run_directory.read_metrics(configs[0].workdir)  # every member shares the timeline
    steady = float("nan")
    if len(records) >= 2:
        first, last = records[0]["step"], records[-1]["step"]
        steps = last - first + sum(branch.end - branch.fork for branch in branches if first <= branch.fork < last)
        steady = steps * tokens_per_step / (records[-1]["elapsed_s"] - records[0]["elapsed_s"])
    return {"steady_tokens_per_s": steady, "end_to_end_tokens_per_s": trained * tokens_per_step / wall_s,
            "wall_s": wall_s, "warm_s": warm_s, "num_steps": run.num_steps}


def main() -> None:
    on_cpu = jax.default_backend() == "cpu"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="size=tiny, four_by_four, one call (seconds on a CPU)")
    parser.add_argument("--size", default="cpu" if on_cpu else "gpu", help="experiment1 size whose shapes to run")
    parser.add_argument("--graphs", default=",".join(GRAPHS), help="graph families, one row each")
    parser.add_argument("--members", type=int, default=1, help="runs trained together (1: a solo run)")
    parser.add_argument("--calls", type=int, default=3, help="K-step calls per timed repetition of the program")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (the median is reported)")
    parser.add_argument("--loop-steps", type=int, default=0,
                        help="steps of the loop's run (0: 4 evaluations' worth, >= 20)")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.graphs, arguments.calls, arguments.repeats = "tiny", "four_by_four", 1, 1
    print(f"device: {measure.device_name()}")
    print(f"experiment1 size={arguments.size}, {arguments.members} run(s) per program; step + sampling: median of "
          f"{arguments.repeats} x {arguments.calls} calls; loop: the second of two short runs", flush=True)
    print("| graph | T | batch | M | dtype | attention | K | step + sampling tokens/s | loop tokens/s (steady) | "
          "loop / step | loop end to end tokens/s | loop steps | model TFLOP/s | sampling share | "
          "compiled GiB / device | peak in use GiB | compile s | loop wall s (first / timed) |")
    print("|" + "---|" * 18, flush=True)
    for graph in arguments.graphs.split(","):
        config = short_run(programs.sweep_config(graph, arguments.size), arguments.loop_steps)
        step = step_rates(programs.member_configs(config, arguments.members), arguments.calls, arguments.repeats)
        with tempfile.TemporaryDirectory(prefix="benchmark_loop_") as root:
            looped = loop_rates(config, arguments.members, root)
        peak = "-" if math.isnan(step["peak_gib"]) else f"{step['peak_gib']:.2f}"
        print(f"| {graph} | {step['length']} | {step['batch']} | {step['members']} | {step['dtype']} | "
              f"{step['attention']} | {step['call_steps']} | {step['tokens_per_s']:,.0f} | "
              f"{looped['steady_tokens_per_s']:,.0f} | {looped['steady_tokens_per_s'] / step['tokens_per_s']:.2f} | "
              f"{looped['end_to_end_tokens_per_s']:,.0f} | {looped['num_steps']} | {step['tflops']:.2f} | "
              f"{step['sampling_share']:.0%} | {step['memory'].total_bytes / 2**30:.3g} | {peak} | "
              f"{step['compile_s']:.1f} | {looped['warm_s']:.1f} / {looped['wall_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
