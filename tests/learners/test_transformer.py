"""The transformer (the backbone with attention): causality, rotary positions, parameter count, init loss, dtypes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gssm_jax.learners import LanguageModel, count_parameters, next_token_inputs, registry, token_losses, transformer
from gssm_jax.learners.transformer import TransformerConfig

FLOAT32_EPS = float(np.finfo(np.float32).eps)


@nnx.jit
def _logits(model: LanguageModel, inputs: jax.Array) -> jax.Array:
    return model(inputs)


def _model(**overrides) -> LanguageModel:
    fields = {"vocab_size": 11, "width": 32, "depth": 1, "heads": 4}
    fields.update(overrides)
    return registry.build(TransformerConfig(**fields), nnx.Rngs(0))


def test_outputs_before_a_change_do_not_depend_on_it():
    # Causal attention: changing inputs at positions >= 5 must leave the logits at positions < 5
    # untouched (masked attention weights are exactly 0, so the equality is exact up to reordering).
    model = _model()
    model.head.kernel[...] = jax.random.normal(jax.random.key(3), model.head.kernel.shape)
    inputs = jax.random.randint(jax.random.key(1), (3, 12), 0, 11)
    changed = inputs.at[:, 5:].set((inputs[:, 5:] + 1) % 11)
    logits, changed_logits = _logits(model, inputs), _logits(model, changed)
    np.testing.assert_allclose(logits[:, :5], changed_logits[:, :5], rtol=0, atol=1e-6)
    assert not np.allclose(logits[:, 5:], changed_logits[:, 5:], atol=1e-3)  # the change is visible later


def test_rotary_scores_depend_only_on_the_offset():
    # <R(p) q, R(p + d) k> = <q, R(d) k> for every p: the defining property of rotary embeddings.
    query, key = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 16))
    positions = jnp.arange(40)
    rotated_query = transformer.apply_rotary(jnp.broadcast_to(query, (1, 40, 1, 16)), positions)[0, :, 0]
    rotated_key = transformer.apply_rotary(jnp.broadcast_to(key, (1, 40, 1, 16)), positions)[0, :, 0]
    offset = 7
    scores = jnp.sum(rotated_query[:-offset] * rotated_key[offset:], axis=-1)  # (33,) pairs (p, p + 7)
    # float32 sin/cos of angles up to 40 rad carry ~40 eps absolute error each; 16 products of O(1) terms.
    np.testing.assert_allclose(scores, scores[0], atol=16 * 40 * FLOAT32_EPS * float(jnp.abs(query).max() ** 2 + 1))
    assert not np.isclose(scores[0], jnp.sum(rotated_query[0] * rotated_key[offset + 1]))


def test_parameter_count_matches_the_closed_form():
    vocab, width, depth, hidden = 11, 32, 3, int(2.5 * 32)
    model = _model(depth=depth, mlp_ratio=2.5)
    per_block = 3 * width * width + width * width + 2 * width * hidden + hidden * width + 2 * width
    expected = (vocab + 1) * width + depth * per_block + width + width * vocab
    assert count_parameters(model) == expected
    assert count_parameters(nnx.state(model, nnx.Param)) == expected


def test_initial_loss_is_log_vocab_and_covers_every_position():
    # The zero-initialised head predicts the uniform distribution: loss log V at all T positions,
    # position 0 included (predicted from BOS).
    model = _model()
    tokens = jax.random.randint(jax.random.key(2), (4, 9), 0, 11).astype(jnp.uint8)
    losses = nnx.jit(token_losses)(model, tokens)
    assert losses.shape == (4, 9)
    np.testing.assert_allclose(losses, math.log(11), rtol=4 * FLOAT32_EPS)


def test_next_token_inputs_prepend_bos_and_drop_the_last_token():
    tokens = jnp.array([[3, 1, 4], [1, 5, 9]], jnp.uint8)
    np.testing.assert_array_equal(next_token_inputs(tokens, 11), [[11, 3, 1], [11, 1, 5]])


def test_bfloat16_computation_tracks_float32():
    # Same parameters, bfloat16 activations: bfloat16 keeps 8 mantissa bits (eps 2^-7 ~ 0.0078);
    # two blocks of O(1) activations accumulate a few eps, so logits agree to ~0.1 absolute.
    model32 = _model()
    model16 = _model(dtype="bfloat16")
    head = jax.random.normal(jax.random.key(4), (32, 11)) / 6
    model32.head.kernel[...] = head
    model16.head.kernel[...] = head
    inputs = jax.random.randint(jax.random.key(5), (2, 10), 0, 11)
    logits16 = _logits(model16, inputs)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, _logits(model32, inputs), atol=0.1)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"width": 30, "heads": 4}, "divisible by config.model.heads"),
    ({"width": 12, "heads": 4}, "must be even"),
    ({"dtype": "float16"}, "config.model.dtype"),
])
def test_bad_shapes_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        TransformerConfig(vocab_size=11, **overrides)


def _loss_and_grads(model: LanguageModel, tokens: jax.Array):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        return token_losses(nnx.merge(graphdef, params), tokens).mean()

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("overrides", [{"attention": "blockwise"}, {"remat": True}])
def test_blockwise_attention_and_remat_leave_loss_and_gradients_unchanged(overrides):
    # Same function, different schedule: float32 rounding only (a few eps of the largest gradient).
    tokens = jax.random.randint(jax.random.key(6), (2, 70), 0, 11)
    reference = _model(depth=2, attention="xla")
    reference.head.kernel[...] = jax.random.normal(jax.random.key(7), reference.head.kernel.shape)
    other = _model(depth=2, **({"attention": "xla"} | overrides))
    other.head.kernel[...] = reference.head.kernel[...]
    loss, grads = _loss_and_grads(reference, tokens)
    other_loss, other_grads = _loss_and_grads(other, tokens)
    np.testing.assert_allclose(other_loss, loss, rtol=16 * FLOAT32_EPS)
    for grad, other_grad in zip(jax.tree.leaves(grads), jax.tree.leaves(other_grads), strict=True):
        np.testing.assert_allclose(other_grad, grad, atol=64 * FLOAT32_EPS * float(jnp.abs(grad).max()) + 1e-12)
