"""Evaluation on a fixed held-out set (model loss, exact entropy of the same sequences, excess loss) and on
the validation split of the training stream (model loss only).

The held-out set is `sample_tokens(keys.heldout_key(eval_seed), graph, kernels, num_sequences, length)`, fixed
for a run and independent of the training stream. Its Bayes-optimal per-token losses
(`inference.token_losses`, nats) depend only on the graph, the kernels and the tokens, not on the model,
so they are computed once and cached beside the workdir, in `WORKDIR/../optimal_losses/<digest>.npz`
keyed by the sha256 of everything they depend on: the model sizes of one Experiment 1 sweep cell
(sibling workdirs) and a resumed run share one computation.

The validation split is `config.eval.validation_sequences` sequences of the training stream's distribution
that no step trains on: on the fly, sampled from `keys.validation_key(data_seed)`; from a file, the last ones
of the train split (never trained on: `run.DataSource`). A learning-rate choice reads only its loss, never
the held-out set's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gssm_jax import files, inference, keys
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.initial_state import start_keywords
from gssm_jax.gssm.kernels import Kernels
from gssm_jax.learners import token_losses
from gssm_jax.sampling.sampler import sample_tokens
from gssm_jax.statistics import mean_and_stderr

OPTIMAL_CACHE_DIR = "optimal_losses"  # beside the workdir, shared by sibling runs


def optimal_cache_path(workdir: str, identity: dict[str, Any]) -> str:
    """`WORKDIR/../optimal_losses/<sha256 of identity>.npz`: the cache file of one held-out set."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return os.path.join(os.path.dirname(os.path.abspath(workdir)), OPTIMAL_CACHE_DIR, f"{digest}.npz")


def heldout_tokens(graph: GraphSpec, kernels: Kernels, num_sequences: int, length: int, eval_seed: int,
                   burn_in: int = 0) -> jax.Array:
    """The held-out sequences: tokens (num_sequences, length), from their own key."""
    return sample_tokens(keys.heldout_key(eval_seed), graph, kernels, num_sequences, length, **start_keywords(burn_in))


def validation_tokens(graph: GraphSpec, kernels: Kernels, num_sequences: int, length: int, data_seed: int,
                      burn_in: int = 0) -> jax.Array:
    """The validation split of an on-the-fly stream: tokens (num_sequences, length) from `keys.validation_key`."""
    return sample_tokens(keys.validation_key(data_seed), graph, kernels, num_sequences, length,
                         **start_keywords(burn_in))


def cached_optimal_losses(workdir: str, graph: GraphSpec, kernels: Kernels, tokens: jax.Array,
                          identity: dict[str, Any], burn_in: int = 0) -> np.ndarray:
    """Bayes-optimal -log p(x_t | x_<t) of `tokens`, float32 (num_sequences, length) nats, cached on disk.

    `identity` (JSON-able: graph config, kernel seed, "eval_seed", sizes) names what the losses depend
    on; it keys the cache file (`optimal_cache_path`), so runs with equal identities share it. Graphs
    with `context` nodes get the Monte Carlo estimate of `inference.context_log_likelihood` (key
    derived from the eval seed). `burn_in`: the unobserved steps before the first token , marginalised
    exactly (`gssm_jax.gssm.initial_state`); part of the cache key.
    """
    path = optimal_cache_path(workdir, {**identity, "burn_in": burn_in} if burn_in else identity)
    fingerprint = os.path.splitext(os.path.basename(path))[0]
    if os.path.exists(path):
        with np.load(path) as cached:
            if str(cached["fingerprint"]) == fingerprint and cached["optimal_losses"].shape == tokens.shape:
                return cached["optimal_losses"]
    if any(node.mode == "context" for node in graph.nodes):
        # Kernels redrawn per sequence are unknown to the predictor: Monte Carlo estimate (biased high).
        draws_key = keys.heldout_context_key(identity["eval_seed"])
        losses = inference.context_log_likelihood(graph, kernels, tokens, draws_key,
                                                  **start_keywords(burn_in)).token_losses
    else:
        losses = inference.token_losses(graph, kernels, tokens, **start_keywords(burn_in))
    losses = np.asarray(losses, np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_npz(path, optimal_losses=losses, fingerprint=np.asarray(fingerprint))
    return losses


@functools.lru_cache(maxsize=8)
def _chunk_losses(graphdef: nnx.GraphDef, mesh: Mesh) -> Callable:
    rows = NamedSharding(mesh, PartitionSpec("members", "data"))

    @jax.jit
    def chunk_losses(params, tokens):
        tokens = jax.lax.with_sharding_constraint(tokens, rows)
        return jax.vmap(lambda params, tokens: token_losses(nnx.merge(graphdef, params), tokens))(params, tokens)

    return chunk_losses


def make_model_losses(graphdef: nnx.GraphDef, mesh: Mesh, chunk_size: int) -> Callable[[Any, jax.Array], np.ndarray]:
    """`model_losses(params, tokens) -> float32 (members, num_sequences, length)` nats, `chunk_size` rows at a time.

    params: the members' stacked parameters; tokens: (members, num_sequences, length). On a ("members",
    "data") mesh (`step.ensemble_mesh`), each chunk's rows split over "data" (chunk sizes must divide by it).
    """
    chunk_losses = _chunk_losses(graphdef, mesh)

    def model_losses(params, tokens):
        chunks = [chunk_losses(params, tokens[:, start:start + chunk_size])
                  for start in range(0, tokens.shape[1], chunk_size)]
        return np.concatenate([np.asarray(chunk) for chunk in chunks], axis=1)

    return model_losses


def summarize(model_losses: np.ndarray, optimal_losses: np.ndarray,
              validation_losses: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Eval metrics from per-token losses (num_sequences, length) in nats.

    validation_losses: the model's losses on the validation split (validation_sequences, length), if any.

    Returns:
      `{"eval/loss_nats_per_token", "eval/entropy_nats_per_token", "eval/excess_loss_nats_per_token",
      "eval/excess_loss_standard_error"}` (and `"eval/validation_loss_nats_per_token"`), the standard error
      being over sequences of the per-sequence mean excess loss; and the model's mean loss at each position,
      float32 (length,).
    """
    model_losses = np.asarray(model_losses, np.float64)
    optimal_losses = np.asarray(optimal_losses, np.float64)
    excess, standard_error = mean_and_stderr((model_losses - optimal_losses).mean(axis=1))
    summary = {
        "eval/loss_nats_per_token": float(model_losses.mean()),
        "eval/entropy_nats_per_token": float(optimal_losses.mean()),
        "eval/excess_loss_nats_per_token": excess,
        "eval/excess_loss_standard_error": standard_error,
    }
    if validation_losses is not None:
        summary["eval/validation_loss_nats_per_token"] = float(np.asarray(validation_losses, np.float64).mean())
    return summary, model_losses.mean(axis=0).astype(np.float32)
