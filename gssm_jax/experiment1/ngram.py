"""An n-gram floor: add-alpha smoothed k-gram predictions counted on training tokens, with no training.

The k-gram model predicts token x_t from the k - 1 tokens before it, with BOS (= V) standing in
before the start of a sequence, so position 0 is predicted from BOS alone as in the learners:

  q(x | c) = (n(c, x) + alpha) / (n(c) + alpha V)

where n counts (context, token) pairs in the training sequences. The order k and alpha are chosen
by the loss on a validation split of the training sequences (never the test set), then the counts
are refitted on all of them. Its held-out loss is what local statistics alone achieve: a learner's
gain beyond it is the part that needs the latent structure.

Counting is exact and vectorised: each context is the integer of its k - 1 tokens in base V + 1
(a perfect hash), and counts come from `np.unique` on the sorted codes (numpy is enough: this is
sorting and table look-ups, not a JAX workload).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gssm_jax.data.batches import Batches

ORDERS = (1, 2, 3, 4, 5, 6)
ADD_CONSTANTS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
VALIDATION_FRACTION = 0.1


class NgramCounts(NamedTuple):
    """Counts of one order: sorted codes of the contexts and (context, token) pairs seen, and their counts."""

    order: int
    vocab_size: int
    context_codes: np.ndarray  # int64 (contexts,), sorted
    context_counts: np.ndarray  # int64 (contexts,)
    pair_codes: np.ndarray  # int64 (pairs,), sorted; pair code = context code * V + token
    pair_counts: np.ndarray  # int64 (pairs,)


class NgramFloor(NamedTuple):
    """The chosen n-gram model and its held-out losses.

    losses_nats: float64 (batch, length), -log q(x_t | previous order - 1 tokens) per held-out token.
    validation_nats_per_token: the chosen (order, add_constant)'s mean loss on the validation split.
    """

    order: int
    add_constant: float
    validation_nats_per_token: float
    losses_nats: np.ndarray

    @property
    def nats_per_token(self) -> float:
        return float(self.losses_nats.mean())


def _check_tokens(tokens: np.ndarray, vocab_size: int, name: str) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size == 0:
        raise ValueError(f"{name} must be a non-empty (sequences, length) array; got shape {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"{name} holds values outside [0, {vocab_size}); is vocab_size the graph's X states?")
    return tokens.astype(np.int64)


def context_codes(tokens: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Code of the k - 1 tokens before each position (BOS = V before the start), int64 (batch, length).

    code = sum_j x_{t-j} (V + 1)^(j-1), j = 1..k-1: distinct contexts have distinct codes.
    """
    if (vocab_size + 1) ** (order - 1) * vocab_size >= 2**62:
        raise ValueError(f"order {order} with {vocab_size} token values overflows the int64 context codes")
    tokens = np.asarray(tokens, np.int64)
    padded = np.concatenate([np.full((tokens.shape[0], order - 1), vocab_size, np.int64), tokens], axis=1)
    codes = np.zeros(tokens.shape, np.int64)
    length = tokens.shape[1]
    for j in range(1, order):  # x_{t-j} sits at padded[:, order - 1 + t - j]
        codes += padded[:, order - 1 - j:order - 1 - j + length] * (vocab_size + 1) ** (j - 1)
    return codes


def count(tokens: np.ndarray, order: int, vocab_size: int) -> NgramCounts:
    """The (context, token) and context counts of `order` in tokens (sequences, length)."""
    tokens = _check_tokens(tokens, vocab_size, "training tokens")
    contexts = context_codes(tokens, order, vocab_size)
    context_codes_, context_counts = np.unique(contexts, return_counts=True)
    pair_codes, pair_counts = np.unique(contexts * vocab_size + tokens, return_counts=True)
    return NgramCounts(order, vocab_size, context_codes_, context_counts, pair_codes, pair_counts)


def _lookup(codes: np.ndarray, table: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """counts[i] where table[i] == code, 0 for codes not in the (sorted) table."""
    index = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    return np.where(table[index] == codes, counts[index], 0)


def _pair_and_context_counts(counts: NgramCounts, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    contexts = context_codes(tokens, counts.order, counts.vocab_size)
    return (_lookup(contexts * counts.vocab_size + tokens, counts.pair_codes, counts.pair_counts),
            _lookup(contexts, counts.context_codes, counts.context_counts))


def token_losses(counts: NgramCounts, add_constant: float, tokens: np.ndarray) -> np.ndarray:
    """-log q(x_t | context) in nats, float64 (batch, length), for held-out tokens (batch, length)."""
    if not add_constant > 0:
        raise ValueError(f"add_constant={add_constant} must be > 0 (0 gives unseen tokens infinite loss)")
    tokens = _check_tokens(tokens, counts.vocab_size, "held-out tokens")
    pairs, contexts = _pair_and_context_counts(counts, tokens)
    return np.log(contexts + add_constant * counts.vocab_size) - np.log(pairs + add_constant)


def select(tokens: np.ndarray, vocab_size: int, orders: Sequence[int] = ORDERS,
           add_constants: Sequence[float] = ADD_CONSTANTS, validation_fraction: float = VALIDATION_FRACTION
           ) -> tuple[int, float, float]:
    """(order, add_constant, validation loss) minimising the loss on the last `validation_fraction` of the sequences.

    The counts are fitted on the other sequences. tokens: training tokens (sequences, length), at least 2 sequences.
    """
    tokens = _check_tokens(tokens, vocab_size, "training tokens")
    num_validation = int(round(validation_fraction * len(tokens)))
    if not 1 <= num_validation < len(tokens):
        raise ValueError(f"validation_fraction={validation_fraction} of {len(tokens)} training sequences leaves "
                         "no fitting or no validation sequence; pass more sequences")
    fitting, validation = tokens[:-num_validation], tokens[-num_validation:]
    best = (np.inf, 0, 0.0)
    for order in orders:
        pairs, contexts = _pair_and_context_counts(count(fitting, order, vocab_size), validation)
        for add_constant in add_constants:
            loss = float(np.mean(np.log(contexts + add_constant * vocab_size) - np.log(pairs + add_constant)))
            best = min(best, (loss, order, add_constant))
    loss, order, add_constant = best
    return order, add_constant, loss


def ngram_floor(train_tokens: np.ndarray, heldout_tokens: np.ndarray, vocab_size: int,
                orders: Sequence[int] = ORDERS, add_constants: Sequence[float] = ADD_CONSTANTS,
                validation_fraction: float = VALIDATION_FRACTION) -> NgramFloor:
    """Chooses (order, alpha) on a validation split of `train_tokens`, refits on all of them, scores `heldout_tokens`.

    train_tokens: (sequences, length) ints in [0, V), e.g. the first N tokens of the training stream;
    heldout_tokens: (batch, length') ints in [0, V), the learners' held-out set.
    """
    order, add_constant, validation_loss = select(train_tokens, vocab_size, orders, add_constants,
                                                  validation_fraction)
    losses = token_losses(count(train_tokens, order, vocab_size), add_constant, heldout_tokens)
    return NgramFloor(order, add_constant, validation_loss, losses)


def stream_tokens(stream: Batches, num_tokens: int) -> np.ndarray:
    """The first whole sequences of a training stream holding at least `num_tokens` tokens, on the host.

    stream: a `gssm_jax.data.Batches` (`batch(step)` -> tokens (batch_size, length)), read from step 0.
    """
    rows, total, step = [], 0, 0
    while total < num_tokens:
        tokens = np.asarray(stream.batch(step))
        rows.append(tokens)
        total, step = total + tokens.size, step + 1
    tokens = np.concatenate(rows)
    num_sequences = -(-num_tokens // tokens.shape[1])  # ceil
    return tokens[:num_sequences]
