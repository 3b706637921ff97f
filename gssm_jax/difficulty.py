"""Difficulty measures of token batches (DESIGN.md §3)."""

from __future__ import annotations

import zlib

import numpy as np


def gzip_bytes_per_token(tokens) -> float:
    """The seed's "difficulty": zlib level-9 bytes per token of the int64 little-endian stream.

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
