"""Experiment 1: does a transformer prefer easy-to-infer (small alpha_X) or easy-to-predict (small alpha_Z) latents?

Commands (after `pip install -e .`, from any directory):

  # The whole experiment on a 2-core CPU (about 15 minutes): calibrate, choose the learning rate, train
  # 3 graphs x 2 sides x 8 seeds, write runs/experiment1/report.md. Rerunning resumes.
  gssm-experiment1 --config=experiment1:size=cpu --workdir=runs/experiment1

  # A smoke run of every stage:
  gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/exp1_tiny

  # The answer on one GPU (H100/H200) in about 8 minutes: every graph, 8 seed pairs, the base transformer,
  # T=2048, the runs of each graph trained as one program:
  gssm-experiment1 --config=experiment1:size=gpu --workdir=runs/exp1_gpu

  # Longer sequences (T=256) and a larger model, still on a CPU (README: times and what it learns):
  gssm-experiment1 --config=experiment1:size=medium --workdir=runs/exp1_medium

  # Every learner (transformer, mamba, hawk, mingru, minlstm, lstm) at the transformer's parameter count, and
  # both matching measures side by side (the report says whether the answer depends on either):
  gssm-experiment1 --config=experiment1:size=cpu,learners=all,match=both --workdir=runs/exp1_all

  # Composable-llm's scales on GPUs/TPUs (T=2048/4096, two model sizes, 8 seeds), matched by gzip instead of entropy:
  gssm-experiment1 --config=experiment1:size=paper,match=gzip --workdir=runs/exp1_gzip

  # The same on Slurm, one array job (one GPU node per run); rerun the command to resume:
  gssm-experiment1 --config=experiment1:size=paper --workdir=/shared/exp1 \
      --launcher=slurm --slurm_partition=gpu --slurm_time_minutes=240 --slurm_gpus_per_node=8

  # One graph only, or one run of the sweep trained by hand (free alpha from the calibration cache):
  gssm-experiment1 --config=experiment1:graph=chain --workdir=runs/exp1_chain
  gssm-calibrate --config=experiment1:graph=four_by_four --workdir=runs/calib
  gssm-train --config=experiment1:graph=chain,side=small_alpha_z,free_alpha=0.05 \
      --workdir=runs/chain_small_alpha_z

The optional argument after `:` is a comma-separated list of `key=value`:
  graph       all (default: every family) or one of
              four_by_four, eight_by_four, chain (`gssm_jax.gssm.families`);
  side        both (default), small_alpha_x or small_alpha_z;
  match       entropy (default: exact entropy rate, nats/token), gzip (composable-llm's bytes/token) or both (each
              pair in its own runs/<measure>/ folder; runs with the same alphas under both are trained once);
  size        cpu (default), medium (T=256), gpu (one accelerator, <= 8 min), paper (composable-llm's T), or tiny
              (2 seeds, a tiny model, 20 steps, coarse calibration: a smoke run); `BUDGETS` and `MODELS` below;
  learners    transformer (default), all, or kinds joined by + (e.g. transformer+mamba), from
              `gssm_jax.learners.kinds.KINDS`; each gets the width matching the transformer's parameters;
  free_alpha  the calibrated alpha of the side's other node, for a single training run (float > 0; default:
              the family's reference alpha_Z, an uncalibrated placeholder the sweep replaces).
`graph` and `side` restrict the sweep (`config.experiment1`); the training fields (`config.graph`, `data`,
`model`, ...) describe the first run of the sweep, so `gssm-train` can train it directly; `config.calibration`
is the schema `gssm-calibrate` reads too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import ml_collections

from gssm_jax.configs import base
from gssm_jax.configs.common import calibration_config, parse_arg
from gssm_jax.difficulty.sides import SIDE_NAMES, SMALL_ALPHA, get_side
from gssm_jax.errors import UserError
from gssm_jax.experiment1.learners import TRANSFORMER, learner_models, parse_learners, resolved_model
from gssm_jax.gssm.families import FAMILIES
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.learners.kinds import KINDS

SIZES = ("tiny", "cpu", "medium", "gpu", "paper")
MATCHES = ("entropy", "gzip", "both")
ENSEMBLES = ("auto", "off")
ARG_DEFAULTS = {"graph": "all", "side": "both", "match": "entropy", "size": "cpu", "learners": TRANSFORMER,
                "free_alpha": float("nan")}
ARG_CHOICES = {"graph": ("all", *FAMILIES), "side": ("both", *SIDE_NAMES), "match": MATCHES, "size": SIZES}
# Calibration stopping tolerance |difficulty - target| of each seed's side, in the measure's unit (nats/token for
# entropy, composable-llm's bytes/token for gzip): about a tenth of the spread composable-llm saw across graph
# seeds; a pair's two sides then differ by at most twice that.
TOLERANCE = {"entropy": 0.007, "gzip": 0.003}
TINY_TOLERANCE = {"entropy": 0.07, "gzip": 0.05}
# Evaluations per training run (train.eval_every = ceil(num_steps / evals)): the learning curve's points; a smoke
# run needs only a few.
EVALS_PER_RUN = {"tiny": 4, "gpu": 25}
DEFAULT_EVALS_PER_RUN = 20

# The transformer of each model size, per experiment size (name -> width, depth, heads); every other learner
# gets the width matching its parameter count (gssm_jax.experiment1.learners). The README tabulates them.
MODELS = {
    "tiny": {"tiny": {"width": 16, "depth": 1, "heads": 2}},
    "cpu": {"small": {"width": 64, "depth": 2, "heads": 4}},
    "medium": {"medium": {"width": 64, "depth": 3, "heads": 4}},
    "gpu": {"base": {"width": 128, "depth": 4, "heads": 8}},
    "paper": {"small": {"width": 64, "depth": 2, "heads": 4}, "base": {"width": 128, "depth": 4, "heads": 8}},
}


class Budget(NamedTuple):
    """What one experiment size trains on: seeds, tokens per sequence, the optimizer's schedule, the eval set.

    seeds: graph seeds per side (seed pairs); >= 8 where the report's tests can reach p < 0.05 after Holm.
    length: tokens per sequence (T) of every graph; 0 keeps each family's composable-llm length (2048 or 4096).
    learning_rates: the grid of peak learning rates tried on `tuning_seeds` seeds of both sides; the one with the
      lowest mean validation loss trains every seed (a grid of one value skips the tuning runs).
    tuning_seeds: how many of the seeds (the first ones) the grid is tried on.
    checkpoint_every: steps between checkpoints (a run shorter than a minute needs only its last one).
    calibration_batch: sequences per seed of the calibration (composable-llm measured gzip on 1024 x T).
    ensemble: `config.experiment1.ensemble`; a smoke run trains each graph's runs as one program, since compiling
      dominates it (on 2 CPU cores, size=tiny from a cold compilation cache: 80 s one run per program, 51 s one
      program per graph).
    """

    seeds: int
    length: int
    batch_size: int
    num_steps: int
    learning_rates: tuple[float, ...]
    tuning_seeds: int
    warmup_steps: int
    checkpoint_every: int
    eval_sequences: int
    validation_sequences: int
    calibration_batch: int
    ensemble: str = "auto"


# cpu: 2 CPU cores in ~15 min (make run; its learning-rate grid spans 16x: with 2.5e-3, 5e-3 and 1e-2, chain
# chose the smallest and eight_by_four the largest); medium: ~50 min; gpu: one H200 in <= 8 min, sized from the
# targeted 12 M tokens/s aggregate of the ensemble step (issue 20) rather than a measurement: 500 steps x 64 x 2048 =
# 6.6e7 tokens per run, 48 runs plus 12 tuning runs; paper: composable-llm's lengths, on GPUs or a cluster.
BUDGETS = {
    "tiny": Budget(seeds=2, length=32, batch_size=8, num_steps=20, learning_rates=(3e-3,), tuning_seeds=0,
                   warmup_steps=2, checkpoint_every=20, eval_sequences=8, validation_sequences=8,
                   calibration_batch=4, ensemble="8"),
    "cpu": Budget(seeds=8, length=64, batch_size=8, num_steps=1200,
                  learning_rates=(1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2), tuning_seeds=1, warmup_steps=60,
                  checkpoint_every=1200, eval_sequences=64, validation_sequences=64, calibration_batch=32),
    "medium": Budget(seeds=8, length=256, batch_size=8, num_steps=1200,
                     learning_rates=(1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2), tuning_seeds=1, warmup_steps=60,
                     checkpoint_every=600, eval_sequences=64, validation_sequences=64, calibration_batch=16),
    "gpu": Budget(seeds=8, length=2048, batch_size=64, num_steps=500, learning_rates=(1e-3, 2e-3, 4e-3),
                  tuning_seeds=1, warmup_steps=50, checkpoint_every=100, eval_sequences=128,
                  validation_sequences=64, calibration_batch=256),
    "paper": Budget(seeds=8, length=0, batch_size=64, num_steps=2000, learning_rates=(5e-4, 1e-3, 2e-3),
                    tuning_seeds=1, warmup_steps=200, checkpoint_every=500, eval_sequences=256,
                    validation_sequences=128, calibration_batch=256),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The Experiment 1 configuration; `arg` as described in the module docstring."""
    options = parse_arg(arg, ARG_DEFAULTS, ARG_CHOICES)
    graphs = tuple(FAMILIES) if options["graph"] == "all" else (options["graph"],)
    sides = SIDE_NAMES if options["side"] == "both" else (options["side"],)
    match, size, free_alpha = options["match"], options["size"], options["free_alpha"]
    if not (math.isnan(free_alpha) or 0 < free_alpha < math.inf):
        raise UserError(f"config argument free_alpha={free_alpha}: must be a Dirichlet concentration > 0")
    learners = parse_learners(options["learners"], KINDS)
    budget = BUDGETS[size]

    # Training fields (graph, seed, data, model, optimizer, train, eval, ...) from the base config.
    config = base.get_config(f"size={'paper' if size in ('gpu', 'paper') else 'cpu'}")
    config.data.batch_size = budget.batch_size
    config.train.num_steps = budget.num_steps
    config.train.log_every = max(1, budget.num_steps // 20)
    # Evaluations per run: EVALS_PER_RUN, so the learning curves have points (a reference: overriding
    # train.num_steps rescales it). Each eval is a forward pass over eval.num_sequences and
    # eval.validation_sequences; the exact entropy of the held-out set is computed once per run.
    evals = EVALS_PER_RUN.get(size, DEFAULT_EVALS_PER_RUN)
    config.train.eval_every = (config.train.get_ref("num_steps") + evals - 1) // evals
    config.train.checkpoint_every = budget.checkpoint_every
    # Warmup-stable-decay with a cool-down branch ending at half the budget: the excess after a full cool-down
    # at B/2 and at B says whether doubling the tokens still helps (the report's convergence rule), which a
    # cosine schedule hides (its last fifth runs at <= 10% of the peak rate).
    config.optimizer.schedule = "wsd"
    config.train.cooldowns = (0.5,)
    # The single run's peak rate; the sweep trains every seed at the rate chosen from experiment1.learning_rates.
    config.optimizer.learning_rate = budget.learning_rates[len(budget.learning_rates) // 2]
    config.optimizer.warmup_steps = budget.warmup_steps
    # bfloat16 on accelerators (4x faster there than float32 at these shapes), float32 on CPUs.
    config.model.dtype = "auto" if size in ("gpu", "paper") else "float32"
    config.eval.num_sequences = budget.eval_sequences
    config.eval.validation_sequences = budget.validation_sequences

    config.experiment1 = ml_collections.ConfigDict()
    # Graph families compared (names in gssm_jax.gssm.families.FAMILIES).
    config.experiment1.graphs = graphs
    # Sides of the pair (gssm_jax.difficulty.sides): small_alpha_x (alpha_X = small, alpha_Z calibrated)
    # and/or small_alpha_z.
    config.experiment1.sides = sides
    # Graph seeds per cell: seed k draws the kernels from keys.kernel_key(k) (also used by calibration), and
    # the same k on both sides shares data and initialisation seeds (a paired design).
    config.experiment1.seeds = tuple(range(budget.seeds))
    # Peak learning rates tried (>= 1 value, each > 0): every (graph, model entry) trains tuning_seeds seeds of
    # every side at each rate, and the rate with the lowest mean validation loss (config.eval.validation_sequences,
    # never the held-out set) trains every seed; the tuning run at the chosen rate is the main run of its seed.
    config.experiment1.learning_rates = budget.learning_rates
    # How many of the seeds (the first ones) the learning rates are tried on; 0 with a single rate.
    config.experiment1.tuning_seeds = budget.tuning_seeds
    # Runs trained as one program (gssm_jax.training.loop.train_ensemble: the runs of a graph and model entry,
    # every side, seed and learning rate): "auto" (accelerators: as many as fit config.train.memory_budget_gib by
    # the compiled memory; CPU: one, where XLA's batched matmuls lose to separate runs), "off" (one run each) or
    # a largest number of runs per program, e.g. "8". Slurm launches one job per program.
    config.experiment1.ensemble = budget.ensemble
    if size == "gpu":
        # One H100/H200 holds an ensemble of the 16 runs of a graph (compiled on a GPU with cuDNN attention, about
        # 3 GiB per member; XLA's CPU compile of the same program, blockwise attention, says 10 GiB).
        config.train.memory_budget_gib = 60.0
    # Local processes training at once: "auto" (CPU: 2, which trained 1.25x the tokens/s of one process on 2 cores,
    # benchmarks/RESULTS.md "Sweep"; accelerators: 1, the device is shared by one process) or a number, e.g. "4".
    config.experiment1.workers = "auto"
    # Learners: entry name (run folder) -> {kind, size, width, depth, heads, transformer_width}; width None is
    # the width whose parameter count is nearest the transformer of that size (gssm_jax.experiment1.learners,
    # per graph vocabulary). Every other model field, the optimizer and the token budget are shared.
    config.experiment1.models = learner_models(MODELS[size], learners)
    # Tokens per sequence for each graph (training, evaluation and calibration): composable-llm's T at paper size.
    config.experiment1.lengths = {name: budget.length or FAMILIES[name].length for name in FAMILIES}

    # The report (gssm_jax.experiment1.report; the notebook reads the same fields; their defaults are
    # gssm_jax.experiment1.comparisons.Settings, kept equal by tests/experiment1/test_report.py). Losses in
    # nats/token. Every group always gets its answer; "learned" and "still improving" are caveats beside it.
    # The measured values the thresholds rest on: entropy rates 0.24 / 1.74 / 1.18 nats/token and unigram
    # model's excess 3.89 / 1.62 / 0.94 on eight_by_four / four_by_four / chain (README).
    config.report = ml_collections.ConfigDict()
    # Level of each two-sided paired comparison of the sides, applied after Holm's correction across graphs.
    config.report.significance_level = 0.05
    # Confidence level of the intervals: side means, the mean paired difference, the learning-curve bands.
    config.report.confidence = 0.95
    # "Learns faster" compares the training tokens until the excess loss first falls to this (nats/token), and a
    # side has "learned" when its mean final excess is at most this. 0.1 nats/token is 2.6% / 6.2% / 10.6% of
    # the unigram excess (G = 97.4% / 93.8% / 89.4% at the line), so one absolute line asks about the same share
    # of the learnable gap on every graph (20% of the entropy rate, the rule it replaces, was 1.2% of the gap on
    # eight_by_four and 20-25% elsewhere). On the GPU (197 M tokens) four_by_four's small-alpha_X side reached it
    # at 68 M tokens and ended at 0.047 (G 97%), below its n-gram baseline 0.092; the small-alpha_Z side ended
    # at 0.349 (G 78%), at its n-gram baseline 0.336: learned and not learned, as the data say.
    config.report.reach_excess = 0.1
    # "Learned" also needs this share of the learnable gap closed, G = 1 - excess / (unigram model's excess). With
    # reach_excess it binds only where the unigram excess is under 1 nat/token (chain: 0.094 instead of 0.1), so
    # that 0.1 nats/token never counts as learned on a graph with little to learn. Alone it would be too lax on
    # eight_by_four: 0.39 nats/token would pass, and the GPU run there ended at 0.23 (G 94%), 6x its n-gram
    # baseline 0.037; hence both conditions.
    config.report.learned_gap_share = 0.9
    # Still improving: after a full learning-rate cool-down at half the budget (a branch, config.train.cooldowns)
    # and at the whole budget, doubling the tokens cut the excess by at least this fraction. An excess that
    # falls as a power of the tokens, D^-b, gains 1 - 2^-b per doubling: the run that halves its excess with
    # 4x the tokens (b = 0.5: 1.88 -> 1.33 after the cool-downs, though its cosine curve fell only 3.4% over
    # its last fifth, 1.38 -> 1.33) gains 29%. At 10% (b = 0.15) halving the excess takes 6.6 more doublings,
    # about 100x the tokens: beyond every budget of this experiment, so below it the run has stopped improving
    # for the question asked here.
    config.report.convergence_min_gain = 0.1
    # ... and by more than this many standard errors of the final excess (over held-out sequences), so that
    # evaluation noise on an excess near 0 (chain ends at 0.02 nats/token at size=cpu) is not read as a gain.
    config.report.convergence_noise = 2.0
    # Runs without cool-down branches fall back to the slope of excess vs tokens over this final fraction of
    # training (the report says so; a decayed learning rate flattens that window by construction) ...
    config.report.convergence_window = 0.2
    # ... still falling when that slope is < 0 at this one-sided level ...
    config.report.convergence_level = 0.05
    # ... and the fitted drop across the window is at least this fraction of the fitted excess at its start.
    config.report.convergence_min_drop = 0.05

    # The calibration of every graph (the schema gssm-calibrate reads too). Its graphs and seeds are the sweep's
    # (references: overriding config.experiment1.graphs or .seeds changes them too); the measured batch is
    # (batch_size, the graph's experiment1.lengths entry) per seed (composable-llm measured gzip on (1024, T)).
    # match=both calibrates both measures (sharing the sampled batches) and trains each pair in its own
    # runs/<measure>/ folder; a run whose alphas are the same under both measures is trained once.
    tiny = size == "tiny"
    config.calibration = calibration_config(
        measures=("entropy", "gzip") if match == "both" else (match,), seeds=(),
        batch_size=budget.calibration_batch, length=0, tolerance=TINY_TOLERANCE if tiny else TOLERANCE,
        grid_points=3 if tiny else 5, small=SMALL_ALPHA)
    config.calibration.graphs = config.experiment1.get_ref("graphs")
    config.calibration.seeds = config.experiment1.get_ref("seeds")

    # The training fields describe the first run of the sweep.
    family = FAMILIES[graphs[0]]
    alphas = get_side(sides[0]).alphas(family.reference[1] if math.isnan(free_alpha) else free_alpha)
    config.graph = family.config(alphas["alpha_X"], alphas["alpha_Z"])
    config.data.length = config.experiment1.lengths[family.name]
    config.seed = config.experiment1.seeds[0]
    first_model = next(iter(config.experiment1.models.values()))
    config.model.update(resolved_model(first_model, config.model, GraphSpec.from_config(config.graph).vocab_size))
    return config
