"""The n-gram baseline of each (measure, graph, side, seed): what the runs' training tokens reach by counting.

The baseline (`gssm_jax.experiment1.ngram.ngram_floor`) is counted on the first tokens of the same training
stream the learners see, scored on the same held-out sequences, so its excess loss (its loss minus the held-out
entropy rate, which the report reads from the runs) sits next to the learners'. It depends on the data only,
not on the learner, so it is computed once per seed folder and cached in `<seed folder>/ngram.json`.

It counts `min(run budget, max_tokens)` tokens (whole sequences from step 0; `MAX_TRAIN_TOKENS` by default,
2**24 = 16.8 M tokens, which a paper-size folder counts in well under 30 s and 4 GiB), and the record says how
many. Below the cap it is the baseline on exactly the run's tokens; above, on the first MAX_TRAIN_TOKENS of
them, and `curve` (the baseline refitted on the first 1/16, 1/4 and all of the counted tokens) shows how it
still moves with more tokens.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from gssm_jax import files
from gssm_jax.data.batches import Batches
from gssm_jax.experiment1 import ngram

FLOOR_FILE = "ngram.json"
# The most training tokens the baseline counts (2**24: 8,192 sequences of T = 2048). Measured at paper size on a
# loaded 2-core CPU (orders 1-6 and the curve's 1/16 and 1/4 points): eight_by_four (V = 64) 13.2 s of counting and
# 4.2 s of sampling, four_by_four (V = 32) 9.5 s + 1.2 s; peak RSS of the whole process 1.8 GiB.
MAX_TRAIN_TOKENS = 2**24
# The curve's points, as fractions of the counted tokens (whole sequences; points of < 2 sequences are left out).
CURVE_FRACTIONS = (1 / 16, 1 / 4, 1.0)
RECORD_KEYS = ("order", "add_constant", "nats_per_token", "train_tokens", "heldout_sequences", "length",
               "unigram_nats_per_token", "memorisation", "curve")


def floor_path(seed_dir: str) -> str:
    """The cache file of the floor of one (measure, graph, side, seed) folder."""
    return os.path.join(seed_dir, FLOOR_FILE)


def read_floor(seed_dir: str) -> dict | None:
    """The cached record of a seed folder, or None when there is none or it is of an older format (lacks a key)."""
    path = floor_path(seed_dir)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        record = json.load(file)
    return record if set(RECORD_KEYS) <= set(record) else None


def floor_record(stream: Batches, heldout: np.ndarray, vocab_size: int, budget: int,
                 max_tokens: int | None = MAX_TRAIN_TOKENS) -> dict:
    """The ngram.json record of a run's data: the baseline counted on min(budget, max_tokens) stream tokens.

    Args:
      stream: the run's training stream (`batch(step)` -> tokens (batch_size, length)), read from step 0.
      heldout: the run's held-out tokens (sequences, length), ints in [0, vocab_size).
      vocab_size: V, the states of X.
      budget: the run's training tokens (num_steps x batch_size x length).
      max_tokens: the cap on the tokens counted; None counts the whole budget.

    Returns:
      `{"order", "add_constant", "nats_per_token", "train_tokens", "heldout_sequences", "length",
      "unigram_nats_per_token", "memorisation": {"orders", "heldout_contexts_seen"}, "curve": [{"train_tokens",
      "nats_per_token", "heldout_contexts_seen"}...]}`, losses in nats/token on the held-out set; the
      memorisation fractions as `ngram.NgramFloor.contexts_seen` (per order k > 1, the held-out positions whose
      k - 1 preceding tokens occur as a context in the counted training tokens); the curve's points on the first
      sequences of the counted tokens, each with its own order and add-constant, the last on all of them.
    """
    heldout = np.asarray(heldout)
    train = ngram.stream_tokens(stream, budget if max_tokens is None else min(budget, max_tokens))
    sizes = sorted(size for size in {int(np.ceil(fraction * len(train))) for fraction in CURVE_FRACTIONS} | {len(train)}
                   if size >= 2)
    curve, floor = [], None
    for size in sizes:
        floor = ngram.ngram_floor(train[:size], heldout, vocab_size)
        curve.append({"train_tokens": floor.train_tokens, "nats_per_token": floor.nats_per_token,
                      "heldout_contexts_seen": list(floor.contexts_seen.values())})
    return {"order": floor.order, "add_constant": floor.add_constant, "nats_per_token": floor.nats_per_token,
            "train_tokens": floor.train_tokens, "heldout_sequences": int(heldout.shape[0]),
            "length": int(heldout.shape[1]), "unigram_nats_per_token": floor.unigram_nats_per_token,
            "memorisation": {"orders": list(floor.contexts_seen), "heldout_contexts_seen":
                             list(floor.contexts_seen.values())},
            "curve": curve}


def ngram_floor(run: ml_collections.ConfigDict, seed_dir: str, max_tokens: int | None = MAX_TRAIN_TOKENS) -> dict:
    """The floor of `run`'s data (any learner's run config of that seed folder), from the cache or computed.

    Returns the `floor_record` of the run's stream and held-out set, counted on min(run budget, max_tokens)
    tokens, and writes it to `<seed_dir>/ngram.json`.
    """
    cached = read_floor(seed_dir)  # a record of an older format is recomputed
    if cached is not None:
        return cached
    from gssm_jax.gssm.graph import GraphSpec  # noqa: PLC0415 (JAX work only when not cached)
    from gssm_jax.training import loop  # noqa: PLC0415

    graph = GraphSpec.from_config(run.graph)
    _, stream, heldout, _ = loop.training_source(run)
    budget = run.train.num_steps * run.data.batch_size * run.data.length
    record = floor_record(stream, np.asarray(heldout), graph.vocab_size, budget, max_tokens)
    os.makedirs(seed_dir, exist_ok=True)
    files.write_json(floor_path(seed_dir), record)
    return record
