"""Generation of a finite dataset on disk (train and test splits of a GSSM's sequences).

Commands (after `pip install -e .`, from any directory):

  gssm-generate-data --config=data --workdir=data/four_by_four_cpu
  gssm-generate-data --config=data:size=paper --workdir=data/four_by_four
  gssm-generate-data --config=data:family=chain,alpha_x=0.05,alpha_z=0.001 \
      --config.num_train=10000 --workdir=data/chain_small_alpha_z

By default the dataset is the one the `base` config trains on at the same size: the graph, kernel seed and
length of `base:size=SIZE` (alpha_x and alpha_z passed on), so `gssm-train --config=base:size=SIZE
--config.data.source=file --config.data.path=DIR` trains on it at every size (the sizes: `gssm_jax.configs.common`).
The optional argument after `:` is a comma-separated list of `key=value`:
  size     cpu (default: 1,000 + 64 sequences of 128 tokens, seconds), paper (1,000,000 + 1,024 sequences
           of 2,048 tokens, 2 GB) or tiny (100 + 16 sequences of 32 tokens);
  family   base (default: the graph of base:size=SIZE) or a family of `gssm_jax.gssm.families`
           (four_by_four, eight_by_four, chain), at its composable-llm length at size=paper;
  alpha_x  Dirichlet concentration of X's rows (float > 0; default: base's 1e-3, or the family's reference);
  alpha_z  Dirichlet concentration of every hidden node's rows (float > 0; default: base's 0.125, or the
           family's reference).
`num_train` is the largest size of the data-size sweep (`gssm_jax.data.data_size_grid(size)`) plus the
validation sequences that training takes from the end of the train split, so every run of the sweep trains
on a prefix of the same split (`config.data.num_sequences`). Rerunning an interrupted command resumes from
the finished shards.
"""

from __future__ import annotations

import math

import ml_collections

from gssm_jax.configs import base
from gssm_jax.configs.common import SIZES, parse_arg
from gssm_jax.data.sizes import data_size_grid
from gssm_jax.errors import UserError
from gssm_jax.gssm.families import FAMILIES

BASE = "base"
ARG_DEFAULTS = {"size": "cpu", "family": BASE, "alpha_x": math.nan, "alpha_z": math.nan}  # nan: the default alpha
ARG_CHOICES = {"size": SIZES, "family": (BASE, *FAMILIES)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The generation's configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, ARG_CHOICES)
    size, given = options["size"], {name: options[name] for name in ("alpha_x", "alpha_z")
                                     if not math.isnan(options[name])}
    training = base.get_config(",".join([f"size={size}", *(f"{name}={value!r}" for name, value in given.items())]))
    config = ml_collections.ConfigDict()
    # Graph config in the `GraphSpec.from_config` format ({"nodes": [...]}); any graph may be given here.
    config.graph = training.graph
    # Tokens per sequence (>= 1); must equal config.data.length of the training runs.
    config.length = training.data.length
    if options["family"] != BASE:
        family = FAMILIES[options["family"]]
        alphas = {name: given.get(name, reference) for name, reference in zip(("alpha_x", "alpha_z"), family.reference,
                                                                               strict=True)}
        for name, value in alphas.items():
            if not value > 0:
                raise UserError(f"config argument {name}={value}: must be a Dirichlet concentration > 0")
        config.graph = family.config(alphas["alpha_x"], alphas["alpha_z"])
        config.length = family.length if size == "paper" else training.data.length
    # Kernel seed: kernels = sample_kernels(keys.kernel_key(seed), graph); train with the same config.seed.
    config.seed = training.seed
    # Seed of the sequences; shard i of a split comes from keys.shard_key(data_seed, split, i).
    config.data_seed = training.data.data_seed
    # Training sequences (>= 1): the sweep's largest size, plus the validation sequences training keeps apart.
    config.num_train = max(data_size_grid(size)) + training.eval.get("validation_sequences", 0)
    # Held-out sequences (>= 0); evaluation reports excess loss over their exact entropy.
    config.num_test = max(training.eval.num_sequences, 1024 if size == "paper" else 0)
    # Sequences per shard file (>= 1), sampled on device in one batch; a multiple of the device count
    # spreads the sampling over all devices. Changing it changes the dataset.
    config.shard_size = {"paper": 4096, "cpu": 256, "tiny": 32}[size]
    return config
