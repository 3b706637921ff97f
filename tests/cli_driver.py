"""Runs command-line cases in one process: `python -m tests.cli_driver < cases.json > results.json`.

Each case is `[module, [arguments...]]`, e.g. `["gssm_jax.cli.train", ["--config=base:size=tiny"]]`. This
process imports the library once; every case then runs in a forked child, which imports the entry point
(its absl flags are process-global, so each child defines them afresh), sets `sys.argv` and calls the
module's `run()` exactly as the console script does. The parent never starts JAX's backend, so forking
is safe. Output per case: `{"status": exit status, "output": stdout + stderr, "seconds": wall time}`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import traceback

import gssm_jax.cli.common  # noqa: F401 (the imports the cases share, paid once)
import gssm_jax.data.generate  # noqa: F401
import gssm_jax.experiment1.report  # noqa: F401
import gssm_jax.experiment1.sweep  # noqa: F401
import gssm_jax.training.loop  # noqa: F401

TIMEOUT_SECONDS = 120


def _child(module: str, arguments: list[str], output: int) -> None:
    os.dup2(output, 1)
    os.dup2(output, 2)
    status = 0
    try:
        sys.argv = [module, *arguments]
        importlib.import_module(module).run()
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            sys.stderr.write(exit_.code + "\n")
            status = 1
        else:
            status = exit_.code or 0
    except BaseException:  # noqa: BLE001 (what an uncaught exception would print, and Python's status 1)
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_case(module: str, arguments: list[str]) -> dict:
    """Runs one case in a forked child; returns its exit status, its output and its wall time."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(module, arguments, output.fileno())
        deadline = started + TIMEOUT_SECONDS
        while True:
            finished, wait_status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            if time.perf_counter() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                wait_status = 124 << 8
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    return {"status": os.waitstatus_to_exitcode(wait_status), "output": text, "seconds": seconds}


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    json.dump([run_case(module, arguments) for module, arguments in cases], sys.stdout)
