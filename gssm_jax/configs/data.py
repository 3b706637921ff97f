"""Generation of a finite dataset on disk (train and test splits of a GSSM's sequences).

Commands (after `pip install -e .`, from any directory):

  gssm-generate-data --config=data --workdir=data/four_by_four_cpu
  gssm-generate-data --config=data:size=paper --workdir=data/four_by_four
  gssm-generate-data --config=data:family=chain,alpha_x=0.05,alpha_z=0.001 \
      --config.num_train=10000 --workdir=data/chain_small_alpha_z

The optional argument after `:` is a comma-separated list of `key=value`:
  size     cpu (default: 1,000 + 64 sequences of 128 tokens, seconds), paper (1,000,000 + 1,024
           sequences at the family's seed length, 2 GB for four_by_four) or tiny (100 + 16 sequences of 32 tokens);
  family   graph family of `gssm_jax.gssm.families` (default four_by_four);
  alpha_x  Dirichlet concentration of X's rows (default: the family's reference setting);
  alpha_z  Dirichlet concentration of every hidden node's rows (default: the family's reference setting).
`num_train` defaults to the largest size of the data-size sweep (`gssm_jax.data.data_size_grid(size)`),
so every run of the sweep trains on a prefix of the same training split (`config.data.num_sequences`).
Rerunning an interrupted command resumes from the finished shards.
"""

from __future__ import annotations

import ml_collections

from gssm_jax import data
from gssm_jax.configs.common import parse_arg
from gssm_jax.errors import UserError
from gssm_jax.gssm import families

SIZES = ("cpu", "paper", "tiny")
ARG_DEFAULTS = {"size": "cpu", "family": "four_by_four", "alpha_x": -1.0, "alpha_z": -1.0}  # -1: family default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The generation's configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, {"size": SIZES})
    family = families.get_family(options["family"])
    alphas = {}
    for name, reference in zip(("alpha_x", "alpha_z"), family.reference, strict=True):
        alphas[name] = reference if options[name] == ARG_DEFAULTS[name] else options[name]
        if not alphas[name] > 0:
            raise UserError(f"config argument {name}={alphas[name]}: must be a Dirichlet concentration > 0")
    paper, tiny = options["size"] == "paper", options["size"] == "tiny"

    config = ml_collections.ConfigDict()
    # Graph config in the `GraphSpec.from_config` format ({"nodes": [...]}); any graph may be given here.
    config.graph = family.config(alphas["alpha_x"], alphas["alpha_z"])
    # Kernel seed: kernels = sample_kernels(keys.kernel_key(seed), graph); train with the same config.seed.
    config.seed = 0
    # Seed of the sequences; shard i of a split comes from keys.shard_key(data_seed, split, i).
    config.data_seed = 1
    # Training sequences (>= 1); training uses a prefix of them (config.data.num_sequences).
    config.num_train = max(data.data_size_grid(options["size"]))
    # Held-out sequences (>= 0); evaluation reports excess loss over their exact entropy.
    config.num_test = 1024 if paper else 16 if tiny else 64
    # Tokens per sequence (>= 1); must equal config.data.length of the training runs.
    config.length = family.length if paper else 32 if tiny else 128
    # Sequences per shard file (>= 1), sampled on device in one batch; a multiple of the device count
    # spreads the sampling over all devices. Changing it changes the dataset.
    config.shard_size = 4096 if paper else 32 if tiny else 256
    return config
