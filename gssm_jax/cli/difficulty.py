"""Composable-llm's difficulty table, reproduced and extended with the exact entropy rate.

For each of composable-llm's six (alpha_X, alpha_Z) settings it prints and saves:
composable-llm's gzip value; the numpy reference sampler at seed 42 (the original draw order, which
reproduces composable-llm's numbers); the JAX sampler's gzip difficulty, mean and std over graph seeds;
and the exact entropy rate (forward algorithm) in nats per token [bits in brackets, next to composable-llm's
numbers], mean and std over the same seeds. The last column shows that gzip-matched pairs are not
entropy-matched.

    gssm-difficulty --workdir=runs/difficulty
    gssm-difficulty --graphs=four_by_four --seeds=3 --workdir=runs/difficulty_4x4  # ~1 min
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from gssm_jax import difficulty, files
from gssm_jax.cli import common
from gssm_jax.errors import check_names
from gssm_jax.gssm.families import get_family
from gssm_jax.gssm.graph import GraphSpec

# (family, alpha_X, alpha_Z, composable-llm's gzip difficulty): composable-llm's table, 4 states per hidden node,
# 1024 sequences, T = the family's length (2048 for four_by_four, 4096 for eight_by_four).
SEED_TABLE = (
    ("four_by_four", 1e-3, 0.125, 0.74),
    ("four_by_four", 5e-2, 1e-3, 0.72),
    ("four_by_four", 1e-3, 0.142, 0.74),
    ("four_by_four", 5.7e-2, 1e-3, 0.75),
    ("eight_by_four", 1e-3, 4e-3, 0.74),
    ("eight_by_four", 2e-3, 1e-3, 0.73),
)
SEED = 42

_GRAPHS = flags.DEFINE_list("graphs", ["four_by_four", "eight_by_four"], "Graph families of "
                            "composable-llm's table to run.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Graph seeds (0..N-1) for the JAX sampler's mean and std.", lower_bound=2)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "Sequences per batch (composable-llm used 1024).", lower_bound=1)
_ENTROPY_SEQUENCES = flags.DEFINE_integer(
    "entropy_sequences", 16, "Sequences per seed on which the exact entropy rate is computed (the forward pass on "
    "the 65,536-state eight_by_four graph runs at ~10^4 tokens/s on a 2-core CPU).", lower_bound=1)
_SKIP_REFERENCE = flags.DEFINE_bool("skip_reference", False, "Skip the numpy reference column (the slowest part).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for difficulty.json and difficulty.md.")


def _row(family_name: str, alpha_x: float, alpha_z: float, composable_llm_gzip: float) -> dict:
    family = get_family(family_name)
    alphas = {"alpha_X": alpha_x, "alpha_Z": alpha_z}
    row = {"graph": family_name, "length": family.length, "alpha_X": alpha_x, "alpha_Z": alpha_z,
           "composable_llm_gzip": composable_llm_gzip}
    if not _SKIP_REFERENCE.value:
        from gssm_jax.sampling import numpy_sampler  # noqa: PLC0415 (scipy only once the flags are checked)

        graph = GraphSpec.from_config(family.config(alpha_x, alpha_z))
        tokens = numpy_sampler.seed_batch(graph, SEED, _BATCH_SIZE.value, family.length)
        row["reference_seed42"] = difficulty.gzip_bytes_per_token(tokens)
    seeds = tuple(range(_SEEDS.value))
    measurer = difficulty.Measurer(family, seeds=seeds, batch_size=_BATCH_SIZE.value, length=family.length)
    gzip = measurer(alphas, "gzip")
    row["jax_gzip_per_seed"] = list(gzip.per_seed)
    entropy_measurer = difficulty.Measurer(family, seeds=seeds, batch_size=_ENTROPY_SEQUENCES.value,
                                           length=family.length)
    row["entropy_nats_per_token_per_seed"] = list(entropy_measurer(alphas, "entropy").per_seed)
    return row


def _markdown(rows: list[dict]) -> str:
    def mean_std(values):
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"

    def nats_and_bits(values):
        return f"{mean_std(values)} [{np.mean(values) / difficulty.NATS_PER_BIT:.3f} bits]"

    lines = [
        "| graph | T | alpha_X | alpha_Z | composable-llm gzip | reference gzip (seed 42) | JAX gzip (mean ± std) "
        "| entropy nats/token [bits] (mean ± std) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reference_value = f"{row['reference_seed42']:.4f}" if "reference_seed42" in row else "skipped"
        lines.append(
            f"| {row['graph']} | {row['length']} | {row['alpha_X']:g} | {row['alpha_Z']:g} "
            f"| {row['composable_llm_gzip']:.2f} | {reference_value} | {mean_std(row['jax_gzip_per_seed'])} "
            f"| {nats_and_bits(row['entropy_nats_per_token_per_seed'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    common.check_no_arguments(argv)
    workdir = common.resolve_workdir(None, _WORKDIR.value)
    check_names("--graphs", _GRAPHS.value, get_family)  # now, with the valid names, not after minutes of work
    os.makedirs(workdir, exist_ok=True)
    settings = [row for row in SEED_TABLE if row[0] in _GRAPHS.value]
    rows = []
    started = time.perf_counter()
    for index, setting in enumerate(settings):
        print(f"[{index + 1}/{len(settings)}] {setting[0]} alpha_X={setting[1]:g} alpha_Z={setting[2]:g} ...",
              flush=True)
        rows.append(_row(*setting))
        print(f"    done after {time.perf_counter() - started:.0f} s", flush=True)
    table = _markdown(rows)
    print(table)
    files.write_json(os.path.join(workdir, "difficulty.json"), rows)
    files.write_text(os.path.join(workdir, "difficulty.md"), table)
    print(f"wrote {workdir}/difficulty.md and difficulty.json")


def run() -> None:
    """The console script (`gssm-difficulty`): `--help`, else parses the flags and runs `main`."""
    common.run(main)


if __name__ == "__main__":
    run()
