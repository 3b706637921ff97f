"""Token data: the training streams (one `Batches` protocol) and finite datasets on disk.

`batches` (on-the-fly and file streams), `format` (the files of a dataset), `generate` (resumable
generation), `load` (verified, memory-mapped loading), `sizes` (the data-size sweep's grid). The
everyday names are re-exported here, each imported on first use (`gssm_jax.lazy`).
"""

from gssm_jax import lazy

_NAMES = {
    "gssm_jax.data.batches": ("Batches", "FileBatches", "OnTheFlyBatches", "batch_indices", "check_num_sequences",
                              "device_batch", "epoch_permutation", "file_batch"),
    "gssm_jax.data.format": ("DatasetError", "load_kernels", "shard_key", "shard_rows", "token_dtype"),
    "gssm_jax.data.generate": ("GenerationProgress", "generate_dataset"),
    "gssm_jax.data.load": ("Dataset", "ShardedSplit", "check_compatible", "load_dataset"),
    "gssm_jax.data.sizes": ("DATA_SIZE_GRIDS", "data_size_grid"),
}
__getattr__, __dir__ = lazy.exports(__name__, _NAMES)
__all__ = sorted(name for names in _NAMES.values() for name in names)
