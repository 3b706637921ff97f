"""The n-gram floor: counts against brute force, losses against the closed form of an iid source and a Markov chain."""

import collections
import math

import numpy as np
import pytest

from gssm_jax.experiment1 import ngram


def _brute_force_losses(train, heldout, order, vocab_size, add_constant):
    """Python dictionaries over context tuples (BOS = V before the start)."""
    def contexts(row):
        padded = [vocab_size] * (order - 1) + list(row)
        return [tuple(padded[t:t + order - 1]) for t in range(len(row))]

    pairs, totals = collections.Counter(), collections.Counter()
    for row in train:
        for context, token in zip(contexts(row), row, strict=True):
            pairs[context, token] += 1
            totals[context] += 1
    return np.array([[-math.log((pairs[context, token] + add_constant) / (totals[context] + add_constant * vocab_size))
                      for context, token in zip(contexts(row), row, strict=True)] for row in heldout])


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_losses_match_brute_force_counts(order):
    rng = np.random.default_rng(order)
    train, heldout = rng.integers(0, 3, (6, 9)), rng.integers(0, 3, (4, 7))
    counts = ngram.count(train, order, 3)
    np.testing.assert_allclose(ngram.token_losses(counts, 0.4, heldout),
                               _brute_force_losses(train, heldout, order, 3, 0.4), rtol=1e-12)
    # Every training token is counted once, under a context it was seen in.
    assert counts.pair_counts.sum() == counts.context_counts.sum() == train.size


def test_iid_source_meets_the_closed_form_cross_entropy():
    # Tokens iid from p: the chosen model's expected loss per token is the cross-entropy
    # -sum_x p(x) log q(x | c), which for a unigram q is a closed form in the counts; and q is close
    # enough to p (excess ~ (V-1)/2N nats) that it sits at the entropy H(p).
    probabilities = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    rng = np.random.default_rng(0)
    train = rng.choice(5, (400, 500), p=probabilities)
    heldout = rng.choice(5, (100, 500), p=probabilities)
    floor = ngram.ngram_floor(train, heldout, 5)
    counts = np.bincount(train.ravel(), minlength=5)
    # Held-out mean of N iid losses: 4 standard errors.
    sampling = 4 * floor.losses_nats.std() / math.sqrt(heldout.size)
    entropy = -np.sum(probabilities * np.log(probabilities))
    if floor.order == 1:
        q = (counts + floor.add_constant) / (train.size + 5 * floor.add_constant)
        assert abs(floor.nats_per_token + np.sum(probabilities * np.log(q))) < sampling
    # Whatever order wins on validation, estimation costs at most ~V^k (V-1) / 2N nats over H(p).
    assert abs(floor.nats_per_token - entropy) < sampling + 5**floor.order * 4 / train.size, floor.order


def test_markov_chain_is_found_at_its_order():
    # A first-order Markov chain (a 2-gram source): the floor picks order >= 2 and reaches its entropy
    # rate, far below the unigram entropy.
    transition = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    rng = np.random.default_rng(1)
    num_sequences, length = 600, 200
    tokens = np.zeros((num_sequences, length), np.int64)
    tokens[:, 0] = rng.integers(0, 3, num_sequences)
    for t in range(1, length):
        cumulative = transition[tokens[:, t - 1]].cumsum(axis=1)
        tokens[:, t] = (rng.random((num_sequences, 1)) > cumulative).sum(axis=1)
    train, heldout = tokens[:500], tokens[500:]
    floor = ngram.ngram_floor(train, heldout, 3)
    assert floor.order >= 2
    # Exact expected loss of the true chain on the held-out positions (position 0 is uniform).
    row_entropies = -np.sum(transition * np.log(transition), axis=1)
    optimal = np.concatenate([np.full((100, 1), math.log(3)), row_entropies[heldout[:, :-1]]], axis=1)
    sampling = 4 * floor.losses_nats.std() / math.sqrt(heldout.size)
    assert abs(floor.nats_per_token - optimal.mean()) < sampling + 3**floor.order * 2 / train.size


def test_stream_tokens_takes_whole_sequences_from_step_zero():
    class Stream:
        def batch(self, step):
            return np.full((4, 10), step)

    tokens = ngram.stream_tokens(Stream(), 95)
    assert tokens.shape == (10, 10)
    np.testing.assert_array_equal(tokens[:, 0], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(ValueError, match=r"held-out tokens holds values outside \[0, 3\)"):
        ngram.token_losses(ngram.count(np.zeros((2, 4), int), 2, 3), 0.1, np.full((1, 4), 3))
    with pytest.raises(ValueError, match="leaves no fitting or no validation sequence"):
        ngram.select(np.zeros((1, 4), int), 3)
    with pytest.raises(ValueError, match="overflows"):
        ngram.context_codes(np.zeros((1, 4), int), 30, 32)
