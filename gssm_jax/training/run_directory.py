"""What a run writes to its directory besides checkpoints (the run-directory contract).

* `config.json`: the resolved config, written at start.
* `metrics.jsonl`: one JSON object per logged step, flushed line by line, append-only; on resume the
  lines after the restored step are dropped first, so no step is ever duplicated.
* `per_position.npz`: per-position eval losses (`steps`, `model_loss`, `optimal_loss`), rewritten
  atomically after each evaluation.
* `result.json`: written atomically (`gssm_jax.files`) at the very end; its presence means "finished".
* `tensorboard/`: optional TensorBoard events (tensorboardX, the `tensorboard` extra).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from gssm_jax import files
from gssm_jax.errors import UserError

METRICS_FILE = "metrics.jsonl"
PER_POSITION_FILE = "per_position.npz"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"


def read_metrics(workdir: str) -> list[dict]:
    """All records of `workdir/metrics.jsonl` (an unterminated last line, left by a kill, is skipped)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.endswith("\n")]


def read_result(workdir: str) -> dict:
    """The `result.json` of a finished run."""
    with open(os.path.join(workdir, RESULT_FILE)) as file:
        return json.load(file)


def check_finite(step: int, values: Mapping[str, float], last_finite_step: int) -> None:
    """Raises FloatingPointError naming the step range if any value is NaN or infinite."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        raise FloatingPointError(
            f"non-finite training metrics {bad} at step {step}; they were finite up to step {last_finite_step}, "
            f"so the divergence happened in steps {last_finite_step + 1}..{step}: lower config.optimizer.learning_rate "
            "or config.optimizer.clip_norm, or use config.model.dtype=float32"
        )


class MetricsWriter:
    """Appends one JSON line per logged step to `workdir/metrics.jsonl` (+ TensorBoard if asked).

    Args:
      workdir: the run directory (created if missing).
      resume_step: steps after this one are dropped from an existing file (0 for a fresh run).
      tensorboard: also write TensorBoard events to `workdir/tensorboard` (needs tensorboardX).
    """

    def __init__(self, workdir: str, resume_step: int, tensorboard: bool = False):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, METRICS_FILE)
        kept = [record for record in read_metrics(workdir) if record["step"] <= resume_step]
        self.last_record = kept[-1] if kept else None
        files.write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))
        self.file = open(self.path, "a")  # noqa: SIM115 -- closed in close()
        self.tensorboard = None
        if tensorboard:
            try:
                import tensorboardX
            except ImportError:
                raise UserError(
                    "config.metrics.tensorboard=True needs tensorboardX: pip install 'gssm_jax[tensorboard]'"
                ) from None
            self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, record: Mapping[str, Any]) -> None:
        """Appends `record` (must hold an int "step" and JSON-able scalars) and flushes it to disk."""
        record = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in record.items()}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.last_record = record
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


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
    """Atomically writes `per_position.npz`.

    Arrays: steps (num_evals,), model_loss (num_evals, length) and optimal_loss (length,), nats.
    """
    files.write_npz(os.path.join(workdir, PER_POSITION_FILE), steps=np.asarray(steps, np.int64),
                    model_loss=np.stack(model_loss).astype(np.float32),
                    optimal_loss=np.asarray(optimal_loss, np.float32))


def progress_line(step: int, num_steps: int, loss: float, excess_loss: float | None, tokens_per_second: float,
                  seconds_left: float) -> str:
    """`step 120/400 | loss 1.2345 nats/token | excess 0.0123 | 85.3k tokens/s | ETA 1m05s`."""
    excess = "n/a" if excess_loss is None else f"{excess_loss:.4f}"
    minutes, seconds = divmod(int(max(seconds_left, 0)), 60)
    return (f"step {step}/{num_steps} | loss {loss:.4f} nats/token | excess {excess} | "
            f"{tokens_per_second / 1e3:.1f}k tokens/s | ETA {minutes}m{seconds:02d}s")
