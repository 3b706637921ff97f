"""The resumable training loop: M runs trained in lockstep (a solo run is M = 1), evaluated and checkpointed.

Every step of a run trains on the batch of that step of its data stream, a pure function of (data seed,
step), so the stream has no state of its own: a run resumed from a checkpoint (after SIGTERM, Ctrl-C,
SIGKILL or a crash) ends with parameters bitwise identical to an uninterrupted one. Steps run K per call
(`gssm_jax.training.schedule`); evaluations, checkpoints and cool-down branches fall on call boundaries.
Each member writes its own run directory (`gssm_jax.training.run_directory`) exactly as a solo run does.
Before anything is compiled each config is resolved and checked (`gssm_jax.training.run.resolve`) and
compared with the one its run was trained with (`gssm_jax.training.resume`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging

from gssm_jax import compilation_cache, locks, parallel
from gssm_jax.errors import shortened
from gssm_jax.training import members, memory, resume, run_directory
from gssm_jax.training.checkpoints import MemberCheckpoints
from gssm_jax.training.progress import Recorder
from gssm_jax.training.run import ConfigError, Run, resolve

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


def training_source(config: ml_collections.ConfigDict | Run,
                    mesh: jax.sharding.Mesh | None = None) -> members.TrainingSource:
    """A run's `(kernels, training stream with .batch(step), held-out tokens, identity)` (`members.TrainingSource`).

    The stream is the one the run trains on (for the n-gram floor); `mesh` (a ("data",) mesh, default every
    device) splits its rows.
    """
    run = config if isinstance(config, Run) else resolve(config, None)
    return members.training_source(run, mesh or parallel.data_parallel_mesh())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the run of `config` in `workdir` (resuming it if started), evaluates it, returns its result.json.

    A finished run (its result.json exists) returns that result, unless config.train.num_steps is now larger:
    then it trains on from its last checkpoint to the new count.

    Raises:
      ConfigError: a config field the loop cannot run with, or that differs from the config the run in
        `workdir` was trained with (one line naming the fields and the fix); raised before anything compiles.
      DatasetError: config.data.path is not a finished dataset, or one generated for another run.
      FloatingPointError: the training loss or gradient norm became NaN/inf (names the step range).
      Preempted: SIGTERM or SIGINT arrived; a checkpoint was saved first.
    """
    return train([resolve(config, workdir)])[0]


def train_ensemble(configs: Sequence[ml_collections.ConfigDict]) -> list[dict]:
    """Trains the runs of `configs` (each in its `config.workdir`) as one ensemble; their result.json dicts.

    The members must share `Run.program_key()` (a member that differs is refused in one line naming the
    field and both values); each writes its run directory exactly as `train_and_evaluate` would.
    """
    for index, config in enumerate(configs):
        if not config.get("workdir"):
            raise ConfigError(f"ensemble member {index} has no config.workdir; give each member its own")
    return train([resolve(config, config.workdir) for config in configs])


def check_members(runs: Sequence[Run]) -> None:
    """ConfigError (one line) if two members differ in their program or share a workdir."""
    workdirs = [os.path.abspath(run.workdir) for run in runs]
    if len(set(workdirs)) != len(workdirs):
        raise ConfigError("two ensemble members share a workdir; give each member its own config.workdir")
    reference = runs[0].program_key()
    for index, run in enumerate(runs[1:], start=1):
        for field, value in run.program_key().items():
            if value != reference[field]:
                raise ConfigError(f"ensemble member {index} ({run.workdir}) differs from member 0 in {field}: "
                                  f"{shortened(repr(value), 60)} vs {shortened(repr(reference[field]), 60)}; "
                                  "members may differ only in kernels, seeds and peak learning rate")


def _finished(run: Run) -> dict | None:
    """The result of a finished run that has nothing left to train, else None."""
    if not run_directory.is_finished(run.workdir):
        return None
    result = run_directory.read_result(run.workdir)
    if run.num_steps <= result["final_step"]:
        logging.info("%s has finished; raise config.train.num_steps to train on", run.workdir)
        return result
    logging.info("%s finished at step %d; training on to step %d", run.workdir, result["final_step"], run.num_steps)
    return None


def train(runs: Sequence[Run]) -> list[dict]:
    """Trains resolved runs as one ensemble (module docstring); each one's result.json dict, in order.

    Each run directory's lock (`gssm_jax.locks`) is held throughout: a second process training the same run
    is refused in one line naming this one.
    """
    check_members(runs)
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(locks.hold(run.workdir))
        return _train_or_read(runs)


def _train_or_read(runs: Sequence[Run]) -> list[dict]:
    for run in runs:
        changes = resume.check_resume(run)
        if changes:
            logging.warning("%s resumes with changed %s (config.train.allow_changes)", run.workdir, ", ".join(
                f"{field}: {before!r} -> {after!r}" for field, (before, after) in changes.items()))
    results = [_finished(run) for run in runs]
    todo = [run for run, result in zip(runs, results, strict=True) if result is None]
    if todo:
        trained = iter(_train(todo))
        results = [next(trained) if result is None else result for result in results]
    return results


def _start(runs: Sequence[Run]) -> tuple[members.Ensemble, MemberCheckpoints, object, int, list]:
    """The ensemble (its program compiled and checked against the memory budget), its checkpoints, the stacked
    state to start from and its step (the members' common checkpoint, or 0), and the members' `RunWriter`s."""
    compilation_cache.enable()
    ensemble = members.Ensemble(runs)
    # Before anything long: a program that cannot fit fails here, naming the fields to change.
    memory.check_program(runs[0], ensemble.program, ensemble.timeline.call_steps)
    checkpoints = MemberCheckpoints([os.path.join(run.workdir, run_directory.CHECKPOINTS_DIR) for run in runs],
                                    runs[0].cadence.keep_checkpoints)
    try:
        start, state = checkpoints.resume_step(), None
        if start:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=device),
                                ensemble.program.abstract_state())
            try:
                state = ensemble.stack(checkpoints.restore(start, like))
            except (ValueError, KeyError, TypeError) as error:  # orbax: the saved arrays do not fit this model
                raise ConfigError(f"the checkpoint at step {start} in {runs[0].workdir} does not fit this model "
                                  f"({type(error).__name__}); pass a new --workdir") from None
        # Written after the restore: a checkpoint that does not fit leaves the run's files as they were.
        writers = [run_directory.RunWriter(run.workdir, run.config, start, run.data.length, run.tensorboard)
                   for run in runs]
    except BaseException:
        checkpoints.close()
        raise
    return ensemble, checkpoints, ensemble.initial_state() if state is None else state, start, writers


def _branches_to_run(ensemble: members.Ensemble, writers: list, start: int) -> list:
    """The cool-down branches some member has not recorded yet, from `start` on."""
    branches = [branch for branch in ensemble.timeline.branches
                if not all(writer.has_cooldown(branch.fraction) for writer in writers)]
    for branch in [branch for branch in branches if branch.fork < start]:
        logging.warning("%s: the cool-down branch at %g forked at step %d, before this run's checkpoint at step %d; "
                        "it is skipped", ensemble.runs[0].workdir, branch.fraction, branch.fork, start)
    return [branch for branch in branches if branch.fork >= start]


def _train(runs: Sequence[Run]) -> list[dict]:
    ensemble, checkpoints, state, step, writers = _start(runs)
    timeline, configs = ensemble.timeline, [run.config for run in runs]
    branches = _branches_to_run(ensemble, writers, step)
    recorder = Recorder(runs, writers, timeline.num_steps - step + sum(b.end - b.fork for b in branches))
    try:
        with _StopSignals() as stop:
            while True:
                for branch in [branch for branch in branches if branch.fork == step]:
                    if checkpoints.saved_step != step:  # a kill during the branch restarts it from here
                        checkpoints.save(step, ensemble.member_states(state), configs)
                    _cool_down(ensemble, state, branch, writers, recorder, stop)
                if step == timeline.num_steps:
                    break
                for steps in timeline.calls(step, timeline.next_stop(step)):
                    state, metrics = ensemble.run(state, step, steps)
                    recorder.dispatched(step, metrics)  # records the previous call's metrics
                    step += steps
                    if stop.received:
                        break
                recorder.flush(_evaluate(ensemble, state, step, writers) if timeline.is_eval(step) else None)
                if timeline.is_checkpoint(step) or stop.received:
                    checkpoints.save(step, ensemble.member_states(state), configs)
                if stop.received:
                    name = signal.Signals(stop.received).name
                    raise Preempted(f"{name}: saved a checkpoint at step {step}; rerun the same command to resume",
                                    stop.received)
            if any(writer.last_eval is None or writer.eval_steps[-1:] != [step] for writer in writers):
                _evaluate(ensemble, state, step, writers)  # resumed after the last checkpoint, before the result
            return [_result(run, writer, ensemble.num_parameters(), recorder.elapsed(k))
                    for k, (run, writer) in enumerate(zip(runs, writers, strict=True))]
    finally:
        checkpoints.close()
        recorder.close()
        for writer in writers:
            writer.close()


def _evaluate(ensemble: members.Ensemble, state, step: int, writers) -> list[dict]:
    """Evaluates every member at `step`, records the per-position curves; the members' summaries."""
    evaluations = ensemble.evaluate(state)
    for writer, (summary, per_position), optimal in zip(writers, evaluations, ensemble.optimal_losses(), strict=True):
        writer.write_evaluation(step, summary, per_position, optimal.mean(axis=0))
    return [summary for summary, _ in evaluations]


def _cool_down(ensemble: members.Ensemble, state, branch, writers, recorder: Recorder, stop: _StopSignals) -> None:
    """Trains a copy of `state` along `branch` (its decay to 0), evaluates it, records it in cooldowns.json."""
    state = jax.tree.map(lambda leaf: leaf.copy(), state)  # the main run goes on from `state`
    step = branch.fork
    for steps in ensemble.timeline.calls(branch.fork, branch.end):
        state, metrics = ensemble.run(state, step, steps, branch)
        recorder.dispatched(step, metrics, branch=True)
        step += steps
        if stop.received:
            name = signal.Signals(stop.received).name
            raise Preempted(f"{name} during the cool-down branch at {branch.fraction:g}: rerun the same command to "
                            f"restart it from the checkpoint at step {branch.fork}", stop.received)
    recorder.flush()
    for run, writer, (summary, _) in zip(ensemble.runs, writers, ensemble.evaluate(state), strict=True):
        entry = run_directory.cooldown_entry(branch.end, branch.end * run.tokens_per_step, summary)
        writer.write_cooldown(branch.fraction, branch.fork, entry)


def _result(run: Run, writer: run_directory.RunWriter, num_parameters: int, elapsed: float) -> dict:
    result = {"final_step": run.num_steps, **writer.last_eval, "num_parameters": num_parameters,
              "tokens_seen": run.num_steps * run.tokens_per_step, "wall_time_s": elapsed,
              "learning_rate": run.optimizer.learning_rate}
    writer.write_result(result)
    return run_directory.read_result(run.workdir)
