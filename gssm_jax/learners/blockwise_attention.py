"""Causal attention over query/key blocks with an online softmax and a recomputing backward pass.

The (length, length) scores are never held at once: the forward pass keeps, per query row, the running
max `m`, the running sum `total` of exp(score - m) and the running weighted sum of values (flash attention's
online softmax), visiting only the key blocks at or below the diagonal. It saves the output and the
log-sum-exp `lse = m + log total` (batch, heads, length), and the backward pass recomputes each block's
probabilities exp(score - lse) instead of storing them. Memory: O(length x block) per layer instead of
O(length^2); blocks above the diagonal are skipped, so compute is about half of the full square.

Layout inside this module: (batch, heads, length, head_size), so every block product is a batched
matrix product with the batch dims leading (no transposes inside the loops). Scores, softmax statistics
and accumulators are float32 whatever the input dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def _blocks(x: jax.Array, block: int) -> jax.Array:
    """(batch, heads, length, d) -> (num_blocks, batch, heads, block, d)."""
    batch, heads, length, size = x.shape
    return x.reshape(batch, heads, length // block, block, size).transpose(2, 0, 1, 3, 4)


def _unblocks(x: jax.Array) -> jax.Array:
    """(num_blocks, batch, heads, block, ...) -> (batch, heads, num_blocks * block, ...)."""
    num_blocks, batch, heads, block = x.shape[:4]
    return x.transpose(1, 2, 0, 3, *range(4, x.ndim)).reshape(batch, heads, num_blocks * block, *x.shape[4:])


def _matmul(spec: str, left: jax.Array, right: jax.Array) -> jax.Array:
    """float32 batched product over the last two axes, e.g. spec "qd,kd->qk"; leading axes are batch axes.

    The batch axes are flattened into one: XLA:CPU's GEMM runs a (nb, batch, heads) batch several times
    slower than the same products with one batch axis (measured, benchmarks/RESULTS.md).
    """
    inputs, output = spec.split("->")
    first, second = inputs.split(",")
    batch = left.shape[:-2]
    product = jnp.einsum(f"g{first},g{second}->g{output}", left.reshape(-1, *left.shape[-2:]),
                         right.reshape(-1, *right.shape[-2:]), preferred_element_type=_F32)
    return product.reshape(*batch, *product.shape[-2:])


def _scores(query: jax.Array, key: jax.Array) -> jax.Array:
    """float32 (..., q, k) scores of pre-scaled queries (..., q, d) against keys (..., k, d)."""
    return _matmul("qd,kd->qk", query, key)


def _weighted(probs: jax.Array, value: jax.Array) -> jax.Array:
    """float32 (..., q, d): probabilities (..., q, k) times values (..., k, d), in the values' dtype."""
    return _matmul("qk,kd->qd", probs.astype(value.dtype), value)


def _causal(scores: jax.Array) -> jax.Array:
    """Diagonal blocks: scores of keys after the query set to -inf (every row keeps its own key)."""
    size = scores.shape[-1]
    keep = jnp.arange(size)[:, None] >= jnp.arange(size)[None, :]
    return jnp.where(keep, scores, -jnp.inf)


def _forward(query: jax.Array, key: jax.Array, value: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    """Output (batch, heads, length, d) in value's dtype and float32 lse (batch, heads, length)."""
    qb, kb, vb = _blocks(query, block), _blocks(key, block), _blocks(value, block)
    # Diagonal blocks of every query block at once: memory (length x block), the online softmax's start.
    scores = _causal(_scores(qb, kb))
    m = scores.max(axis=-1)
    probs = jnp.exp(scores - m[..., None])
    total, acc = probs.sum(axis=-1), _weighted(probs, vb)

    def query_block(_, inputs):
        q, m, total, acc, row = inputs

        def key_block(column, carry):
            m, total, acc = carry
            scores = _scores(q, kb[column])
            m_new = jnp.maximum(m, scores.max(axis=-1))
            rescale = jnp.exp(m - m_new)
            probs = jnp.exp(scores - m_new[..., None])
            return m_new, total * rescale + probs.sum(axis=-1), acc * rescale[..., None] + _weighted(probs, vb[column])

        m, total, acc = jax.lax.fori_loop(0, row, key_block, (m, total, acc))
        return None, (m, total, acc)

    num_blocks = qb.shape[0]
    if num_blocks > 1:
        rows = jnp.arange(1, num_blocks)
        _, (m_rest, total_rest, acc_rest) = jax.lax.scan(query_block, None, (qb[1:], m[1:], total[1:], acc[1:], rows))
        m, total, acc = (jnp.concatenate([first[:1], rest])
                         for first, rest in ((m, m_rest), (total, total_rest), (acc, acc_rest)))
    output = (acc / total[..., None]).astype(value.dtype)
    return _unblocks(output), _unblocks(m + jnp.log(total))


def _block_grads(q, k, k_t, v, d_out, lse, delta, causal):
    """Gradient contributions of one (query block, key block) pair: (d_query^T, d_key, d_value), float32.

    Computed key-major (scores transposed, (..., k, q)) so that every product contracts a row-major
    operand's last axis or the other's first (plain matrix products for the CPU's GEMM kernels):
    d_query comes out transposed, (..., d, q), from the keys' transpose k_t (..., d, k).
    """
    scores_t = _scores(k, q)
    if causal:
        scores_t = _causal(scores_t.swapaxes(-1, -2)).swapaxes(-1, -2)
    probs_t = jnp.exp(scores_t - lse[..., None, :])
    d_value = _matmul("kq,qd->kd", probs_t.astype(d_out.dtype), d_out)
    d_probs_t = _matmul("kd,qd->kq", v, d_out)
    d_scores_t = (probs_t * (d_probs_t - delta[..., None, :])).astype(q.dtype)
    d_key = _matmul("kq,qd->kd", d_scores_t, q)
    d_query_t = _matmul("dk,kq->dq", k_t, d_scores_t)
    return d_query_t, d_key, d_value


def _backward(block, residuals, d_output):
    query, key, value, output, lse = residuals
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij: the softmax Jacobian's row term.
    delta = jnp.einsum("...d,...d->...", d_output.astype(_F32), output.astype(_F32))
    qb, kb, vb, db = (_blocks(x, block) for x in (query, key, value, d_output))
    kb_t = kb.swapaxes(-1, -2)
    lb, deltab = _blocks(lse[..., None], block)[..., 0], _blocks(delta[..., None], block)[..., 0]
    d_query_t, d_key, d_value = _block_grads(qb, kb, kb_t, vb, db, lb, deltab, causal=True)

    def key_block(d_query_t, inputs):
        # Key block `column` receives from the query blocks below the diagonal, rows column+1 ... last.
        k, k_t, v, d_k, d_v, column = inputs

        def query_block(row, carry):
            d_query_t, d_k, d_v = carry
            dq_t, dk, dv = _block_grads(qb[row], k, k_t, v, db[row], lb[row], deltab[row], causal=False)
            return d_query_t.at[row].add(dq_t), d_k + dk, d_v + dv

        d_query_t, d_k, d_v = jax.lax.fori_loop(column + 1, qb.shape[0], query_block, (d_query_t, d_k, d_v))
        return d_query_t, (d_k, d_v)

    num_blocks = qb.shape[0]
    if num_blocks > 1:
        columns = jnp.arange(num_blocks - 1)
        d_query_t, (dk_rest, dv_rest) = jax.lax.scan(
            key_block, d_query_t, (kb[:-1], kb_t[:-1], vb[:-1], d_key[:-1], d_value[:-1], columns))
        d_key = jnp.concatenate([dk_rest, d_key[-1:]])
        d_value = jnp.concatenate([dv_rest, d_value[-1:]])
    d_query = d_query_t.swapaxes(-1, -2)
    return tuple(_unblocks(grad).astype(x.dtype) for grad, x in ((d_query, query), (d_key, key), (d_value, value)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention(query, key, value, block):
    return _forward(query, key, value, block)[0]


def _attention_fwd(query, key, value, block):
    output, lse = _forward(query, key, value, block)
    return output, (query, key, value, output, lse)


_attention.defvjp(_attention_fwd, _backward)


def blockwise_attention(query: jax.Array, key: jax.Array, value: jax.Array, block_size: int = 128) -> jax.Array:
    """Causal softmax attention, scores scaled by 1/sqrt(head_size), computed block by block.

    Args:
      query, key, value: (batch, length, heads, head_size), one dtype (float32 or bfloat16).
      block_size: queries and keys per block; the length is padded up to a multiple of it (a length
        below it is one block). Padded keys come after every real query, so the causal mask hides them.

    Returns:
      (batch, length, heads, head_size) in the inputs' dtype.
    """
    length, head_size = query.shape[1], query.shape[-1]
    block = min(block_size, length)
    padded = -(-length // block) * block
    scale = jnp.asarray(head_size**-0.5, query.dtype)

    def heads_first(x):  # (batch, length, heads, d) -> (batch, heads, padded, d)
        return jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    output = _attention(heads_first(query * scale), heads_first(key), heads_first(value), block)
    return output.transpose(0, 2, 1, 3)[:, :length]
