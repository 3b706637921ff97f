"""The training-set sizes of the data-size sweep."""

from __future__ import annotations

from gssm_jax.errors import UserError

# Composable-llm's n_data grid (sequences in the training set), in half-decades; `cpu` stays laptop-sized,
# `tiny` is a smoke run.
DATA_SIZE_GRIDS = {
    "paper": (30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000),
    "cpu": (30, 100, 300, 1_000),
    "tiny": (30, 100),
}


def data_size_grid(size: str) -> tuple[int, ...]:
    """Training-set sizes (sequences) of the data-size sweep for `size` in `DATA_SIZE_GRIDS`."""
    if size not in DATA_SIZE_GRIDS:
        raise UserError(f"size={size!r}: valid sizes are {', '.join(DATA_SIZE_GRIDS)}")
    return DATA_SIZE_GRIDS[size]
