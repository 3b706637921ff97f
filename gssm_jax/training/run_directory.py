"""The run directory: the one module that names a run's files, writes them and reads them back.

    config.json          the run's config (with its workdir), written at start, compared on resume
    metrics.jsonl        one JSON object per logged step (and every eval step), flushed line by line,
                         append-only; on resume the lines after the restored step are dropped first
    per_position.npz     eval losses per position: `steps` (evals,), `model_loss` (evals, length),
                         `optimal_loss` (length,), nats; rewritten atomically after each evaluation
    cooldowns.json       the evaluations of the finished cool-down branches (while the run trains on)
    result.json          written atomically at the very end; its presence means "finished"
    checkpoints/<step>/  orbax checkpoints (`gssm_jax.training.checkpoints`)
    tensorboard/         optional TensorBoard events (tensorboardX, the `tensorboard` extra)

`RunWriter` writes a run's files as it trains; `read_run` reads them (`RunFiles`) and `is_finished` says
whether `result.json` exists. An ensemble's members each write their own directory, exactly as a solo run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from gssm_jax import files
from gssm_jax.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PER_POSITION_FILE = "per_position.npz"
COOLDOWNS_FILE = "cooldowns.json"
RESULT_FILE = "result.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# The keys of each result.json["cooldowns"] entry (a branch's end, or the main run's).
COOLDOWN_KEYS = ("step", "tokens_seen", "eval/excess_loss_nats_per_token", "eval/excess_loss_standard_error",
                 "eval/loss_nats_per_token", "eval/validation_loss_nats_per_token")


class RunFiles(NamedTuple):
    """What a run directory holds.

    config: config.json (None before the run started); evals: the metrics records holding eval values;
    result: result.json or None (unfinished); per_position: per_position.npz's arrays or None.
    """

    config: dict | None
    evals: list[dict]
    result: dict | None
    per_position: dict[str, np.ndarray] | None


def _read_json(path: str) -> Any:
    with open(path) as file:
        return json.load(file)


def read_metrics(workdir: str) -> list[dict]:
    """All records of `workdir/metrics.jsonl` (an unterminated last line, left by a kill, is skipped)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.endswith("\n")]


def read_result(workdir: str) -> dict:
    """The `result.json` of a finished run."""
    return _read_json(os.path.join(workdir, RESULT_FILE))


def is_finished(workdir: str) -> bool:
    """Whether the run in `workdir` has finished (its `result.json` exists)."""
    return os.path.exists(os.path.join(workdir, RESULT_FILE))


def read_run(workdir: str) -> RunFiles:
    """The files of the run in `workdir` (`RunFiles`)."""
    config_path, per_position_path = os.path.join(workdir, CONFIG_FILE), os.path.join(workdir, PER_POSITION_FILE)
    per_position = None
    if os.path.exists(per_position_path):
        with np.load(per_position_path) as saved:
            per_position = {name: saved[name] for name in saved.files}
    return RunFiles(_read_json(config_path) if os.path.exists(config_path) else None,
                    [record for record in read_metrics(workdir) if any(key.startswith("eval/") for key in record)],
                    read_result(workdir) if is_finished(workdir) else None, per_position)


class Diverged(FloatingPointError):
    """A run's training metrics became NaN or infinite; `workdir` names the run (an ensemble member)."""

    def __init__(self, message: str, workdir: str):
        super().__init__(message)
        self.workdir = workdir


def check_finite(step: int, values: Mapping[str, float], last_finite_step: int, workdir: str = "") -> None:
    """Raises `Diverged` naming the step range (and the run) if any value is NaN or infinite."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        where = f" of {workdir}" if workdir else ""
        raise Diverged(
            f"non-finite training metrics {bad} at step {step}{where}; they were finite up to step "
            f"{last_finite_step}, so the divergence happened in steps {last_finite_step + 1}..{step}: lower "
            "config.optimizer.learning_rate or config.optimizer.clip_norm, or use config.model.dtype=float32", workdir)


def load_per_position(workdir: str, resume_step: int, length: int) -> tuple[list[int], list[np.ndarray]]:
    """Eval steps <= `resume_step` and their per-position model losses (nats) from `per_position.npz`."""
    path = os.path.join(workdir, PER_POSITION_FILE)
    if not os.path.exists(path):
        return [], []
    with np.load(path) as saved:
        keep = [i for i, step in enumerate(saved["steps"]) if step <= resume_step]
        if saved["model_loss"].shape[-1] != length:
            return [], []
        return [int(saved["steps"][i]) for i in keep], [saved["model_loss"][i] for i in keep]


def save_per_position(workdir: str, steps: list[int], model_loss: list[np.ndarray], optimal_loss: np.ndarray) -> None:
    """Atomically writes `per_position.npz` (module docstring)."""
    files.write_npz(os.path.join(workdir, PER_POSITION_FILE), steps=np.asarray(steps, np.int64),
                    model_loss=np.stack(model_loss).astype(np.float32),
                    optimal_loss=np.asarray(optimal_loss, np.float32))


def cooldown_entry(step: int, tokens_seen: int, summary: Mapping[str, float]) -> dict:
    """One `result.json["cooldowns"]` entry: `COOLDOWN_KEYS` from an evaluation at `step`."""
    return {"step": step, "tokens_seen": tokens_seen, **{key: summary[key] for key in COOLDOWN_KEYS[2:]}}


class RunWriter:
    """Writes one run's files as it trains, resuming at `resume_step` (0: a fresh run).

    Starting, it writes config.json, drops whatever the files hold after `resume_step` (metrics records,
    per-position evals, branches forked later) and removes result.json (a finished run training on).
    """

    def __init__(self, workdir: str, config: dict, resume_step: int, length: int, tensorboard: bool = False):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        files.write_json(os.path.join(workdir, CONFIG_FILE), config)
        if is_finished(workdir):
            os.remove(os.path.join(workdir, RESULT_FILE))
        path = os.path.join(workdir, METRICS_FILE)
        kept = [record for record in read_metrics(workdir) if record["step"] <= resume_step]
        self.last_record = kept[-1] if kept else None
        evals = [record for record in kept if any(key.startswith("eval/") for key in record)]
        # The eval values of the last evaluation (after a resume too).
        self.last_eval = {key: value for key, value in evals[-1].items() if key.startswith("eval/")} if evals else None
        files.write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
        self.file = open(path, "a")  # noqa: SIM115 -- closed in close()
        self.eval_steps, self.eval_curves = load_per_position(workdir, resume_step, length)
        self.cooldowns = [entry for entry in self.read_cooldowns() if entry["fork"] <= resume_step]
        self.tensorboard = None
        if tensorboard:
            try:
                import tensorboardX
            except ImportError:
                raise UserError("config.metrics.tensorboard=True needs tensorboardX: pip install "
                                "'gssm_jax[tensorboard]'") from None
            self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, record: Mapping[str, Any]) -> None:
        """Appends `record` (an int "step" and JSON-able scalars) to metrics.jsonl and flushes it to disk."""
        record = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in record.items()}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.last_record = record
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()

    def write_evaluation(self, step: int, summary: dict, per_position: np.ndarray, optimal_loss: np.ndarray) -> None:
        """Records an evaluation at `step`: its summary (the metrics record of `step` holds it too) and the
        model's mean loss per position (length,), rewriting per_position.npz."""
        self.last_eval = dict(summary)
        while self.eval_steps and self.eval_steps[-1] >= step:  # a re-evaluation replaces, never duplicates
            self.eval_steps.pop()
            self.eval_curves.pop()
        self.eval_steps.append(step)
        self.eval_curves.append(per_position)
        save_per_position(self.workdir, self.eval_steps, self.eval_curves, optimal_loss)

    def read_cooldowns(self) -> list[dict]:
        path = os.path.join(self.workdir, COOLDOWNS_FILE)
        return _read_json(path) if os.path.exists(path) else []

    def write_cooldown(self, fraction: float, fork: int, entry: dict) -> None:
        """Records the evaluation `entry` (`cooldown_entry`) of the branch at `fraction` forked after `fork`."""
        self.cooldowns = [c for c in self.cooldowns if c["fraction"] != fraction] + [
            {"fraction": fraction, "fork": fork, **entry}]
        files.write_json(os.path.join(self.workdir, COOLDOWNS_FILE), self.cooldowns)

    def has_cooldown(self, fraction: float) -> bool:
        return any(entry["fraction"] == fraction for entry in self.cooldowns)

    def write_result(self, result: dict) -> None:
        """Writes result.json, its "cooldowns" being the branches' entries and `result`'s own end, by step."""
        end = cooldown_entry(result["final_step"], result["tokens_seen"], result)
        branches = [{key: entry[key] for key in COOLDOWN_KEYS} for entry in self.cooldowns]
        files.write_json(os.path.join(self.workdir, RESULT_FILE),
                         {**result, "cooldowns": sorted([*branches, end], key=lambda entry: entry["step"])})

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
