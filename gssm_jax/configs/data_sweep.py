"""The finite-data sweep: one dataset on disk, one training run per training-set size.

Commands (after `pip install -e .`, from any directory):

  gssm-data-sweep --config=data_sweep --workdir=runs/data_sweep           # CPU, minutes
  gssm-data-sweep --config=data_sweep:size=paper --workdir=runs/data_sweep_paper

The optional argument after `:` is `size=cpu|paper|tiny` (default cpu; tiny: 2 x 10 steps on 30 and 100
sequences, seconds). Training fields, the graph included, come from the `base` config at that size;
`config.data_sweep` holds the sweep: the dataset is written once to `<workdir>/dataset` (resumable),
and run n trains on the first n training sequences (`config.data.num_sequences`) in
`<workdir>/runs/n<n>`. Rerunning skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import ml_collections

from gssm_jax.configs import base
from gssm_jax.configs.common import SIZES, parse_arg
from gssm_jax.data.sizes import data_size_grid

ARG_DEFAULTS = {"size": "cpu"}
ARG_CHOICES = {"size": SIZES}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Base training config plus the `data_sweep` sub-dict; `arg` as in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, ARG_CHOICES)
    paper, tiny = options["size"] == "paper", options["size"] == "tiny"
    config = base.get_config(f"size={options['size']}")
    config.data.source = "file"
    if tiny:
        config.train.num_steps, config.train.eval_every, config.train.checkpoint_every = 10, 10, 10
        config.train.log_every, config.optimizer.warmup_steps = 5, 2
    elif not paper:
        # Short runs: the sweep trains one model per size on 2 cores.
        config.data.length = 64
        config.train.num_steps = 200
        config.train.eval_every = 100
        config.train.checkpoint_every = 100
        config.train.log_every = 50
        config.optimizer.warmup_steps = 20

    config.data_sweep = ml_collections.ConfigDict()
    # Training-set sizes (sequences), one run each; every run trains on a prefix of one training split.
    config.data_sweep.num_sequences = list(data_size_grid(options["size"]))
    # Held-out sequences in the dataset's test split (>= config.eval.num_sequences).
    config.data_sweep.num_test = max(config.eval.num_sequences, 1024 if paper else 16 if tiny else 64)
    # Sequences per shard file of the dataset (sampled on device at once).
    config.data_sweep.shard_size = 4096 if paper else 32 if tiny else 256
    return config
