"""An n-gram baseline: add-alpha smoothed k-gram predictions counted on training tokens, with no training.

The k-gram model predicts token x_t from the k - 1 tokens before it, with BOS (= V) standing in
before the start of a sequence, so position 0 is predicted from BOS alone as in the learners:

  q(x | c) = (n(c, x) + alpha) / (n(c) + alpha V)

where n counts (context, token) pairs in the training sequences. The order k and alpha are chosen
by the loss on a validation split of the training sequences (never the test set), then the counts
are refitted on all of them (the counts of the fitting and validation parts, added). Its held-out
loss is what the local statistics of the training tokens reach. With near-deterministic kernels most
held-out contexts occur in the training tokens (`NgramFloor.contexts_seen`), so it is a memorisation
baseline: a learner not below it has not shown that it used more than the tokens it saw.

Counting is exact and vectorised: each context is the integer of its k - 1 tokens in base V + 1 (a
perfect hash), a (context, token) pair is context * V + token, and the pairs are counted by
`np.bincount` when their codes fit a table of `DENSE_MAX_CODES` entries, else by sorting the codes
(run lengths). Context counts are sums of pair counts (the pair codes sort by context first). Held-out
and validation counts are binary-search look-ups. Memory is about 3 int64 arrays of the training
tokens at a time (numpy is enough: this is counting and table look-ups, not a JAX workload).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gssm_jax.data.batches import Batches

ORDERS = (1, 2, 3, 4, 5, 6)
ADD_CONSTANTS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
VALIDATION_FRACTION = 0.1
# Pair codes below this many values are counted by np.bincount into a dense table (8 bytes per entry);
# larger code spaces (V = 64 from order 5, V = 32 from order 5) are sorted.
DENSE_MAX_CODES = 2**25


class NgramCounts(NamedTuple):
    """Counts of one order: sorted codes of the contexts and (context, token) pairs seen, and their counts."""

    order: int
    vocab_size: int
    context_codes: np.ndarray  # int64 (contexts,), sorted
    context_counts: np.ndarray  # int64 (contexts,)
    pair_codes: np.ndarray  # int64 (pairs,), sorted; pair code = context code * V + token
    pair_counts: np.ndarray  # int64 (pairs,)


class NgramFloor(NamedTuple):
    """The chosen n-gram model, its held-out losses, the unigram model's and the held-out contexts seen.

    losses_nats: float64 (batch, length), -log q(x_t | previous order - 1 tokens) per held-out token.
    validation_nats_per_token: the chosen (order, add_constant)'s mean loss on the validation split.
    unigram_nats_per_token: the order-1 model (its own add-constant chosen on the same validation split),
      refitted on the same tokens, mean held-out loss in nats/token.
    train_tokens: training tokens counted (sequences x length).
    contexts_seen: `{order k: fraction of held-out positions whose k - 1 preceding tokens (BOS-padded)
      occur as a context somewhere in the training tokens}` for every order k > 1 counted; weighted by
      occurrence (a context seen at many held-out positions counts at each), as the loss is.
    """

    order: int
    add_constant: float
    validation_nats_per_token: float
    losses_nats: np.ndarray
    unigram_nats_per_token: float
    train_tokens: int
    contexts_seen: dict[int, float]

    @property
    def nats_per_token(self) -> float:
        return float(self.losses_nats.mean())


def _check_tokens(tokens: np.ndarray, vocab_size: int, name: str) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size == 0 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty integer (sequences, length) array; got {tokens.dtype} "
                         f"{tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"{name} holds values outside [0, {vocab_size}); is vocab_size the graph's X states?")
    return tokens


def _extend(codes: np.ndarray, tokens: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Context codes of `order` from those of `order - 1`, in place: adds x_{t-order+1} (BOS before the start)."""
    j, length = order - 1, tokens.shape[1]
    weight = (vocab_size + 1) ** (j - 1)
    codes[:, :min(j, length)] += vocab_size * weight
    if j < length:
        codes[:, j:] += np.multiply(tokens[:, :length - j], weight, dtype=np.int64)
    return codes


def _check_order(order: int, vocab_size: int) -> None:
    if (vocab_size + 1) ** (order - 1) * vocab_size >= 2**62:
        raise ValueError(f"order {order} with {vocab_size} token values overflows the int64 context codes")


def context_codes(tokens: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Code of the k - 1 tokens before each position (BOS = V before the start), int64 (batch, length).

    code = sum_j x_{t-j} (V + 1)^(j-1), j = 1..k-1: distinct contexts have distinct codes.
    """
    _check_order(order, vocab_size)
    tokens = np.asarray(tokens)
    codes = np.zeros(tokens.shape, np.int64)
    for k in range(2, order + 1):
        _extend(codes, tokens, k, vocab_size)
    return codes


def _run_lengths(sorted_codes: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a sorted int64 array and how often (or with what total weight) each occurs."""
    starts = np.concatenate([[0], np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1])
    if weights is None:
        return sorted_codes[starts], np.diff(np.append(starts, len(sorted_codes)))
    return sorted_codes[starts], np.add.reduceat(weights, starts)


def _count_codes(contexts: np.ndarray, tokens: np.ndarray, order: int, vocab_size: int) -> NgramCounts:
    """Counts of `order` from the context codes (batch, length) of tokens (batch, length)."""
    pairs = (contexts * vocab_size + tokens).reshape(-1)
    space = (vocab_size + 1) ** (order - 1) * vocab_size
    if space <= DENSE_MAX_CODES and space <= 64 * pairs.size:  # dense table; never one far larger than the data
        table = np.bincount(pairs, minlength=space)
        pair_codes = np.flatnonzero(table)
        pair_counts = table[pair_codes]
    else:
        pairs.sort()
        pair_codes, pair_counts = _run_lengths(pairs)
    del pairs
    context_codes_, context_counts = _run_lengths(pair_codes // vocab_size, pair_counts)
    return NgramCounts(order, vocab_size, context_codes_, context_counts, pair_codes, pair_counts)


def count(tokens: np.ndarray, order: int, vocab_size: int) -> NgramCounts:
    """The (context, token) and context counts of `order` in tokens (sequences, length)."""
    tokens = _check_tokens(tokens, vocab_size, "training tokens")
    return _count_codes(context_codes(tokens, order, vocab_size), tokens, order, vocab_size)


def _lookup_sorted(codes: np.ndarray, table: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """counts[i] where table[i] == code, 0 for codes not in the table; codes and table sorted."""
    index = np.minimum(np.searchsorted(table, codes), len(table) - 1)
    return np.where(table[index] == codes, counts[index], 0)


def _lookup(parts: Sequence[NgramCounts], contexts: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """n(c, x_t) and n(c) at every position, summed over counts of disjoint token sets; int64 (batch, length).

    contexts: the context codes (batch, length) of tokens (batch, length). The codes are searched in sorted
    order (10x faster than in random order on tables of millions of codes: cache-friendly, and numpy's search
    starts from the previous key's position), then put back in place.
    """
    pairs = (contexts * parts[0].vocab_size + tokens).reshape(-1)
    order = np.argsort(pairs)
    pairs = pairs[order]
    found_pairs, found_contexts = np.empty_like(pairs), np.empty_like(pairs)
    # Sorted pair codes have sorted context codes (pair = context x V + token).
    found_pairs[order] = sum(_lookup_sorted(pairs, part.pair_codes, part.pair_counts) for part in parts)
    pairs //= parts[0].vocab_size
    found_contexts[order] = sum(_lookup_sorted(pairs, part.context_codes, part.context_counts) for part in parts)
    return found_pairs.reshape(tokens.shape), found_contexts.reshape(tokens.shape)


def _losses(pairs: np.ndarray, contexts: np.ndarray, add_constant: float, vocab_size: int) -> np.ndarray:
    return np.log(contexts + add_constant * vocab_size) - np.log(pairs + add_constant)


def token_losses(counts: NgramCounts, add_constant: float, tokens: np.ndarray) -> np.ndarray:
    """-log q(x_t | context) in nats, float64 (batch, length), for held-out tokens (batch, length)."""
    if not add_constant > 0:
        raise ValueError(f"add_constant={add_constant} must be > 0 (0 gives unseen tokens infinite loss)")
    tokens = _check_tokens(tokens, counts.vocab_size, "held-out tokens")
    contexts = context_codes(tokens, counts.order, counts.vocab_size)
    return _losses(*_lookup([counts], contexts, tokens), add_constant, counts.vocab_size)


def _split(tokens: np.ndarray, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, validation): the last max(1, round(fraction x sequences)) sequences validate."""
    num_validation = max(1, int(round(validation_fraction * len(tokens))))
    if not 0 < validation_fraction < 1 or num_validation >= len(tokens):
        raise ValueError(f"validation_fraction={validation_fraction} of {len(tokens)} training sequences leaves "
                         "no fitting or no validation sequence; pass more sequences")
    return tokens[:-num_validation], tokens[-num_validation:]


class _OrderFit(NamedTuple):
    """One order: validation losses counted on the fitting split, held-out counts on all training tokens."""

    validation_nats_per_token: np.ndarray  # float64 (add_constants,)
    heldout_pairs: np.ndarray | None  # int64 (batch, length): n(c, x_t)
    heldout_contexts: np.ndarray | None  # int64 (batch, length): n(c)


def _fit_orders(train: np.ndarray, heldout: np.ndarray | None, orders: Sequence[int], vocab_size: int,
                add_constants: Sequence[float], validation_fraction: float) -> dict[int, _OrderFit]:
    """Every order's `_OrderFit`, in increasing order: the context codes of each split are extended in place."""
    fitting, validation = _split(train, validation_fraction)
    token_sets = (fitting, validation) if heldout is None else (fitting, validation, heldout)
    contexts = [np.zeros(tokens.shape, np.int64) for tokens in token_sets]
    fits = {}
    for order in range(1, max(orders) + 1):
        _check_order(order, vocab_size)
        for codes, tokens in zip(contexts, token_sets, strict=True):
            if order > 1:
                _extend(codes, tokens, order, vocab_size)
        if order not in orders:
            continue
        fitted = _count_codes(contexts[0], fitting, order, vocab_size)
        pairs, context_counts = _lookup([fitted], contexts[1], validation)
        validation_losses = np.array([_losses(pairs, context_counts, a, vocab_size).mean() for a in add_constants])
        heldout_counts = (None, None) if heldout is None else _lookup(
            [fitted, _count_codes(contexts[1], validation, order, vocab_size)], contexts[2], heldout)
        fits[order] = _OrderFit(validation_losses, *heldout_counts)
    return fits


def select(tokens: np.ndarray, vocab_size: int, orders: Sequence[int] = ORDERS,
           add_constants: Sequence[float] = ADD_CONSTANTS, validation_fraction: float = VALIDATION_FRACTION
           ) -> tuple[int, float, float]:
    """(order, add_constant, validation loss) minimising the loss on the last `validation_fraction` of the sequences.

    The counts are fitted on the other sequences. tokens: training tokens (sequences, length), at least 2 sequences.
    """
    tokens = _check_tokens(tokens, vocab_size, "training tokens")
    fits = _fit_orders(tokens, None, orders, vocab_size, add_constants, validation_fraction)
    return _best(fits, orders, add_constants)


def _best(fits: dict[int, _OrderFit], orders: Sequence[int], add_constants: Sequence[float]
          ) -> tuple[int, float, float]:
    """The (order, add_constant) of least validation loss; ties go to the lower order, then the smaller constant."""
    loss, order, add_constant = min((float(loss), order, a) for order in orders
                                    for a, loss in zip(add_constants, fits[order].validation_nats_per_token,
                                                       strict=True))
    return order, add_constant, loss


def ngram_floor(train_tokens: np.ndarray, heldout_tokens: np.ndarray, vocab_size: int,
                orders: Sequence[int] = ORDERS, add_constants: Sequence[float] = ADD_CONSTANTS,
                validation_fraction: float = VALIDATION_FRACTION) -> NgramFloor:
    """Chooses (order, alpha) on a validation split of `train_tokens`, refits on all of them, scores `heldout_tokens`.

    train_tokens: (sequences, length) ints in [0, V), e.g. the first N tokens of the training stream;
    heldout_tokens: (batch, length') ints in [0, V), the learners' held-out set. Order 1 is always
    counted too (the unigram model); one order's count tables are held at a time.
    """
    train_tokens = _check_tokens(train_tokens, vocab_size, "training tokens")
    heldout_tokens = _check_tokens(heldout_tokens, vocab_size, "held-out tokens")
    fits = _fit_orders(train_tokens, heldout_tokens, sorted({1, *orders}), vocab_size, add_constants,
                       validation_fraction)
    order, add_constant, validation_loss = _best(fits, orders, add_constants)
    _, unigram_constant, _ = _best(fits, (1,), add_constants)
    losses = _losses(fits[order].heldout_pairs, fits[order].heldout_contexts, add_constant, vocab_size)
    unigram_losses = _losses(fits[1].heldout_pairs, fits[1].heldout_contexts, unigram_constant, vocab_size)
    seen = {k: float(np.mean(fits[k].heldout_contexts > 0)) for k in sorted(fits) if k > 1}
    return NgramFloor(order, add_constant, validation_loss, losses, float(unigram_losses.mean()),
                      int(train_tokens.size), seen)


def stream_tokens(stream: Batches, num_tokens: int) -> np.ndarray:
    """The first whole sequences of a training stream holding at least `num_tokens` tokens, on the host.

    stream: a `gssm_jax.data.Batches` (`batch(step)` -> tokens (batch_size, length)), read from step 0.
    """
    rows, total, step = [], 0, 0
    while total < num_tokens:
        tokens = np.asarray(stream.batch(step))
        rows.append(tokens)
        total, step = total + tokens.size, step + 1
    num_sequences = -(-num_tokens // rows[0].shape[1])  # ceil
    return np.concatenate(rows)[:num_sequences]
