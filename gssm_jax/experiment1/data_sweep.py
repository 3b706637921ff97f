"""The finite-data sweep: how excess loss falls with the number of training sequences.

One dataset is generated (resumably) for the config's graph, kernel seed and length; run n trains the
config's model on its first n training sequences for the same number of steps (so smaller sets are
seen for more epochs) and is evaluated on the dataset's test split against its exact entropy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import ml_collections

from gssm_jax import data, files
from gssm_jax.errors import UserError
from gssm_jax.training import loop
from gssm_jax.training.run import check_workdir, resolve

RESULT_KEYS = ("eval/loss_nats_per_token", "eval/entropy_nats_per_token", "eval/excess_loss_nats_per_token",
               "eval/excess_loss_standard_error")


def run_config(config: ml_collections.ConfigDict, dataset_path: str, num_sequences: int) -> ml_collections.ConfigDict:
    """The training config of the run on the first `num_sequences` training sequences of the dataset."""
    run = copy.deepcopy(config)
    with run.unlocked():
        del run["data_sweep"]
    run.data.source = "file"
    run.data.path = dataset_path
    run.data.num_sequences = num_sequences
    return run


def markdown_table(rows: list[dict]) -> str:
    """One row per training-set size: model loss, entropy and excess loss (nats/token) ± standard error."""
    lines = ["| training sequences | epochs seen | model loss | entropy | excess loss (nats/token) |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['num_sequences']:,} | {row['epochs']:.1f} | {row['eval/loss_nats_per_token']:.4f} "
                     f"| {row['eval/entropy_nats_per_token']:.4f} | {row['eval/excess_loss_nats_per_token']:.4f} "
                     f"± {row['eval/excess_loss_standard_error']:.4f} |")
    return "\n".join(lines) + "\n"


def run_data_sweep(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print) -> list[dict]:
    """Generates the dataset, trains one run per size, writes `data_sweep.json` and `data_sweep.md`.

    Returns:
      one dict per size: `num_sequences`, `epochs` (sequences seen / num_sequences) and the run's
      final `eval/*` values (nats per token).
    """
    sweep = config.data_sweep
    sizes = sorted(int(n) for n in sweep.num_sequences)
    if not sizes or sizes[0] < 1:
        raise UserError(f"config.data_sweep.num_sequences={list(sweep.num_sequences)}: give sizes >= 1")
    # The training fields, before the dataset is generated (it is checked against the config once written).
    check_workdir(workdir)
    unwritten = copy.deepcopy(config)
    unwritten.data.source = "onfly"
    resolve(unwritten, None)
    dataset_path = os.path.join(workdir, "dataset")
    log(f"dataset: {sizes[-1]:,} training + {config.eval.validation_sequences:,} validation + "
        f"{sweep.num_test:,} test sequences of {config.data.length} tokens "
        f"in {dataset_path}")
    data.generate_dataset(dataset_path, config.graph, seed=config.seed, data_seed=config.data.data_seed,
                          num_train=sizes[-1] + config.eval.validation_sequences, num_test=sweep.num_test,
                          length=config.data.length, shard_size=sweep.shard_size)
    rows = []
    for index, num_sequences in enumerate(sizes):
        log(f"[{index + 1}/{len(sizes)}] training on {num_sequences:,} sequences")
        result = loop.train_and_evaluate(run_config(config, dataset_path, num_sequences),
                                          os.path.join(workdir, "runs", f"n{num_sequences}"))
        epochs = config.train.num_steps * config.data.batch_size / num_sequences
        rows.append({"num_sequences": num_sequences, "epochs": epochs, **{key: result[key] for key in RESULT_KEYS}})
    files.write_json(os.path.join(workdir, "data_sweep.json"), rows)
    table = markdown_table(rows)
    files.write_text(os.path.join(workdir, "data_sweep.md"), table)
    log(table)
    return rows
