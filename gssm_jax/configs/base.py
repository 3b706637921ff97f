"""Defaults of a training run on the fly: composable-llm's 4x4-state / 32-token graph (size=tiny: 2 hidden x 2
states, 8 tokens), small alpha_X side.

Commands (after `pip install -e .`, from any directory):

  gssm-train --config=base --workdir=runs/train
  gssm-train --config=base:size=paper --workdir=runs/paper
  gssm-train --config=base:alpha_x=0.05,alpha_z=0.001 \
      --config.train.num_steps=2000 --config.model.width=128 --workdir=runs/small_alpha_z

The optional argument after `:` is a comma-separated list of `key=value`:
  size     cpu (default; about 2 minutes on 2 CPU cores), paper (composable-llm's T=2048, bigger model) or
           tiny (2 hidden nodes x 2 states, 8 tokens, T=32, 40 steps: seconds; the graph and length of
           data:size=tiny, so a dataset of `gssm-generate-data --config=data:size=tiny` trains here);
  alpha_x  Dirichlet concentration of X's emission rows (float > 0; default 1e-3);
  alpha_z  Dirichlet concentration of every hidden node's rows (float > 0; default 0.125).
Rerunning the same command resumes from the latest checkpoint in the workdir (a finished run trains on
when train.num_steps is raised); a change to a field that changes the computation is refused unless
train.allow_changes names it.
"""

from __future__ import annotations

import ml_collections

from gssm_jax.configs.common import SIZES, parse_arg
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import experiment1_graph_config

ARG_DEFAULTS = {"size": "cpu", "alpha_x": 1e-3, "alpha_z": 0.125}
ARG_CHOICES = {"size": SIZES}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The run's configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, ARG_CHOICES)
    for name in ("alpha_x", "alpha_z"):
        if not options[name] > 0:
            raise UserError(f"config argument {name}={options[name]}: must be a Dirichlet concentration > 0")
    paper, tiny = options["size"] == "paper", options["size"] == "tiny"

    config = ml_collections.ConfigDict()
    # Graph config in the `GraphSpec.from_config` format ({"nodes": [...]}); default: 4 hidden nodes x 4
    # states, 32 tokens, X reads all hidden nodes, each hidden node reads its previous value and X[t-1].
    num_hidden, hidden_states, vocab_size = (2, 2, 8) if tiny else (4, 4, 32)
    config.graph = experiment1_graph_config(num_hidden, hidden_states, vocab_size, alpha_x=options["alpha_x"],
                                            alpha_z=options["alpha_z"])
    # Seed of the graph's kernels: kernels = sample_kernels(jax.random.key(seed), graph).
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # Global batch size, sequences per step; must be divisible by the number of devices.
    config.data.batch_size = 256 if paper else 16 if tiny else 32
    # Tokens per sequence (T).
    config.data.length = 2048 if paper else 32 if tiny else 128
    # Seed of the training stream; step s trains on sequences sampled from fold_in(key(data_seed), s)
    # (source "onfly"), or on the rows of step s of the per-epoch shuffle seeded by data_seed (source "file").
    config.data.data_seed = 1
    # "onfly": fresh sequences every step; "file": a dataset written by gssm-generate-data.
    config.data.source = "onfly"
    # Where sequences start: "zeros" (every previous value 0 before the first token, composable-llm's) or
    # "stationary" (the chain first runs data.burn_in unobserved steps; gssm_jax.gssm.initial_state).
    config.data.initial_state = "zeros"
    # Unobserved steps before the first token under initial_state "stationary" (>= 0; 256 mixes the Experiment 1
    # graphs to < 1e-4 total variation except where both alphas are ~1e-3: gssm_jax.gssm.initial_state).
    config.data.burn_in = 256
    # Dataset directory (source "file"); its graph, kernel seed (config.seed) and length must match this config.
    config.data.path = ml_collections.config_dict.placeholder(str)
    # Training sequences used (source "file"): the first num_sequences of the train split; 0 = all of them.
    config.data.num_sequences = 0
    # Recompute the dataset's sha256 checksums at start (source "file"); False skips reading it all once.
    config.data.verify = True

    config.model = ml_collections.ConfigDict()
    # Learner: transformer, mamba, hawk, mingru, minlstm or lstm (gssm_jax.learners.registry.KINDS). Each
    # kind reads the model fields it uses (width, depth, dtype, init_scale; heads and mlp_ratio where it
    # has them) and keeps its own defaults for the rest (e.g. each recurrent kind's expansion).
    config.model.kind = "transformer"
    # Residual stream width d_model; divisible by heads, with an even head size.
    config.model.width = 256 if paper else 32 if tiny else 64
    # Number of transformer blocks.
    config.model.depth = 6 if paper else 1 if tiny else 2
    # Number of attention heads.
    config.model.heads = 8 if paper else 2 if tiny else 4
    # Gated-MLP hidden size as a multiple of width.
    config.model.mlp_ratio = 4.0
    # Computation dtype: float32, bfloat16 or auto (bfloat16 on an accelerator, float32 on a CPU); parameters and
    # optimizer state stay float32.
    config.model.dtype = "float32"
    # Causal attention: auto (fastest available here), xla (reference, O(T^2) memory), blockwise (O(T x block)
    # memory, any backend) or cudnn (NVIDIA GPUs, bfloat16); gssm_jax.learners.attention.
    config.model.attention = "auto"
    # Recompute each block's activations in the backward pass (True: stores only block inputs, for one more
    # forward pass; on CPU at T=2048 it saved 8% of the step's memory for 27% more time: benchmarks/RESULTS.md).
    config.model.remat = False
    # Multiplier on the init standard deviation of the weight matrices (> 0; 1.0 = fan-in scaling).
    config.model.init_scale = 1.0
    # Seed of the model's initial parameters.
    config.model.init_seed = 0
    # Recurrent kinds: how linear recurrences run in training: auto (the fastest measured on the
    # backend), associative, sequential or chunked; the same numbers up to float rounding.
    config.model.scan = "auto"
    # Recurrent kinds: the mixer's hidden size as a multiple of width (> 0); None keeps the kind's
    # default (mamba 2, hawk 4/3, mingru and minlstm 3, lstm 1).
    config.model.expansion = ml_collections.config_dict.placeholder(float)
    # Mamba: states per channel N (>= 1); None keeps the paper's 16.
    config.model.state_size = ml_collections.config_dict.placeholder(int)

    config.optimizer = ml_collections.ConfigDict()
    # Peak learning rate of AdamW.
    config.optimizer.learning_rate = 1e-3 if paper else 3e-3 if tiny else 1e-2
    # Steps of linear warmup from 0 to learning_rate (>= 0).
    config.optimizer.warmup_steps = 200 if paper else 5 if tiny else 20
    # After warmup: "cosine" (decay to 0 at train.num_steps), "constant", or "wsd" (warmup-stable-decay: the
    # peak, then a linear decay to 0 over the last optimizer.decay_fraction of the steps).
    config.optimizer.schedule = "cosine"
    # wsd, and the cool-down branches of train.cooldowns: the fraction of the steps that decays to 0, in (0, 1].
    config.optimizer.decay_fraction = 0.2
    # Decoupled weight decay of AdamW, on weight matrices only (not norm scales).
    config.optimizer.weight_decay = 0.01
    # Gradients are rescaled to this global L2 norm when larger (> 0).
    config.optimizer.clip_norm = 1.0
    # Adam's exponential decay rates of the first and second moments, in [0, 1).
    config.optimizer.beta1 = 0.9
    config.optimizer.beta2 = 0.99

    config.train = ml_collections.ConfigDict()
    # Number of optimizer steps; tokens seen = num_steps * batch_size * length.
    config.train.num_steps = 20_000 if paper else 40 if tiny else 400
    # Write a metrics.jsonl line and a progress log line every this many steps.
    config.train.log_every = 100 if paper else 10 if tiny else 20
    # Evaluate on the held-out set every this many steps (and at the last step).
    config.train.eval_every = 1000 if paper else 20 if tiny else 100
    # Save a checkpoint every this many steps (and at the last step, and on SIGTERM).
    config.train.checkpoint_every = 1000 if paper else 10 if tiny else 100
    # Number of checkpoints kept on disk (>= 1).
    config.train.keep_checkpoints = 2
    # Train steps per dispatch (>= 1): one compiled program runs this many (lax.scan), sampling each step's
    # batch inside. The calls also stop at every evaluation, checkpoint and cool-down fork, so the steps per call
    # are gcd(steps_per_call, eval_every, checkpoint_every) (gssm_jax.training.schedule). 20 divides the eval and
    # checkpoint intervals of the shipped cpu, medium and paper sizes, amortises the host's work per call (dispatch,
    # metric fetch, records: about a millisecond) over 20 device steps, and keeps Ctrl-C and the progress bar
    # within 20 steps; the compile time of the scanned program does not grow with it.
    config.train.steps_per_call = 20
    # Cool-down branches (wsd or constant schedules): for each fraction f, a branch forked from the run at step
    # round(f * num_steps * (1 - optimizer.decay_fraction)) that decays linearly to 0 at round(f * num_steps) on
    # the same data and is evaluated there (result.json "cooldowns"). () = none.
    config.train.cooldowns = ()
    # Memory budget of the train step per device, GiB (XLA's compile-time estimate, checked at start; 0 = no
    # check). 40 = half of an 80 GB accelerator.
    config.train.memory_budget_gib = 40.0
    # Resuming a run whose saved config differs in a field that changes the computation is refused; this
    # comma-separated list of dotted fields (e.g. "optimizer.learning_rate,train.num_steps") lets those changes
    # through. Logging, eval and checkpoint frequencies and a larger num_steps never need it
    # (gssm_jax.training.resume).
    config.train.allow_changes = ""

    config.eval = ml_collections.ConfigDict()
    # Held-out sequences (fixed for the run), of data.length tokens; the excess-loss standard error
    # is over these sequences.
    config.eval.num_sequences = 256 if paper else 16 if tiny else 64
    # Validation sequences of the training stream's distribution that no step trains on, scored at every eval
    # (eval/validation_loss_nats_per_token; what a learning-rate choice reads, never the held-out set). On the
    # fly: sampled from keys.validation_key(data.data_seed); from a file: the last ones of the train split.
    config.eval.validation_sequences = 256 if paper else 8 if tiny else 64
    # Seed of the held-out set, independent of the training stream.
    config.eval.eval_seed = 12345

    config.distributed = ml_collections.ConfigDict()
    # Call jax.distributed.initialize() before anything else (multi-host jobs: TPU pods, Slurm GPU nodes).
    config.distributed.initialize = False

    config.metrics = ml_collections.ConfigDict()
    # Also write TensorBoard event files to workdir/tensorboard (needs `pip install gssm_jax[tensorboard]`).
    config.metrics.tensorboard = False

    # Run directory; the --workdir flag overrides it (one of the two must be set).
    config.workdir = ml_collections.config_dict.placeholder(str)
    return config
