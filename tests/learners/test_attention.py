"""Attention implementations against a float64 numpy reference and XLA's: values, gradients, causality, choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gssm_jax.learners import attention
from gssm_jax.learners.blockwise_attention import blockwise_attention


def numpy_attention(query, key, value):
    """Causal softmax attention in float64: (batch, length, heads, d) -> same shape."""
    query, key, value = (np.asarray(x, np.float64) for x in (query, key, value))
    length, size = query.shape[1], query.shape[-1]
    scores = np.einsum("bqnd,bknd->bnqk", query, key) / np.sqrt(size)
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", probs, value)


def _inputs(shape, dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    return [jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in keys]


# (length, block): one block, a length below the block, lengths not divisible by it, many blocks.
CASES = [(16, 16), (5, 8), (37, 8), (50, 16), (64, 8)]
IMPLEMENTATIONS = {
    "xla": attention.reference_attention,
    **{f"blockwise{block}": (lambda q, k, v, b=block: blockwise_attention(q, k, v, b)) for block in (8, 16)},
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("length", "block"), CASES)
@jax.default_matmul_precision("highest")  # GPUs otherwise multiply float32 in TF32 (10-bit mantissa)
def test_blockwise_values_and_gradients_match_the_reference(length, block, dtype):
    query, key, value, cotangent = _inputs((2, length, 3, 8), dtype)
    eps = float(jnp.finfo(dtype).eps)

    def loss(function):
        return lambda q, k, v: jnp.sum(function(q, k, v).astype(jnp.float32) * cotangent.astype(jnp.float32))

    def blockwise(q, k, v):
        return blockwise_attention(q, k, v, block)

    def reference32(q, k, v):  # XLA's reference in float32 on the same (rounded) inputs
        return attention.reference_attention(*(x.astype(jnp.float32) for x in (q, k, v)))

    output = blockwise(query, key, value)
    assert output.dtype == dtype and output.shape == query.shape
    expected = numpy_attention(query, key, value)
    # Outputs are convex combinations of O(1) values: float32 loses a few eps in the sums; bfloat16 rounds
    # the probabilities and the output once each (2 eps relative), times the values' scale (|v| < 5).
    tolerance = 16 * eps if dtype == jnp.float32 else 4 * eps * 5
    np.testing.assert_allclose(np.asarray(output, np.float64), expected, atol=tolerance, rtol=0)
    grads = jax.grad(loss(blockwise), argnums=(0, 1, 2))(query, key, value)
    expected_grads = jax.grad(loss(reference32), argnums=(0, 1, 2))(query, key, value)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert grad.dtype == dtype
        scale = float(jnp.abs(expected_grad).max())
        # Gradients sum `length` products of O(1) terms; bfloat16 rounds dS and the inputs (a few eps each).
        tolerance = (64 * eps if dtype == jnp.float32 else 8 * eps) * scale
        np.testing.assert_allclose(np.asarray(grad, np.float32), expected_grad, atol=tolerance, rtol=0)


def test_xla_reference_matches_numpy():
    query, key, value, _ = _inputs((2, 37, 3, 8), jnp.float32)
    np.testing.assert_allclose(attention.reference_attention(query, key, value), numpy_attention(query, key, value),
                               atol=16 * float(jnp.finfo(jnp.float32).eps), rtol=0)


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
def test_no_position_sees_the_future(name):
    # Changing keys/values at positions >= 20 leaves outputs before 20 bitwise unchanged, and the gradient of
    # early outputs with respect to late keys and values is exactly zero (masked probabilities are exactly 0).
    function = IMPLEMENTATIONS[name]
    query, key, value, _ = _inputs((1, 45, 2, 8), jnp.float32)
    changed_key, changed_value = key.at[:, 20:].add(1.0), value.at[:, 20:].add(1.0)
    before, after = function(query, key, value), function(query, changed_key, changed_value)
    np.testing.assert_array_equal(before[:, :20], after[:, :20])
    assert not np.allclose(before[:, 20:], after[:, 20:])
    d_key, d_value = jax.grad(lambda k, v: function(query, k, v)[:, :20].sum(), argnums=(0, 1))(key, value)
    assert not np.any(d_key[:, 20:]) and not np.any(d_value[:, 20:])


def test_auto_choice_per_backend_dtype_and_length():
    f32, bf16 = jnp.float32, jnp.bfloat16
    assert attention.choose("auto", f32, 2048, 16, "cpu") == attention.Choice("blockwise", attention.CPU_BLOCK)
    assert attention.choose("auto", bf16, 2048, 16, "cpu").name == "blockwise"
    assert attention.choose("auto", bf16, 2048, 32, "gpu", "9.0") == attention.Choice("cudnn")
    assert attention.choose("auto", f32, 256, 32, "gpu", "9.0") == attention.Choice("xla")
    assert attention.choose("auto", f32, 2048, 32, "gpu", "9.0").name == "blockwise"
    assert attention.choose("auto", bf16, 2048, 12, "gpu", "9.0").name == "blockwise"  # head size not /8
    assert attention.choose("auto", bf16, 256, 32, "gpu", "7.5").name == "xla"  # before Ampere
    assert attention.choose("auto", bf16, 4096, 32, "tpu").name == "blockwise"
    assert attention.choose("xla", f32, 4096, 32, "cpu") == attention.Choice("xla")


@pytest.mark.parametrize(("dtype", "head_size", "platform", "capability", "reason"), [
    (jnp.bfloat16, 32, "cpu", None, "needs an NVIDIA GPU"),
    (jnp.float32, 32, "gpu", "9.0", "config.model.dtype=bfloat16"),
    (jnp.bfloat16, 12, "gpu", "9.0", "multiple of 8"),
    (jnp.bfloat16, 32, "gpu", "7.0", "compute capability"),
])
def test_unavailable_cudnn_is_a_one_line_error(dtype, head_size, platform, capability, reason):
    with pytest.raises(ValueError, match=reason) as raised:
        attention.choose("cudnn", dtype, 256, head_size, platform, capability)
    message = str(raised.value)
    assert message.startswith("config.model.attention='cudnn'") and "\n" not in message


def test_unknown_implementation_names_the_field():
    with pytest.raises(ValueError, match="config.model.attention='flash'; valid choices are auto, xla"):
        attention.choose("flash", jnp.float32, 16, 8, "cpu")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs an NVIDIA GPU")
def test_cudnn_matches_the_reference_on_gpu():
    query, key, value, cotangent = _inputs((2, 256, 4, 32), jnp.bfloat16)
    eps = float(jnp.finfo(jnp.bfloat16).eps)
    output = attention.causal_attention(query, key, value, "cudnn")
    np.testing.assert_allclose(np.asarray(output, np.float64), numpy_attention(query, key, value), atol=20 * eps)

    def loss(name):
        return lambda q, k, v: jnp.sum(attention.causal_attention(q, k, v, name).astype(jnp.float32) * cotangent)

    grads = jax.grad(loss("cudnn"), argnums=(0, 1, 2))(query, key, value)
    expected = jax.grad(loss("xla"), argnums=(0, 1, 2))(query, key, value)
    for grad, reference in zip(grads, expected, strict=True):
        scale = float(jnp.abs(reference.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(reference, np.float32),
                                   atol=16 * eps * scale)
