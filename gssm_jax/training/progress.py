"""What the loop reports while it trains: metrics records, NaN checks and one progress bar per run or ensemble.

`Recorder.dispatched` is called right after a call of steps is dispatched, and fetches the metrics of the
call before it: the host waits on a call that is already followed by another, so the device never idles
for logging. The bar (tqdm, on stderr) shows tokens/s over the last `WINDOW_SECONDS` and an ETA from it;
the per-record log lines are behind absl's verbosity (`--verbosity=1`).
"""

from __future__ import annotations

import collections
import math
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from gssm_jax.training.run import Run
from gssm_jax.training.run_directory import RunWriter, check_finite

WINDOW_SECONDS = 30.0  # tokens/s and the ETA are measured over this much recent wall time


def duration(seconds: float) -> str:
    """`1h02m`, `3m05s` or `42s`."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressBar:
    """A tqdm bar over the steps to train (branches included), with a windowed tokens/s and an ETA."""

    def __init__(self, description: str, total_steps: int, tokens_per_step: int):
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total_steps, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5 if interactive else 30.0, leave=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]")
        self.tokens_per_step = tokens_per_step
        self.times = collections.deque([(time.perf_counter(), 0)])

    def tokens_per_second(self) -> float:
        (first_time, first), (last_time, last) = self.times[0], self.times[-1]
        return (last - first) * self.tokens_per_step / max(last_time - first_time, 1e-9)

    def update(self, steps: int, status: str) -> None:
        """`steps` more steps are done; `status` leads the postfix (e.g. the step, loss and excess)."""
        now = time.perf_counter()
        self.times.append((now, self.times[-1][1] + steps))
        while len(self.times) > 2 and now - self.times[1][0] > WINDOW_SECONDS:
            self.times.popleft()
        rate = self.tokens_per_second()
        left = (self.bar.total - self.bar.n - steps) * self.tokens_per_step / max(rate, 1e-9)
        self.bar.set_postfix_str(f"{status} | {rate / 1e3:,.1f}k tokens/s | ETA {duration(left)}", refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


class Recorder:
    """Turns each call's metrics into records of every member's run directory, checks them, moves the bar.

    Args:
      runs, writers: the members and their `RunWriter`s.
      total_steps: steps this process will train (main run and branches), for the bar.
    """

    def __init__(self, runs: Sequence[Run], writers: Sequence[RunWriter], total_steps: int):
        self.runs, self.writers = runs, writers
        self.offsets = [writer.last_record["elapsed_s"] if writer.last_record else 0.0 for writer in writers]
        self.started = self.last_time = time.perf_counter()
        self.pending = None
        name = runs[0].workdir if len(runs) == 1 else f"{len(runs)} runs"
        self.bar = ProgressBar(f"train {name}", total_steps, runs[0].tokens_per_step * len(runs))

    def elapsed(self, member: int) -> float:
        return self.offsets[member] + time.perf_counter() - self.started

    def dispatched(self, start: int, metrics: dict, branch: bool = False) -> None:
        """Records the previous call's metrics (this call, of steps from `start`, is now queued behind it)."""
        previous, self.pending = self.pending, (start, metrics, branch)
        if previous is not None:
            self._record(*previous)

    def flush(self, evaluations: Sequence[dict] | None = None) -> None:
        """Records the last call's metrics now; `evaluations` (one summary per member) join its last step."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._record(*pending, evaluations=evaluations)

    def _record(self, start: int, metrics: dict, branch: bool, evaluations: Sequence[dict] | None = None) -> None:
        values = jax.device_get(metrics)  # {name: (steps, M)}; waits for that call only
        now, steps = time.perf_counter(), next(iter(values.values())).shape[0]
        tokens_per_second = steps * self.runs[0].tokens_per_step / max(now - self.last_time, 1e-9)
        self.last_time = now
        finite = np.all([np.isfinite(column) for column in values.values()], axis=0)  # (steps, M)
        if not finite.all():
            offset, member = np.argwhere(~finite)[0]
            row = {name: float(column[offset, member]) for name, column in values.items()}
            check_finite(start + offset + 1, row, start + offset, self.runs[member].workdir)
        for offset in range(steps):
            step = start + offset + 1
            for member, (run, writer) in enumerate(zip(self.runs, self.writers, strict=True)):
                summary = evaluations[member] if evaluations is not None and offset == steps - 1 else None
                if branch or not (step % run.cadence.log_every == 0 or summary is not None or step == run.num_steps):
                    continue
                row = {name: float(column[offset, member]) for name, column in values.items()}
                writer.write({"step": step, "elapsed_s": self.elapsed(member),
                              "tokens_seen": step * run.tokens_per_step, **row,
                              "train/tokens_per_second": tokens_per_second, **(summary or {})})
                excess = (writer.last_eval or {}).get("eval/excess_loss_nats_per_token", math.nan)
                logging.vlog(1, "%s step %d/%d | loss %.4f nats/token | excess %.4f | %.1fk tokens/s", run.workdir,
                             step, run.num_steps, row["train/loss_nats_per_token"], excess, tokens_per_second / 1e3)
        loss = float(np.mean(values["train/loss_nats_per_token"][-1]))
        excesses = [(writer.last_eval or {}).get("eval/excess_loss_nats_per_token") for writer in self.writers]
        excess = "n/a" if None in excesses else f"{np.mean(excesses):.4f}"
        where = "cool-down" if branch else f"step {start + steps}/{self.runs[0].num_steps}"
        self.bar.update(steps, f"{where} | loss {loss:.4f} | excess {excess}")

    def close(self) -> None:
        self.bar.close()
