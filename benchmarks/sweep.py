"""Ensembles against solo runs: aggregate training tokens/s of M runs trained as one program (issue 20 item 7).

  python -m benchmarks.sweep            # CPU: experiment1 size=cpu shapes; accelerator: size=gpu shapes
  python -m benchmarks.sweep --quick    # seconds on a CPU: size=tiny shapes, M = 1, 2, two workers
  python -m benchmarks.sweep --size=cpu --members=1,2,4 --workers=2 --calls=3 --repeats=3

Shapes: one program of the Experiment 1 sweep (`--graph`, default four_by_four; the size's model entry; its
T, batch, dtype and attention), its runs' configs as the sweep writes them (`benchmarks.programs`). What is
timed is the loop's own call, `gssm_jax.training.members.Ensemble.run`: K steps per call (the run's
timeline), each step's batch sampled inside the program for every member; the rate is the median over
`--repeats` of `--calls` calls dispatched back to back, after one warm-up call. Compile time is reported apart.

Rows, all measured in this run:
* solo: one run (an ensemble of one), the baseline. M solo runs trained one after another train at its rate,
  so each row's ratio, aggregate tokens/s / solo tokens/s, is the speed-up over those M solo runs.
* ensemble of M: M runs in one program (M = 1, 2, 4, 8, 16 and the sizes the sweep itself would use for this
  program: `gssm_jax.experiment1.ensembles` "auto", for its tuning stage and its main stage), aggregate and
  per-member tokens/s, and the program's compiled memory per device (temporaries + arguments + outputs,
  `gssm_jax.training.memory.ensemble_memory`).
* W workers (CPU, W = config.experiment1.workers, "auto" = 2): W solo runs at once in W spawned processes,
  what the sweep does on a CPU (in its environment, `gssm_jax.experiment1.launchers.worker_environment`);
  aggregate tokens/s = all tokens / the span from the first start to the last end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import jax

from benchmarks import measure, programs
from gssm_jax.experiment1 import ensembles, launchers, tuning

SIZES = (1, 2, 4, 8, 16)


def sweep_sizes(config) -> dict[str, list[int]]:
    """`{stage: ensemble sizes}` the sweep would train one program's runs in ("auto" on this backend).

    Tuning stage: every rate x tuning seed x side; main stage: every seed x side, less the tuning seeds' (their
    tuning run at the chosen rate is their main run). On an accelerator "auto" compiles the ensemble program
    to read its memory (`ensembles.ensemble_limit`), halving until it fits config.train.memory_budget_gib.
    """
    sides, seeds = len(config.experiment1.sides), len(config.experiment1.seeds)
    tuned_seeds = len(tuning.tuning_seeds(config))
    stages = {"tuning": len(tuning.learning_rates(config)) * tuned_seeds * sides, "main": (seeds - tuned_seeds) * sides}
    sizes, example = {}, programs.member_configs(config, 1)[0]
    for stage, runs in stages.items():
        if runs:
            limit = ensembles.ensemble_limit(config, example, runs)
            sizes[stage] = sorted({len(piece) for piece in ensembles.split(range(runs), limit)}, reverse=True)
    return sizes


def _worker(config, calls: int, repeats: int, barrier, results) -> None:
    """One spawned worker: a solo run's program compiled and warmed up, then timed from the common start."""
    try:
        program = programs.TimedProgram([config])
        barrier.wait(timeout=600)
        start = time.monotonic()  # system-wide, comparable between the processes
        tokens = program.train(calls * repeats)
        results.put({"tokens": tokens, "start": start, "end": time.monotonic(), "compile_s": program.compile_s})
    except Exception as error:  # reported by the parent, which does not wait on a dead worker
        barrier.abort()
        results.put({"error": f"{type(error).__name__}: {error}"})


def time_workers(config, workers: int, calls: int, repeats: int) -> dict:
    """W solo runs trained at once by W spawned processes (as `config.experiment1.workers` launches them)."""
    context = multiprocessing.get_context("spawn")  # a forked JAX runtime is unsafe (the sweep spawns too)
    barrier, results = context.Barrier(workers), context.Queue()
    configs = programs.member_configs(config, workers)
    processes = [context.Process(target=_worker, args=(configs[k], calls, repeats, barrier, results))
                 for k in range(workers)]
    with launchers.worker_environment():  # the sweep's worker processes start with it
        for process in processes:
            process.start()
    outcomes = [results.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
    if errors:
        return {"error": errors[0]}
    span = max(outcome["end"] for outcome in outcomes) - min(outcome["start"] for outcome in outcomes)
    tokens_per_s = sum(outcome["tokens"] for outcome in outcomes) / span
    return {"members": workers, "tokens_per_s": tokens_per_s, "per_member_tokens_per_s": tokens_per_s / workers,
            "compile_s": max(outcome["compile_s"] for outcome in outcomes)}


def _row(name: str, row: dict, solo: float | None, steps: int | str, sweep: str = "") -> str:
    if "error" in row:
        return f"| {name} | {row.get('members', '')} | {steps} | {sweep} | error: {row['error'][:100]} | | | | |"
    ratio = f"{row['tokens_per_s'] / solo:.2f}x" if solo else "-"
    needed = f"{row['memory'].total_bytes / 2**30:.3g}" if "memory" in row else "-"
    return (f"| {name} | {row['members']} | {steps} | {sweep} | {row['tokens_per_s']:,.0f} | "
            f"{row['per_member_tokens_per_s']:,.0f} | {ratio} | {needed} | {row['compile_s']:.1f} |")


def main() -> None:
    on_cpu = jax.default_backend() == "cpu"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="size=tiny, M = 1, 2, one call (seconds on a CPU)")
    parser.add_argument("--size", default="cpu" if on_cpu else "gpu", help="experiment1 size whose shapes to run")
    parser.add_argument("--graph", default="four_by_four", help="the program's graph family")
    parser.add_argument("--members", default=",".join(map(str, SIZES)),
                        help="ensemble sizes (the sweep's own sizes are added)")
    parser.add_argument("--workers", default="auto",
                        help="worker processes of solo runs at once: auto (config.experiment1.workers on a CPU, "
                             "none on an accelerator) or a number (0: none)")
    parser.add_argument("--calls", type=int, default=3, help="K-step calls per timed repetition")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (the median is reported)")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.size, arguments.members, arguments.calls, arguments.repeats = "tiny", "1,2", 1, 1
    config = programs.sweep_config(arguments.graph, arguments.size)
    workers = (ensembles.workers(config) if on_cpu else 0) if arguments.workers == "auto" else int(arguments.workers)

    print(f"device: {measure.device_name()}")
    print(f"program: experiment1 size={arguments.size}, {programs.describe(config)}")
    stages = sweep_sizes(config)
    print("the sweep's ensembles of this program (auto): "
          + "; ".join(f"{stage} stage {', '.join(map(str, sizes))}" for stage, sizes in stages.items()))
    print(f"median of {arguments.repeats} x {arguments.calls} calls after a warm-up call; ratio: aggregate tokens/s "
          "over the solo run's (M solo runs one after another)", flush=True)
    print("| run | M | K | the sweep's | tokens/s (aggregate) | per member | vs M solo runs | compiled GiB / device | "
          "compile s |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    sweep_members = {}  # {size: the stages that train ensembles of that size}, the main stage first
    for stage in sorted(stages, key=lambda stage: stage != "main"):
        for size in stages[stage]:
            sweep_members[size] = " and ".join(filter(None, (sweep_members.get(size), stage)))
    wanted = [int(size) for size in arguments.members.split(",")]
    # The baseline first, then the sweep's own sizes, then the rest: a run cut short still has the rows that matter.
    order = list(dict.fromkeys([1, *sweep_members, *sorted(wanted)]))
    solo = None
    for size in order:
        row = programs.time_program(programs.member_configs(config, size), arguments.calls, arguments.repeats)
        solo = solo or row["tokens_per_s"]
        sweep = f"{sweep_members[size]} stage" if size in sweep_members else ""
        print(_row("solo (baseline)" if size == 1 else "ensemble", row, solo, row["call_steps"], sweep), flush=True)
        if size == 1 and workers > 1:
            print(_row(f"{workers} worker processes, a solo run each",
                       time_workers(config, workers, arguments.calls, arguments.repeats), solo, row["call_steps"],
                       "workers" if arguments.workers == "auto" else ""), flush=True)


if __name__ == "__main__":
    main()
