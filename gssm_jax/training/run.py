"""A run resolved once: the typed description that the loop, the evaluation, the memory check and resume take.

`resolve(config, workdir)` reads a run's `ml_collections` config in one place and refuses, with one line
naming the field and the fix, everything a user can get wrong that would otherwise surface later from
inside JAX: a workdir that is a file or not writable, sizes < 1, a batch or eval set that does not split
over the devices, a model shape its kind cannot build, optimizer values no optimizer accepts, cool-down
branches that fork before the warmup ends, an unknown data source, and a dataset that is missing, corrupt
or generated for another graph, length or kernel seed (opened once, here). Nothing is compiled.

`Run.program_key()` is what the members of one ensemble (`gssm_jax.training.loop.train_ensemble`) must
share: the graph's structure without its alphas, the model shape, the data shapes, the budget, the schedule's
shape, the eval and validation shapes and the cadence (they train in lockstep and checkpoint together).
Members may differ in kernels (alphas, kernel seed), data seed, init seed, eval seed and peak learning rate.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from gssm_jax import data, parallel
from gssm_jax.errors import UserError
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.initial_state import burn_in_steps
from gssm_jax.learners import registry, transformer

SOURCES = ("onfly", "file")
SCHEDULES = ("cosine", "constant", "wsd")
# Fields that count something and must be >= 1.
POSITIVE_FIELDS = ("data.batch_size", "data.length", "eval.num_sequences", "eval.validation_sequences",
                   "train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
                   "train.keep_checkpoints", "train.steps_per_call")


class ConfigError(UserError):
    """A config the training loop cannot run; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where the training tokens come from: "onfly" (sampled from the kernels) or "file" (a dataset).

    num_sequences: (file) training sequences used, the first ones of the train split; the last
      `EvalSet.validation_sequences` of the split are the validation set and never trained on.
    dataset: (file) the dataset at `path`, opened and checked once by `resolve`.
    """

    source: str
    data_seed: int
    batch_size: int
    length: int
    burn_in: int = 0  # unobserved steps before the first token: 0 ("zeros"), config.data.burn_in ("stationary")
    path: str | None = None
    num_sequences: int = 0
    dataset: data.Dataset | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """The held-out set (`num_sequences` from `eval_seed`) and the validation split of the training stream."""

    eval_seed: int
    num_sequences: int
    validation_sequences: int


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """AdamW after global-norm clipping; the field names are those of `config.optimizer`.

    learning_rate: the peak rate; schedule: cosine, constant or wsd (warmup, stable, decay to 0 over the
    last `decay_fraction` of the steps).
    """

    learning_rate: float
    schedule: str
    warmup_steps: int
    decay_fraction: float
    weight_decay: float
    clip_norm: float
    beta1: float
    beta2: float


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Steps between metrics records, evaluations and checkpoints; checkpoints kept; steps per dispatch."""

    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    steps_per_call: int


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run, resolved and validated (`resolve`).

    kernel_seed: kernels = sample_kernels(keys.kernel_key(kernel_seed), graph) (source "onfly").
    shape: the learner's config dataclass (`registry.model_config`).
    cooldowns: fractions f of the budget; each gets a cool-down branch ending at round(f * num_steps).
    config: the config as a JSON-able dict (with the workdir), written to config.json and compared on resume.
    """

    workdir: str | None
    graph: GraphSpec
    kernel_seed: int
    shape: Any
    init_seed: int
    data: DataSource
    eval: EvalSet
    optimizer: Optimizer
    num_steps: int
    cooldowns: tuple[float, ...]
    cadence: Cadence
    memory_budget_gib: float
    tensorboard: bool
    config: dict = dataclasses.field(compare=False, repr=False)

    @property
    def tokens_per_step(self) -> int:
        return self.data.batch_size * self.data.length

    def program_key(self) -> dict[str, Any]:
        """`{config field: value}` of everything the members of one ensemble must share."""
        structure = tuple((node.name, node.states, node.parents, node.mode, node.kernel)
                          + ((node.alpha,) if node.mode == "context" else ()) for node in self.graph.nodes)
        model = {f"model.{name}": value for name, value in dataclasses.asdict(self.shape).items()}
        return {"graph (structure)": structure, **model, "data.source": self.data.source,
                "data.batch_size": self.data.batch_size, "data.length": self.data.length,
                "data.burn_in": self.data.burn_in,
                "train.num_steps": self.num_steps, "train.cooldowns": self.cooldowns,
                **{f"optimizer.{name}": value for name, value in dataclasses.asdict(self.optimizer).items()
                   if name != "learning_rate"},
                "eval.num_sequences": self.eval.num_sequences,
                "eval.validation_sequences": self.eval.validation_sequences,
                **{f"train.{name}": value for name, value in dataclasses.asdict(self.cadence).items()}}


def check_workdir(workdir: str) -> None:
    """ConfigError if `workdir` is a file, is not writable, or could not be created (its nearest existing parent
    is a file or not writable). Nothing is created: a config refused later leaves no empty directory behind."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a directory; pass a directory path")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"--workdir={workdir} cannot be created: {existing} is a file; pass another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == os.path.abspath(workdir) else f"cannot be created in {existing}"
        raise ConfigError(f"--workdir={workdir} {verb}; pass a directory you can write to")


def compute_dtype(dtype: str) -> str:
    """`config.model.dtype` resolved: "auto" is bfloat16 on an accelerator (float32 parameters, optimizer state and
    loss stay), float32 on a CPU, where bfloat16 matmuls are emulated and slower."""
    if dtype != "auto":
        return dtype
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _field(config: ml_collections.ConfigDict, dotted: str) -> Any:
    section, name = dotted.split(".")
    return config[section][name]


def _check_counts(config: ml_collections.ConfigDict) -> None:
    for dotted in POSITIVE_FIELDS:
        value = _field(config, dotted)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.{dotted}={value!r} must be an integer >= 1")
    if config.data.num_sequences < 0:
        raise ConfigError(f"config.data.num_sequences={config.data.num_sequences} must be >= 0 (0: all of them)")


def _optimizer(config: ml_collections.ConfigDict) -> Optimizer:
    fields = config.optimizer
    optimizer = Optimizer(float(fields.learning_rate), fields.schedule, fields.warmup_steps,
                          float(fields.get("decay_fraction", 0.2)), float(fields.weight_decay),
                          float(fields.clip_norm), float(fields.beta1), float(fields.beta2))
    num_steps = config.train.num_steps
    if optimizer.schedule not in SCHEDULES:
        raise ConfigError(f"config.optimizer.schedule={optimizer.schedule!r}; valid schedules are "
                          f"{', '.join(SCHEDULES)}")
    if not 0 <= optimizer.warmup_steps < num_steps:
        raise ConfigError(f"config.optimizer.warmup_steps={optimizer.warmup_steps} must be in [0, "
                          f"config.train.num_steps={num_steps})")
    for name, low, high in (("learning_rate", 0, None), ("clip_norm", 0, None), ("decay_fraction", 0, 1)):
        value = getattr(optimizer, name)
        if not (value > low and (high is None or value <= high)):
            bounds = f"in ({low}, {high}]" if high is not None else f"> {low}"
            raise ConfigError(f"config.optimizer.{name}={value} must be {bounds}")
    if not optimizer.weight_decay >= 0:
        raise ConfigError(f"config.optimizer.weight_decay={optimizer.weight_decay} must be >= 0")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(optimizer, name) < 1:
            raise ConfigError(f"config.optimizer.{name}={getattr(optimizer, name)} must be in [0, 1)")
    if optimizer.schedule == "wsd" and round(num_steps * (1 - optimizer.decay_fraction)) < optimizer.warmup_steps:
        raise ConfigError(f"config.optimizer.decay_fraction={optimizer.decay_fraction:g} starts the decay at step "
                          f"{round(num_steps * (1 - optimizer.decay_fraction))}, before config.optimizer.warmup_steps="
                          f"{optimizer.warmup_steps} ends; lower one of them")
    return optimizer


def _cooldowns(config: ml_collections.ConfigDict, optimizer: Optimizer) -> tuple[float, ...]:
    """The validated `config.train.cooldowns` (see `gssm_jax.training.schedule.branches`)."""
    fractions = tuple(float(f) for f in config.train.get("cooldowns", ()) or ())
    num_steps, decay = config.train.num_steps, optimizer.decay_fraction
    if fractions and optimizer.schedule == "cosine":
        raise ConfigError("config.train.cooldowns needs config.optimizer.schedule=wsd or constant (a cosine run has "
                          "no stable phase to fork from)")
    for fraction in fractions:
        fork, end = round(fraction * num_steps * (1 - decay)), round(fraction * num_steps)
        if not 0 < fraction < 1:
            raise ConfigError(f"config.train.cooldowns={fractions}: each fraction must be in (0, 1)")
        if fork < optimizer.warmup_steps:
            raise ConfigError(f"config.train.cooldowns: the branch at {fraction:g} forks at step {fork}, before "
                              f"config.optimizer.warmup_steps={optimizer.warmup_steps} ends; raise the fraction or "
                              "lower the warmup")
        if end <= fork:
            raise ConfigError(f"config.train.cooldowns: the branch at {fraction:g} has no decay steps ({fork} -> "
                              f"{end}); raise it, config.train.num_steps or config.optimizer.decay_fraction")
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"config.train.cooldowns={fractions} repeats a fraction; give each once")
    return tuple(sorted(fractions))


def _data_source(config: ml_collections.ConfigDict, validation: int) -> DataSource:
    fields = config.data
    if fields.source not in SOURCES:
        raise ConfigError(f"config.data.source={fields.source!r}; valid sources are {', '.join(SOURCES)}")
    if fields.source == "onfly":
        return DataSource("onfly", fields.data_seed, fields.batch_size, fields.length,
                          burn_in_steps(fields.initial_state, fields.burn_in))
    if fields.initial_state != "zeros":
        raise ConfigError(f"config.data.initial_state={fields.initial_state!r} needs config.data.source='onfly' "
                          "(datasets are written from the zero state)")
    if not fields.path:
        raise ConfigError("config.data.source='file' needs config.data.path=DIR, a dataset written by "
                          "gssm-generate-data")
    dataset = data.load_dataset(fields.path, verify=fields.verify)
    data.check_compatible(dataset, config.graph, fields.length, seed=config.seed)
    if config.eval.num_sequences > len(dataset.test):
        raise ConfigError(f"config.eval.num_sequences={config.eval.num_sequences} exceeds the {len(dataset.test)} "
                          f"test sequences of {fields.path}; lower it or generate a larger test split")
    available = len(dataset.train) - validation
    if available < 1 or fields.num_sequences > available:
        raise ConfigError(f"config.data.num_sequences={fields.num_sequences}: {fields.path} has {len(dataset.train)} "
                          f"training sequences, the last config.eval.validation_sequences={validation} of which "
                          "validate; lower one of them or generate a larger train split")
    return DataSource("file", fields.data_seed, fields.batch_size, fields.length, path=fields.path,
                      num_sequences=fields.num_sequences or available, dataset=dataset)


def resolve(config: ml_collections.ConfigDict, workdir: str | None, mesh: jax.sharding.Mesh | None = None) -> Run:
    """The run of `config` in `workdir` (its checks skipped when None), every check of the module docstring done.

    mesh: the devices the batch and eval sets must split over (default: all, `parallel.data_parallel_mesh`).

    Raises:
      ConfigError: (a `UserError`) one line naming the config field, flag or file, and the fix.
      DatasetError: config.data.path is not a finished dataset, or one generated for another run.
    """
    if workdir is not None:
        check_workdir(workdir)
    _check_counts(config)
    mesh = parallel.data_parallel_mesh() if mesh is None else mesh
    try:
        graph = GraphSpec.from_config(config.graph)
        if config.data.initial_state != "zeros" and any(node.mode == "context" for node in graph.nodes):
            raise ConfigError(f"config.data.initial_state={config.data.initial_state!r}: the exact loss after a "
                              "burn-in is not computed for graphs with context nodes; use 'zeros'")
        shape = registry.model_config(config.model.kind, graph.vocab_size,
                                      {**config.model, "dtype": compute_dtype(config.model.dtype)})
        if isinstance(shape, transformer.TransformerConfig):
            transformer.check_attention(shape, config.data.length)
        for field in ("config.data.batch_size", "config.eval.num_sequences", "config.eval.validation_sequences"):
            parallel.check_batch_divisible(_field(config, field.removeprefix("config.")), mesh, field=field)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    optimizer = _optimizer(config)
    cooldowns = _cooldowns(config, optimizer)
    evaluation = EvalSet(config.eval.eval_seed, config.eval.num_sequences, config.eval.validation_sequences)
    source = _data_source(config, evaluation.validation_sequences)
    train = config.train
    cadence = Cadence(train.log_every, train.eval_every, train.checkpoint_every, train.keep_checkpoints,
                      train.steps_per_call)
    recorded = {**json.loads(config.to_json()), "workdir": workdir}
    return Run(workdir, graph, config.seed, shape, config.model.init_seed, source, evaluation, optimizer,
               train.num_steps, cooldowns, cadence, float(train.memory_budget_gib),
               bool(config.metrics.tensorboard), recorded)
