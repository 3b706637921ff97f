"""The n-gram baseline: counts, selection, unigram, memorisation and curve against brute force; losses against the
closed form of an iid source and a Markov chain; the capped record of a seed folder."""

import collections
import json
import math

import numpy as np
import pytest

from gssm_jax.experiment1 import floors, ngram


def _contexts(row, order, vocab_size):
    """The k - 1 tokens before each position of a row, as tuples (BOS = V before the start)."""
    padded = [vocab_size] * (order - 1) + list(row)
    return [tuple(padded[t:t + order - 1]) for t in range(len(row))]


def _brute_force_losses(train, heldout, order, vocab_size, add_constant):
    """Python dictionaries over context tuples (BOS = V before the start)."""
    def contexts(row):
        return _contexts(row, order, vocab_size)

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


@pytest.mark.parametrize("dense", [True, False])
def test_dense_and_sorted_counts_agree(dense, monkeypatch):
    """Both counting paths (np.bincount into a table, sorting the codes) give the brute-force counts."""
    if not dense:
        monkeypatch.setattr(ngram, "DENSE_MAX_CODES", 0)
    rng = np.random.default_rng(7)
    train = rng.integers(0, 4, (5, 11)).astype(np.uint8)
    for order in (1, 2, 3, 5):
        counts = ngram.count(train, order, 4)
        pairs = collections.Counter((c, x) for row in train for c, x in zip(_contexts(row, order, 4), row,
                                                                              strict=True))
        contexts = collections.Counter(c for row in train for c in _contexts(row, order, 4))
        assert len(counts.pair_codes) == len(pairs) and len(counts.context_codes) == len(contexts)
        assert sorted(counts.pair_counts.tolist()) == sorted(pairs.values())
        assert sorted(counts.context_counts.tolist()) == sorted(contexts.values())
        assert np.all(np.diff(counts.pair_codes) > 0) and np.all(np.diff(counts.context_codes) > 0)


def _brute_force_floor(train, heldout, vocab_size, orders, add_constants, num_validation):
    """Selection, refit, unigram and contexts seen with Python dictionaries (`_brute_force_losses`)."""
    fitting, validation = train[:-num_validation], train[-num_validation:]
    scores = {(order, a): _brute_force_losses(fitting, validation, order, vocab_size, a).mean()
              for order in orders for a in add_constants}
    order, add_constant = min(scores, key=lambda key: (scores[key], *key))
    unigram = min(add_constants, key=lambda a: (scores[1, a], a))
    seen = {}
    for k in orders[1:]:
        training_contexts = {c for row in train for c in _contexts(row, k, vocab_size)}
        seen[k] = np.mean([c in training_contexts for row in heldout for c in _contexts(row, k, vocab_size)])
    return (order, add_constant, scores[order, add_constant],
            _brute_force_losses(train, heldout, order, vocab_size, add_constant),
            _brute_force_losses(train, heldout, 1, vocab_size, unigram).mean(), seen)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_selection_unigram_and_contexts_seen_match_brute_force(seed):
    """A source with some repetition (a noisy cycle), so that orders differ and some contexts are seen."""
    rng = np.random.default_rng(seed)
    vocab_size, orders, add_constants = 4, (1, 2, 3, 5), (0.01, 0.1, 1.0)

    def noisy_cycle(rows, length):
        start = rng.integers(0, vocab_size, (rows, 1))
        noise = rng.random((rows, length)) < 0.3
        return np.where(noise, rng.integers(0, vocab_size, (rows, length)), (start + np.arange(length)) % vocab_size)

    train, heldout = noisy_cycle(20, 8), noisy_cycle(4, 10)
    floor = ngram.ngram_floor(train.astype(np.uint8), heldout, vocab_size, orders, add_constants)
    order, add_constant, validation, losses, unigram, seen = _brute_force_floor(train, heldout, vocab_size, orders,
                                                                                add_constants, 2)
    assert (floor.order, floor.add_constant) == (order, add_constant)
    assert floor.train_tokens == train.size
    np.testing.assert_allclose(floor.validation_nats_per_token, validation, rtol=1e-12)
    np.testing.assert_allclose(floor.losses_nats, losses, rtol=1e-12)
    np.testing.assert_allclose(floor.unigram_nats_per_token, unigram, rtol=1e-12)
    assert list(floor.contexts_seen) == [2, 3, 5]
    np.testing.assert_allclose(list(floor.contexts_seen.values()), list(seen.values()), rtol=1e-12)
    assert 0 < floor.contexts_seen[5] < floor.contexts_seen[2] <= 1  # the case under test: some unseen
    assert ngram.select(train, vocab_size, orders, add_constants)[:2] == (order, add_constant)


class _Stream:
    """A training stream of fixed tokens: step s is rows s*batch_size ... of `tokens`."""

    def __init__(self, tokens, batch_size):
        self.tokens, self.batch_size = tokens, batch_size

    def batch(self, step):
        return self.tokens[step * self.batch_size:(step + 1) * self.batch_size]


def _source(rows, length, seed):
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 4, (rows, 1))
    return np.where(rng.random((rows, length)) < 0.2, rng.integers(0, 4, (rows, length)),
                    (start + np.arange(length) // 2) % 4).astype(np.uint8)


def test_floor_record_format_curve_and_cap():
    tokens, heldout = _source(64, 12, 0), _source(6, 12, 1)
    stream = _Stream(tokens, 8)
    budget = 40 * 12  # 40 sequences: the curve's points are the first 3, 10 and 40
    record = floors.floor_record(stream, heldout, 4, budget, max_tokens=10**6)
    assert list(record) == list(floors.RECORD_KEYS)
    assert record == floors.floor_record(stream, heldout, 4, budget, max_tokens=None)  # below the cap: uncapped
    assert json.loads(json.dumps(record)) == record
    assert [point["train_tokens"] for point in record["curve"]] == [3 * 12, 10 * 12, 40 * 12]
    for point, rows in zip(record["curve"], (3, 10, 40), strict=True):
        floor = ngram.ngram_floor(tokens[:rows], heldout, 4)
        assert point["nats_per_token"] == floor.nats_per_token
        assert point["heldout_contexts_seen"] == list(floor.contexts_seen.values())
    floor = ngram.ngram_floor(tokens[:40], heldout, 4)
    assert record["nats_per_token"] == record["curve"][-1]["nats_per_token"] == floor.nats_per_token
    assert (record["order"], record["add_constant"]) == (floor.order, floor.add_constant)
    assert record["unigram_nats_per_token"] == floor.unigram_nats_per_token
    assert record["memorisation"] == {"orders": [2, 3, 4, 5, 6],
                                      "heldout_contexts_seen": list(floor.contexts_seen.values())}
    assert (record["train_tokens"], record["heldout_sequences"], record["length"]) == (480, 6, 12)
    # Above the cap: the first whole sequences holding max_tokens tokens.
    capped = floors.floor_record(stream, heldout, 4, budget, max_tokens=200)
    assert capped["train_tokens"] == 17 * 12
    assert capped == floors.floor_record(stream, heldout, 4, 17 * 12, max_tokens=None)


def test_seed_folder_record_is_cached_and_an_older_format_recomputed(tmp_path, monkeypatch):
    from gssm_jax.configs import base  # noqa: PLC0415
    from gssm_jax.training import loop  # noqa: PLC0415

    tokens, heldout = _source(64, 12, 0), _source(6, 12, 1)
    calls = []

    def training_source(run, mesh=None):
        calls.append(run)
        return None, _Stream(tokens, 8), heldout, None

    monkeypatch.setattr(loop, "training_source", training_source)
    run = base.get_config("size=tiny")
    run.graph = {"nodes": [{"name": "Z", "states": 2, "alpha": 1.0, "parents": ["X"]},
                           {"name": "X", "states": 4, "alpha": 1.0, "parents": ["Z"]}]}
    run.train.num_steps, run.data.batch_size, run.data.length = 5, 8, 12
    seed_dir = str(tmp_path / "seed0")
    with open(floors.floor_path(str(tmp_path)), "w") as file:
        json.dump({"order": 2, "nats_per_token": 1.0}, file)  # an older record: recomputed
    assert floors.read_floor(str(tmp_path)) is None and floors.read_floor(seed_dir) is None
    record = floors.ngram_floor(run, str(tmp_path))
    assert floors.read_floor(str(tmp_path)) == record
    assert record == floors.floor_record(_Stream(tokens, 8), heldout, 4, 5 * 8 * 12) and len(calls) == 1
    assert floors.ngram_floor(run, str(tmp_path)) == record and len(calls) == 1  # cached
    assert floors.ngram_floor(run, seed_dir, max_tokens=100)["train_tokens"] == 9 * 12 and len(calls) == 2


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
