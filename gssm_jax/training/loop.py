"""The resumable training loop: train on a `Batches` stream, evaluate, checkpoint, write the run files.

Every step trains on the batch of that step from the config's data source (`gssm_jax.data.batches`:
sampled on the fly from `fold_in(key(config.data.data_seed), s)`, or read from a dataset on disk),
so the data stream has no state of its own: a run resumed from a checkpoint at step s (after SIGTERM,
Ctrl-C, SIGKILL or a crash) ends with parameters bitwise identical to an uninterrupted run. The run
directory follows the contract in `gssm_jax.training.run_directory`. Before anything is compiled, the config
is checked (`gssm_jax.training.checks`) and compared with the one the run was trained with
(`gssm_jax.training.resume`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gssm_jax import data, files, keys, parallel
from gssm_jax.gssm.graph import GraphSpec
from gssm_jax.gssm.kernels import sample_kernels
from gssm_jax.learners import count_parameters
from gssm_jax.sampling.tables import sampling_tables
from gssm_jax.training import checks, evaluation, memory, resume, run_directory
from gssm_jax.training.checkpoints import Checkpoints
from gssm_jax.training.step import ConfigError, init_state, make_optimizer, make_train_step

# SIGTERM: what a preempting scheduler sends; SIGINT: Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """SIGTERM or SIGINT (Ctrl-C) arrived; a checkpoint was saved, and rerunning the same command resumes.

    Attributes:
      signal_number: the signal that stopped the run.
    """

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class _StopSignals:
    """Records SIGTERM and SIGINT instead of dying, so the loop can checkpoint first (main thread only)."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc_info):
        for number, previous in self.previous.items():
            signal.signal(number, previous)


def training_source(config: ml_collections.ConfigDict, graph: GraphSpec, mesh: jax.sharding.Mesh,
                    dataset: data.Dataset | None = None):
    """`(kernels, stream with .batch(step), held-out tokens, identity of the held-out set)` of config.data.source.

    "onfly": kernels from config.seed, fresh sequences every step, held-out set from config.eval.eval_seed.
    "file": `dataset` (the one at config.data.path, opened by `checks.check_config`): its kernels, a per-epoch
    shuffle (seed config.data.data_seed) of its first config.data.num_sequences training sequences (0: all),
    and the first config.eval.num_sequences sequences of its test split.
    """
    if config.data.source == "onfly":
        kernels = sample_kernels(keys.kernel_key(config.seed), graph)
        stream = data.OnTheFlyBatches(graph, sampling_tables(graph, kernels), config.data.batch_size,
                                          config.data.length, keys.data_key(config.data.data_seed), mesh)
        eval_tokens = evaluation.heldout_tokens(graph, kernels, config.eval.num_sequences, config.data.length,
                                                config.eval.eval_seed)
        identity = {"graph": config.graph.to_dict(), "seed": config.seed, "eval_seed": config.eval.eval_seed,
                    "num_sequences": config.eval.num_sequences, "length": config.data.length}
        return kernels, stream, eval_tokens, identity
    stream = data.FileBatches(dataset.train, config.data.batch_size, config.data.data_seed,
                                  config.data.num_sequences or len(dataset.train), parallel.batch_sharded(mesh))
    eval_tokens = jnp.asarray(dataset.test.take(np.arange(config.eval.num_sequences)))
    identity = {"dataset_test_sha256": [entry["sha256"] for entry in dataset.meta["shards"]["test"]],
                "num_sequences": config.eval.num_sequences}
    return jax.tree.map(jnp.asarray, dataset.kernels), stream, eval_tokens, identity


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming from `workdir/checkpoints` if present), evaluates, and returns the result.json dict.

    A finished run (its result.json exists) returns that result, unless config.train.num_steps is now larger:
    then it trains on from its last checkpoint to the new count.

    Raises:
      ConfigError: a config field the loop cannot run with, or that differs from the config the run in
        `workdir` was trained with (one line naming the fields and the fix); raised before anything compiles.
      DatasetError: config.data.path is not a finished dataset, or one generated for another run.
      FloatingPointError: the training loss or gradient norm became NaN/inf (names the step range).
      Preempted: SIGTERM or SIGINT arrived; a checkpoint was saved first.
    """
    mesh = parallel.data_parallel_mesh()
    graph, shape, dataset = checks.check_config(config, workdir, mesh)
    changes = resume.check_resume(config, workdir)
    num_steps, train_config = config.train.num_steps, config.train
    result_path = os.path.join(workdir, run_directory.RESULT_FILE)
    if os.path.exists(result_path):
        finished = run_directory.read_result(workdir)
        if num_steps <= finished["final_step"]:
            logging.info("%s exists: the run has finished; raise config.train.num_steps to train on", result_path)
            return finished
        logging.info("The run finished at step %d; training on to step %d", finished["final_step"], num_steps)
    if changes:
        logging.warning("Resuming with changed %s (config.train.allow_changes)",
                        ", ".join(f"{field}: {before!r} -> {after!r}" for field, (before, after) in changes.items()))
    optimizer, schedule = make_optimizer(config.optimizer, num_steps)
    graphdef, state = init_state(shape, config.model.init_seed, optimizer)
    state = jax.device_put(state, parallel.replicated(mesh))
    num_parameters = count_parameters(state["params"])
    train_step = make_train_step(graphdef, optimizer, schedule, mesh)
    try:  # before anything long: a step that cannot fit fails here, naming the fields to change
        memory.check_train_step(config, train_step, state, graph.vocab_size, mesh)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    logging.info("The config:\n%s", config)
    kernels, stream, eval_tokens, identity = training_source(config, graph, mesh, dataset)
    tokens_per_step = config.data.batch_size * config.data.length

    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    start_step = checkpoints.latest_step() or 0
    if start_step:
        try:
            state = checkpoints.restore(start_step, state)
        except (ValueError, KeyError, TypeError) as error:  # orbax: the saved arrays do not fit this model
            checkpoints.close()
            raise ConfigError(f"the checkpoint at step {start_step} in {workdir} does not fit this model "
                              f"({type(error).__name__}); pass a new --workdir") from None
        logging.info("Resumed from the checkpoint at step %d", start_step)
    # After the restore: a checkpoint that does not fit leaves the config it was trained with in place.
    files.write_json(os.path.join(workdir, run_directory.CONFIG_FILE), {**config.to_dict(), "workdir": workdir})
    if os.path.exists(result_path):
        os.remove(result_path)  # no longer finished: training on
    writer = run_directory.MetricsWriter(workdir, start_step, tensorboard=config.metrics.tensorboard)
    elapsed_offset = writer.last_record["elapsed_s"] if writer.last_record else 0.0

    optimal_losses = evaluation.cached_optimal_losses(workdir, graph, kernels, eval_tokens, identity)
    model_losses = evaluation.make_model_losses(graphdef, mesh, min(config.data.batch_size, config.eval.num_sequences))
    eval_steps, eval_curves = run_directory.load_per_position(workdir, start_step, config.data.length)
    last_eval = {key: value for key, value in (writer.last_record or {}).items() if key.startswith("eval/")} or None

    started = time.perf_counter()
    timer = {"step": start_step, "time": started}
    last_finite_step = start_step

    def evaluate(step: int) -> dict:
        summary, per_position = evaluation.summarize(model_losses(state["params"], eval_tokens), optimal_losses)
        while eval_steps and eval_steps[-1] >= step:  # a re-evaluation after a resume replaces, never duplicates
            eval_steps.pop()
            eval_curves.pop()
        eval_steps.append(step)
        eval_curves.append(per_position)
        run_directory.save_per_position(workdir, eval_steps, eval_curves, optimal_losses.mean(axis=0))
        return summary

    def flush(step: int, step_metrics: dict, eval_summary: dict | None) -> None:
        nonlocal last_finite_step, last_eval
        values = {key: float(value) for key, value in jax.device_get(step_metrics).items()}
        run_directory.check_finite(step, values, last_finite_step)
        last_finite_step = step
        if eval_summary is not None:
            last_eval = eval_summary
        if step % train_config.log_every and eval_summary is None and step != num_steps:
            return
        now = time.perf_counter()
        tokens_per_second = (step - timer["step"]) * tokens_per_step / max(now - timer["time"], 1e-9)
        timer.update(step=step, time=now)
        record = {"step": step, "elapsed_s": elapsed_offset + now - started, "tokens_seen": step * tokens_per_step,
                  **values, "train/tokens_per_second": tokens_per_second, **(eval_summary or {})}
        writer.write(record)
        excess = last_eval["eval/excess_loss_nats_per_token"] if last_eval else None
        logging.info("%s", run_directory.progress_line(step, num_steps, values["train/loss_nats_per_token"], excess,
                                                 tokens_per_second, (num_steps - step) * tokens_per_step
                                                 / max(tokens_per_second, 1e-9)))

    try:
        with _StopSignals() as stop:
            pending = None
            for step in range(start_step, num_steps):
                state, step_metrics = train_step(state, stream.batch(step))
                done = step + 1
                if pending is not None:  # step `done` is dispatched: fetching the previous metrics costs no device time
                    flush(*pending)
                pending = (done, step_metrics, None)
                if done % train_config.eval_every == 0 or done == num_steps:
                    pending = (done, step_metrics, evaluate(done))
                if done % train_config.checkpoint_every == 0 or done == num_steps or stop.received:
                    flush(*pending)
                    pending = None
                    checkpoints.save(done, state, config.to_dict())
                if stop.received:
                    name = signal.Signals(stop.received).name
                    raise Preempted(f"{name}: saved a checkpoint at step {done}; rerun the same command to resume",
                                    stop.received)
            if pending is not None:
                flush(*pending)
        if not eval_steps or eval_steps[-1] != num_steps or last_eval is None:
            last_eval = evaluate(num_steps)
    finally:
        checkpoints.close()
        writer.close()

    result = {"final_step": num_steps, **last_eval, "num_parameters": num_parameters,
              "tokens_seen": num_steps * tokens_per_step,
              "wall_time_s": elapsed_offset + time.perf_counter() - started}
    files.write_json(result_path, result)
    return result
