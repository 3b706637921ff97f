"""Token data: the training streams (one `Batches` protocol) and finite datasets on disk.

`batches` (on-the-fly and file streams), `format` (the files of a dataset), `generate` (resumable
generation), `load` (verified, memory-mapped loading), `sizes` (the data-size sweep's grid). The
everyday names are re-exported here.
"""

from gssm_jax.data.batches import (
    Batches,
    FileBatches,
    OnTheFlyBatches,
    batch_indices,
    check_num_sequences,
    device_batch,
    epoch_permutation,
    file_batch,
)
from gssm_jax.data.format import DatasetError, load_kernels, shard_key, shard_rows, token_dtype
from gssm_jax.data.generate import GenerationProgress, generate_dataset
from gssm_jax.data.load import Dataset, ShardedSplit, check_compatible, load_dataset
from gssm_jax.data.sizes import DATA_SIZE_GRIDS, data_size_grid

__all__ = ["DATA_SIZE_GRIDS", "Batches", "Dataset", "DatasetError", "FileBatches", "GenerationProgress",
           "OnTheFlyBatches", "ShardedSplit", "batch_indices", "check_compatible", "check_num_sequences",
           "data_size_grid", "device_batch", "epoch_permutation", "file_batch", "generate_dataset", "load_dataset",
           "load_kernels", "shard_key", "shard_rows", "token_dtype"]
