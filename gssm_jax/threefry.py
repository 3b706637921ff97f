"""Threefry-2x32 in plain uint32 operations: the sampler's counter-based random words.

The generator behind `jax.random`, written out so that XLA fuses and vectorises it with the draws
(several times faster on CPU than going through `jax.random` for every word); bit-identical to
`jax.extend.random.threefry_2x32` (tested).
"""

from __future__ import annotations

import jax
import numpy as np

THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
THREEFRY_PARITY = np.uint32(0x1BD11BDA)


def threefry_2x32(key_words: tuple[jax.Array, jax.Array], counter_high: jax.Array,
                  counter_low: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds, Random123), bit-identical to `jax.extend.random.threefry_2x32`.

    Args:
      key_words: two uint32 scalars.
      counter_high, counter_low: uint32 arrays of one broadcast shape, the two counter words.

    Returns:
      two uint32 arrays of the broadcast shape: the random words for each counter.
    """
    key_0, key_1 = key_words
    schedule = (key_0, key_1, key_0 ^ key_1 ^ THREEFRY_PARITY)
    x0 = counter_high + schedule[0]
    x1 = counter_low + schedule[1]
    for block in range(5):
        for rotation in THREEFRY_ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))
            x1 = x1 ^ x0
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1
