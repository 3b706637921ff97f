"""The n-gram floor of each (measure, graph, side, seed): what local statistics alone reach on the runs' data.

The floor (`gssm_jax.experiment1.ngram.ngram_floor`) is counted on the first tokens of the same training stream the
learners see (as many as one run's token budget) and scored on the same held-out sequences, so its excess
loss (floor loss minus the held-out entropy rate, which the report reads from the runs) sits next to the
learners'. It depends on the data only, not on the learner, so it is computed once per seed folder and
cached in `<seed folder>/ngram.json`.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from gssm_jax import files

FLOOR_FILE = "ngram.json"


def floor_path(seed_dir: str) -> str:
    """The cache file of the floor of one (measure, graph, side, seed) folder."""
    return os.path.join(seed_dir, FLOOR_FILE)


def ngram_floor(run: ml_collections.ConfigDict, seed_dir: str) -> dict:
    """The floor of `run`'s data (any learner's run config of that seed folder), from the cache or computed.

    Returns:
      `{"order", "add_constant", "nats_per_token", "train_tokens", "heldout_sequences", "length"}`:
      the chosen n-gram order and add-constant, the held-out loss in nats/token, the tokens counted.
    """
    path = floor_path(seed_dir)
    if os.path.exists(path):
        with open(path) as file:
            return json.load(file)
    from gssm_jax import parallel  # noqa: PLC0415
    from gssm_jax.experiment1 import ngram  # noqa: PLC0415
    from gssm_jax.gssm.graph import GraphSpec  # noqa: PLC0415 (JAX work only when not cached)
    from gssm_jax.training import loop  # noqa: PLC0415

    graph = GraphSpec.from_config(run.graph)
    _, stream, heldout, _ = loop.training_source(run, graph, parallel.data_parallel_mesh())
    budget = run.train.num_steps * run.data.batch_size * run.data.length
    train_tokens = ngram.stream_tokens(stream, budget)
    floor = ngram.ngram_floor(train_tokens, np.asarray(heldout), graph.vocab_size)
    record = {"order": floor.order, "add_constant": floor.add_constant, "nats_per_token": floor.nats_per_token,
              "train_tokens": int(train_tokens.size), "heldout_sequences": int(heldout.shape[0]),
              "length": int(heldout.shape[1])}
    os.makedirs(seed_dir, exist_ok=True)
    files.write_json(path, record)
    return record

