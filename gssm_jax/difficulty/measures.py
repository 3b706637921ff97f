"""Difficulty measures of one token batch `tokens (batch, length)`.

* `gzip_bytes_per_token`: composable-llm's "difficulty", zlib-9 bytes per token of the int64 stream
  (kept bit-compatible with composable-llm's table; not an entropy, not a ratio);
* `compressed_bits_per_token(tokens, compressor, vocab_size)`: zlib-9, bz2-9 or lzma (preset 9)
  on the *packed* stream (one uint8 per token when the vocabulary fits, else uint16/uint32), in
  bits per token; divided by log2(V) it is the fraction of an incompressible stream;
* the exact entropy rate, from `gssm_jax.inference.entropy_rate`, in nats per token (the unit of the
  learners' losses; `gssm_jax.difficulty.measurer`).

Units: entropy in nats/token, gzip in composable-llm's bytes/token, the three compressors in bits/token
(a compressed size is a number of bits); `MEASURES` names each.
"""

from __future__ import annotations

import bz2
import concurrent.futures
import lzma
import math
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gssm_jax.errors import UserError

NATS_PER_BIT = math.log(2.0)  # nats = bits * NATS_PER_BIT
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": lambda data: zlib.compress(data, 9),
    "bz2": lambda data: bz2.compress(data, 9),
    "lzma": lambda data: lzma.compress(data, preset=9),
}
# Every measure `difficulty` knows, with its unit. All increase with alpha_X and with alpha_Z.
MEASURES: dict[str, str] = {
    "entropy": "nats/token (exact entropy rate, forward algorithm)",
    "gzip": "bytes/token (composable-llm's zlib-9 on int64 tokens)",
    "zlib": "bits/token (zlib-9 on packed tokens; compressed size in bits, not nats)",
    "bz2": "bits/token (bz2-9 on packed tokens; compressed size in bits, not nats)",
    "lzma": "bits/token (lzma preset 9 on packed tokens; compressed size in bits, not nats)",
}


def gzip_bytes_per_token(tokens) -> float:
    """Composable-llm's "difficulty": zlib level-9 bytes per token of the int64 little-endian stream.

    `len(zlib.compress(tokens.astype('<i8').tobytes(), 9)) / tokens.size`. Not a ratio and not an
    entropy: it measures how hard the structure is for DEFLATE to find. The seed used one
    (1024, T) batch.

    Args:
      tokens: integer array `(batch, length)` (any integer dtype; converted to int64).

    Returns:
      compressed bytes per token (8.0 would be incompressible int64 words).
    """
    tokens = np.asarray(tokens)
    return len(zlib.compress(tokens.astype("<i8").tobytes(), 9)) / tokens.size


def packed_bytes(tokens, vocab_size: int) -> bytes:
    """The token stream, row-major, in the smallest unsigned little-endian type holding `vocab_size - 1`.

    Args:
      tokens: integer array `(batch, length)` with values in `[0, vocab_size)`.
      vocab_size: number of token values V.
    """
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise UserError(f"tokens must lie in [0, vocab_size={vocab_size}); got [{tokens.min()}, {tokens.max()}]")
    dtype = "<u1" if vocab_size <= 2**8 else "<u2" if vocab_size <= 2**16 else "<u4"
    return tokens.astype(dtype).tobytes()


def compressed_bits_per_token(tokens, compressor: str, vocab_size: int) -> float:
    """Bits per token that `compressor` needs for the packed token stream (`packed_bytes`).

    Args:
      tokens: integer array `(batch, length)`.
      compressor: one of `COMPRESSORS` ("zlib" level 9, "bz2" level 9, "lzma" preset 9).
      vocab_size: number of token values V (sets the packing width).

    Returns:
      8 * compressed bytes / number of tokens, in bits per token (includes the format's header).
    """
    if compressor not in COMPRESSORS:
        raise UserError(f"compressor {compressor!r} is unknown; valid compressors are {', '.join(COMPRESSORS)}")
    tokens = np.asarray(tokens)
    return 8.0 * len(COMPRESSORS[compressor](packed_bytes(tokens, vocab_size))) / tokens.size


def compression_measures(tokens, vocab_size: int) -> dict[str, float]:
    """Every compression measure of one batch.

    Returns:
      `{"gzip": bytes/token (seed), "zlib"|"bz2"|"lzma": bits/token, "<name>_fraction": bits/token /
      log2(V)}`.
    """
    measures = {"gzip": gzip_bytes_per_token(tokens)}
    for name in COMPRESSORS:
        bits = compressed_bits_per_token(tokens, name, vocab_size)
        measures[name] = bits
        measures[f"{name}_fraction"] = bits / math.log2(vocab_size)
    return measures


def parallel_map(function: Callable[[Any], Any], items: Sequence[Any], max_workers: int | None = None) -> list:
    """`[function(item) for item in items]` on a thread pool (zlib, bz2 and lzma release the GIL).

    Args:
      max_workers: threads; default `os.cpu_count()`.
    """
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers or os.cpu_count()) as pool:
        return list(pool.map(function, items))


def unit(measure: str) -> str:
    """The unit of `measure` alone, e.g. "nats/token" (the first word of `MEASURES[measure]`)."""
    check_measure(measure)
    return MEASURES[measure].split(" ")[0]


def check_measure(measure: str) -> None:
    """Raises a UserError (a ValueError) listing the valid measures if `measure` is not one of them."""
    if measure not in MEASURES:
        raise UserError(f"measure {measure!r} is unknown; valid measures are {', '.join(MEASURES)}")
